//! Netlink helpers over rtnetlink: look up, create and remove links, addresses, routes,
//! neighbour and FDB entries, each failure turned into a CNI error that says what failed.

use std::fmt::Display;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVxlan, LinkAttribute, LinkFlags,
    LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope,
};
use rtnetlink::sys::{AsyncSocket, TokioSocket, protocols::NETLINK_ROUTE};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::error::CniError;
use crate::netns::NetNs;

/// The kernel's "already exists" errno, which several helpers treat as success.
pub const EEXIST: i32 = nix::libc::EEXIST;

/// A netlink connection bound to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

/// The parts of a link the plugins look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, formatted `aa:bb:cc:dd:ee:ff` (empty when the link has none).
    pub mac: String,
    /// MTU.
    pub mtu: u32,
    /// Index of the bridge (or other controller) it is attached to.
    pub master: Option<u32>,
    /// Kind (`bridge`, `veth`, `vxlan`, ...), when the link has one.
    pub kind: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// Promiscuous mode flag.
    pub promisc: bool,
    /// Bridge-port hairpin mode, when it is a bridge port.
    pub hairpin: Option<bool>,
    /// Peer link index (veth) as reported by IFLA_LINK.
    pub peer_index: Option<u32>,
    /// VXLAN network identifier, for VXLAN devices.
    pub vni: Option<u32>,
}

/// Maps an rtnetlink error to a CNI error naming what was being done.
pub fn nl_error(what: impl Display) -> impl FnOnce(rtnetlink::Error) -> CniError {
    move |e| CniError::internal(format!("netlink: {what}")).with_details(e)
}

/// Treats the errno `harmless` as success (an idempotent add or delete), any other error as
/// the failure of `what`.
fn tolerate(
    outcome: Result<(), rtnetlink::Error>,
    harmless: i32,
    what: impl Display,
) -> Result<(), CniError> {
    match outcome {
        Err(e) if errno(&e) != Some(harmless) => Err(nl_error(what)(e)),
        _ => Ok(()),
    }
}

/// The errno in a netlink error reply, if that is what `e` is.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Formats a hardware address as the results and `ip` show it.
pub fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Netlink {
    /// Connects in the calling thread's namespace; must run inside the tokio runtime.
    pub fn connect() -> Result<Self, CniError> {
        let socket = TokioSocket::new(NETLINK_ROUTE)
            .map_err(|e| CniError::internal("cannot open a netlink socket").with_details(e))?;
        Ok(Self::spawn(socket))
    }

    /// Connects inside `ns`: the socket is created there, so every request applies there.
    pub fn connect_in(ns: &NetNs) -> Result<Self, CniError> {
        let runtime = tokio::runtime::Handle::current();
        let socket = ns.run(move || {
            let _guard = runtime.enter();
            TokioSocket::new(NETLINK_ROUTE)
        })?;
        let socket = socket.map_err(|e| {
            CniError::internal(format!(
                "cannot open a netlink socket in {}",
                ns.path().display()
            ))
            .with_details(e)
        })?;
        Ok(Self::spawn(socket))
    }

    fn spawn(socket: TokioSocket) -> Self {
        let (connection, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(connection);
        Self { handle }
    }

    /// The raw rtnetlink handle, for requests these helpers do not cover.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The link named `name`, or none when it does not exist.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, CniError> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await;
        match found {
            Ok(msg) => Ok(msg.map(|m| parse_link(&m))),
            Err(e) if errno(&e) == Some(nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(nl_error(format!("looking up link {name}"))(e)),
        }
    }

    /// The link with index `index`, or none.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, CniError> {
        let found = self
            .handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await;
        match found {
            Ok(msg) => Ok(msg.map(|m| parse_link(&m))),
            Err(e) if errno(&e) == Some(nix::libc::ENODEV) => Ok(None),
            Err(e) => Err(nl_error(format!("looking up link #{index}"))(e)),
        }
    }

    /// Every link in the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, CniError> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl_error("listing links"))?;
        Ok(msgs.iter().map(parse_link).collect())
    }

    /// Creates a link from a built message.
    pub async fn add_link(&self, msg: LinkMessage) -> Result<(), rtnetlink::Error> {
        self.handle.link().add(msg).execute().await
    }

    /// Changes a link (RTM_SETLINK).
    pub async fn set_link(&self, msg: LinkMessage, what: &str) -> Result<(), CniError> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl_error(what))
    }

    /// Brings a link up.
    pub async fn set_up(&self, index: u32, name: &str) -> Result<(), CniError> {
        self.set_link(
            LinkUnspec::new_with_index(index).up().build(),
            &format!("setting {name} up"),
        )
        .await
    }

    /// Deletes a link; succeeds when it is already gone.
    pub async fn del_link(&self, index: u32, name: &str) -> Result<(), CniError> {
        tolerate(
            self.handle.link().del(index).execute().await,
            nix::libc::ENODEV,
            format!("deleting link {name}"),
        )
    }

    /// Addresses on link `index` (all links when none), with their prefix lengths.
    pub async fn addresses(&self, index: Option<u32>) -> Result<Vec<(u32, IpNet)>, CniError> {
        let mut req = self.handle.address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        let msgs: Vec<AddressMessage> = req
            .execute()
            .try_collect()
            .await
            .map_err(nl_error("listing addresses"))?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                let addr = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })?;
                let net = IpNet::new(addr, m.header.prefix_len).ok()?;
                Some((m.header.index, net))
            })
            .collect())
    }

    /// Adds an address; an address already present counts as success. IPv6 addresses skip
    /// duplicate address detection so they are usable at once (the IPAM made them unique).
    pub async fn add_address(&self, index: u32, net: IpNet) -> Result<(), CniError> {
        let mut req = self
            .handle
            .address()
            .add(index, net.addr(), net.prefix_len());
        if net.addr().is_ipv6() {
            req.message_mut().header.flags = AddressHeaderFlags::Nodad;
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        tolerate(
            req.execute().await,
            EEXIST,
            format!("adding address {net} to link #{index}"),
        )
    }

    /// Removes an address; succeeds when it is not there.
    pub async fn del_address(&self, index: u32, net: IpNet) -> Result<(), CniError> {
        let mut message = AddressMessage::default();
        message.header.family = family(net.addr());
        message.header.prefix_len = net.prefix_len();
        message.header.index = index;
        message.attributes.push(AddressAttribute::Local(net.addr()));
        message
            .attributes
            .push(AddressAttribute::Address(net.addr()));
        tolerate(
            self.handle.address().del(message).execute().await,
            nix::libc::EADDRNOTAVAIL,
            format!("removing address {net}"),
        )
    }

    /// Adds a route to `dst` through link `index` (via `gw` when given); an existing route
    /// counts as success.
    pub async fn add_route(
        &self,
        dst: IpNet,
        gw: Option<IpAddr>,
        index: u32,
        onlink: bool,
    ) -> Result<(), CniError> {
        let msg = route_message(dst, gw, index, onlink)?;
        tolerate(
            self.handle.route().add(msg).execute().await,
            EEXIST,
            format!("adding route to {dst}"),
        )
    }

    /// Deletes a route; succeeds when it is not there.
    pub async fn del_route(
        &self,
        dst: IpNet,
        gw: Option<IpAddr>,
        index: u32,
        onlink: bool,
    ) -> Result<(), CniError> {
        let msg = route_message(dst, gw, index, onlink)?;
        tolerate(
            self.handle.route().del(msg).execute().await,
            nix::libc::ESRCH,
            format!("removing route to {dst}"),
        )
    }

    /// Routes of the main table in one address family, as (destination, gateway, link).
    pub async fn routes(
        &self,
        v6: bool,
    ) -> Result<Vec<(IpNet, Option<IpAddr>, Option<u32>)>, CniError> {
        let filter = if v6 {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        };
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(filter)
            .execute()
            .try_collect()
            .await
            .map_err(nl_error("listing routes"))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.table == RouteHeader::RT_TABLE_MAIN)
            .filter_map(|m| {
                let mut dst = None;
                let mut gw = None;
                let mut oif = None;
                for attr in &m.attributes {
                    match attr {
                        RouteAttribute::Destination(a) => dst = route_ip(a),
                        RouteAttribute::Gateway(a) => gw = route_ip(a),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        _ => {}
                    }
                }
                let dst = dst.unwrap_or(if v6 {
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                });
                let net = IpNet::new(dst, m.header.destination_prefix_length).ok()?;
                Some((net, gw, oif))
            })
            .collect())
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn route_message(
    dst: IpNet,
    gw: Option<IpAddr>,
    index: u32,
    onlink: bool,
) -> Result<RouteMessage, CniError> {
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.network(), dst.prefix_len())
        .map_err(|e| CniError::internal(format!("bad route destination {dst}")).with_details(e))?
        .output_interface(index);
    if let Some(gw) = gw {
        builder = builder
            .gateway(gw)
            .map_err(|e| CniError::internal(format!("bad route gateway {gw}")).with_details(e))?;
    } else {
        builder = builder.scope(RouteScope::Link);
    }
    if onlink {
        builder = builder.onlink();
    }
    Ok(builder.build())
}

/// Extracts the fields plugins use from a link message.
pub fn parse_link(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: String::new(),
        mtu: 0,
        master: None,
        kind: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        promisc: msg.header.flags.contains(LinkFlags::Promisc),
        hairpin: None,
        peer_index: None,
        vni: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(a) => link.mac = format_mac(a),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Controller(c) => link.master = Some(*c),
            LinkAttribute::Link(l) => link.peer_index = Some(*l),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind_name(kind)),
                        LinkInfo::Data(InfoData::Vxlan(vxlan)) => {
                            link.vni = vxlan.iter().find_map(|v| match v {
                                InfoVxlan::Id(id) => Some(*id),
                                _ => None,
                            });
                        }
                        LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                            link.hairpin = port.iter().find_map(|p| match p {
                                InfoBridgePort::HairpinMode(h) => Some(*h),
                                _ => None,
                            });
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Vxlan => "vxlan".into(),
        InfoKind::Dummy => "dummy".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Info data of a link message, if any (e.g. to read a vxlan device's VNI).
pub fn info_data(msg: &LinkMessage) -> Option<&InfoData> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(d) => Some(d),
            _ => None,
        }),
        _ => None,
    })
}

//! Attaching a container to a host bridge through a veth pair: shared by `bridge` and
//! `vxlan` (which puts its overlay device on the same kind of bridge).

use std::net::IpAddr;
use std::os::fd::AsRawFd;

use ipnet::IpNet;
use rtnetlink::packet_route::link::{
    BridgeVlanInfoFlags, InfoData, InfoKind, InfoVeth, LinkMessage,
};
use rtnetlink::{
    LinkBridge, LinkBridgePort, LinkBridgeVlan, LinkMessageBuilder, LinkUnspec, LinkVeth,
};

use crate::delegate;
use crate::error::{CniError, ErrorCode};
use crate::netlink::{EEXIST, Link, Netlink, errno, nl_error};
use crate::netns::{self, NetNs};
use crate::result::{CniResult, Interface, IpConfig, Route};
use crate::skel::{Command, Context};

/// How the container is attached, from the plugin's config.
#[derive(Debug, Clone, Default)]
pub struct AttachSpec {
    /// Host bridge name.
    pub bridge: String,
    /// MTU for the veth pair (and a bridge we create); kernel default when none.
    pub mtu: Option<u32>,
    /// Let traffic hairpin back out of the port it came in on.
    pub hairpin: bool,
    /// Put the bridge in promiscuous mode.
    pub promisc: bool,
    /// Access VLAN of the container's port (enables VLAN filtering on the bridge).
    pub vlan: Option<u16>,
    /// Put each subnet's gateway address on the bridge (and enable forwarding).
    pub is_gateway: bool,
    /// Add a default route via the gateway in the container.
    pub is_default_gateway: bool,
}

/// The container's side of an attachment, as found in its namespace.
struct Attached {
    host: Link,
    container: Link,
}

fn open_netns(ctx: &Context) -> Result<NetNs, CniError> {
    let path = ctx
        .netns
        .as_deref()
        .ok_or_else(|| CniError::env("CNI_NETNS is not set"))?;
    NetNs::open(path)
}

/// Creates the bridge if missing (or checks the existing link is one) and brings it up.
pub async fn ensure_bridge(nl: &Netlink, spec: &AttachSpec) -> Result<Link, CniError> {
    let name = &spec.bridge;
    let existing = nl.link(name).await?;
    let link = match existing {
        Some(link) => link,
        None => {
            // An explicit MAC keeps the bridge's address stable; otherwise the kernel gives it
            // the lowest port MAC, which changes as pods come and go and breaks CHECK.
            let mut builder = LinkBridge::new(name).address(random_mac()?.to_vec());
            if let Some(mtu) = spec.mtu {
                builder = builder.mtu(mtu);
            }
            if spec.vlan.is_some() {
                builder = builder.vlan_filtering(true);
            }
            match nl.add_link(builder.build()).await {
                Ok(()) => {}
                // Another ADD created it between our lookup and create.
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) if spec.vlan.is_some() && errno(&e) == Some(EOPNOTSUPP) => {
                    return Err(vlan_unsupported(name));
                }
                Err(e) => return Err(nl_error(format!("creating bridge {name}"))(e)),
            }
            nl.link(name).await?.ok_or_else(|| {
                CniError::internal(format!("bridge {name} vanished right after creation"))
            })?
        }
    };
    if link.kind.as_deref() != Some("bridge") {
        return Err(CniError::config(format!(
            "network config field `bridge`: link {name} exists and is not a bridge"
        )));
    }
    if spec.vlan.is_some() {
        let msg = LinkMessageBuilder::<LinkBridge>::new(name)
            .index(link.index)
            .vlan_filtering(true)
            .build();
        nl.handle()
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(|e| {
                if errno(&e) == Some(EOPNOTSUPP) {
                    vlan_unsupported(name)
                } else {
                    nl_error(format!("enabling VLAN filtering on {name}"))(e)
                }
            })?;
    }
    if spec.promisc && !link.promisc {
        nl.set_link(
            LinkUnspec::new_with_index(link.index)
                .promiscuous(true)
                .build(),
            &format!("setting {name} promiscuous"),
        )
        .await?;
    }
    if !link.up {
        nl.set_up(link.index, name).await?;
    }
    Ok(link)
}

const EOPNOTSUPP: i32 = nix::libc::EOPNOTSUPP;

fn vlan_unsupported(bridge: &str) -> CniError {
    CniError::new(
        ErrorCode::UnsupportedField,
        format!(
            "network config field `vlan` needs VLAN filtering on bridge {bridge}, which this \
             kernel does not support (CONFIG_BRIDGE_VLAN_FILTERING)"
        ),
    )
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CniError> {
    let mut bytes = [0u8; N];
    let mut urandom = std::fs::File::open("/dev/urandom")
        .map_err(|e| CniError::io("cannot open /dev/urandom", e))?;
    std::io::Read::read_exact(&mut urandom, &mut bytes)
        .map_err(|e| CniError::io("cannot read /dev/urandom", e))?;
    Ok(bytes)
}

fn random_veth_name() -> Result<String, CniError> {
    Ok(format!("veth{:08x}", u32::from_be_bytes(random_bytes()?)))
}

/// A random locally administered unicast MAC.
fn random_mac() -> Result<[u8; 6], CniError> {
    let mut mac: [u8; 6] = random_bytes()?;
    mac[0] = (mac[0] & 0xfe) | 0x02;
    Ok(mac)
}

fn veth_message(host: &str, ifname: &str, ns: &NetNs, mtu: Option<u32>) -> LinkMessage {
    let mut peer = LinkUnspec::new_with_name(ifname).setns_by_fd(ns.file().as_raw_fd());
    let mut builder = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth).name(host);
    if let Some(mtu) = mtu {
        peer = peer.mtu(mtu);
        builder = builder.mtu(mtu);
    }
    builder
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .build()
}

/// Creates the veth pair: a random host name in the host namespace, `ifname` in the
/// container's (created there directly, so no rename or move is needed).
async fn create_veth(
    host_nl: &Netlink,
    cont_nl: &Netlink,
    ns: &NetNs,
    ifname: &str,
    mtu: Option<u32>,
) -> Result<Attached, CniError> {
    if cont_nl.link(ifname).await?.is_some() {
        return Err(CniError::config(format!(
            "interface {ifname} (CNI_IFNAME) already exists in {}",
            ns.path().display()
        )));
    }
    for _ in 0..5 {
        let host_name = random_veth_name()?;
        match host_nl
            .add_link(veth_message(&host_name, ifname, ns, mtu))
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {
                // Either our random host name is taken (retry) or ifname appeared meanwhile.
                if cont_nl.link(ifname).await?.is_some() {
                    return Err(CniError::config(format!(
                        "interface {ifname} (CNI_IFNAME) already exists in {}",
                        ns.path().display()
                    )));
                }
                continue;
            }
            Err(e) => return Err(nl_error(format!("creating veth pair {host_name}/{ifname}"))(e)),
        }
        let host = host_nl
            .link(&host_name)
            .await?
            .ok_or_else(|| CniError::internal(format!("veth {host_name} vanished")))?;
        let container = cont_nl
            .link(ifname)
            .await?
            .ok_or_else(|| CniError::internal(format!("veth peer {ifname} vanished")))?;
        return Ok(Attached { host, container });
    }
    Err(CniError::new(
        ErrorCode::TryAgainLater,
        "could not find a free host veth name after 5 tries",
    ))
}

async fn plug_into_bridge(
    nl: &Netlink,
    host: &Link,
    bridge: &Link,
    spec: &AttachSpec,
) -> Result<(), CniError> {
    nl.set_link(
        LinkUnspec::new_with_index(host.index)
            .controller(bridge.index)
            .build(),
        &format!("attaching {} to {}", host.name, bridge.name),
    )
    .await?;
    if spec.hairpin {
        nl.handle()
            .link()
            .set_port(LinkBridgePort::new(host.index).hairpin(true).build())
            .execute()
            .await
            .map_err(nl_error(format!("enabling hairpin mode on {}", host.name)))?;
    }
    if let Some(vid) = spec.vlan {
        let msg = LinkBridgeVlan::new(host.index)
            .vlan(
                vid,
                BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged,
            )
            .build();
        nl.set_link(msg, &format!("adding VLAN {vid} to {}", host.name))
            .await?;
    }
    nl.set_up(host.index, &host.name).await
}

/// The gateway for `ip`'s family among the IPAM results, for default routes.
fn gateway_for(ips: &[IpConfig], v4: bool) -> Option<IpAddr> {
    ips.iter()
        .filter(|c| c.address.addr().is_ipv4() == v4)
        .find_map(|c| c.gateway)
}

fn default_route(v4: bool) -> IpNet {
    if v4 {
        IpNet::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0)
    } else {
        IpNet::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)
    }
    .unwrap_or_default()
}

/// Routes the container gets: the IPAM's, plus default routes when it is the default gateway.
fn container_routes(ipam: &CniResult, spec: &AttachSpec) -> Vec<Route> {
    let mut routes = ipam.routes.clone();
    if spec.is_default_gateway {
        for v4 in [true, false] {
            let has_default = routes
                .iter()
                .any(|r| r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4() == v4);
            if let (false, Some(gw)) = (has_default, gateway_for(&ipam.ips, v4)) {
                routes.push(Route {
                    dst: default_route(v4),
                    gw: Some(gw),
                });
            }
        }
    }
    routes
}

async fn configure_container(
    nl: &Netlink,
    container: &Link,
    ipam: &CniResult,
    routes: &[Route],
) -> Result<(), CniError> {
    for ip in &ipam.ips {
        nl.add_address(container.index, ip.address).await?;
    }
    nl.set_up(container.index, &container.name).await?;
    for route in routes {
        let v4 = route.dst.addr().is_ipv4();
        let gw = route.gw.or_else(|| gateway_for(&ipam.ips, v4));
        nl.add_route(route.dst, gw, container.index, false).await?;
    }
    Ok(())
}

async fn configure_gateway(nl: &Netlink, bridge: &Link, ipam: &CniResult) -> Result<(), CniError> {
    let mut v4 = false;
    let mut v6 = false;
    for ip in &ipam.ips {
        let Some(gw) = ip.gateway else { continue };
        let net = IpNet::new(gw, ip.address.prefix_len())
            .map_err(|e| CniError::internal(format!("bad gateway {gw}")).with_details(e))?;
        nl.add_address(bridge.index, net).await?;
        v4 |= gw.is_ipv4();
        v6 |= gw.is_ipv6();
    }
    // The bridge routes between containers and the host only when forwarding is on.
    if v4 {
        netns::write_sysctl("net/ipv4/ip_forward", "1")?;
    }
    if v6 {
        netns::write_sysctl("net/ipv6/conf/all/forwarding", "1")?;
    }
    Ok(())
}

/// ADD: veth pair into the bridge, IPAM, addresses and routes in the container.
pub async fn add(ctx: &Context, spec: &AttachSpec) -> Result<CniResult, CniError> {
    let ns = open_netns(ctx)?;
    let host_nl = Netlink::connect()?;
    let cont_nl = Netlink::connect_in(&ns)?;
    let bridge = ensure_bridge(&host_nl, spec).await?;
    let attached = create_veth(&host_nl, &cont_nl, &ns, &ctx.ifname, spec.mtu).await?;
    let undo_veth = |cont_nl: Netlink, index: u32, name: String| async move {
        let _ = cont_nl.del_link(index, &name).await;
    };
    if let Err(e) = plug_into_bridge(&host_nl, &attached.host, &bridge, spec).await {
        undo_veth(cont_nl, attached.container.index, ctx.ifname.clone()).await;
        return Err(e);
    }
    let ipam = match delegate::ipam_add(ctx) {
        Ok(r) => r,
        Err(e) => {
            undo_veth(cont_nl, attached.container.index, ctx.ifname.clone()).await;
            return Err(e);
        }
    };
    let routes = container_routes(&ipam, spec);
    let configured = async {
        configure_container(&cont_nl, &attached.container, &ipam, &routes).await?;
        if spec.is_gateway {
            configure_gateway(&host_nl, &bridge, &ipam).await?;
        }
        Ok::<(), CniError>(())
    }
    .await;
    if let Err(e) = configured {
        let _ = delegate::ipam(Command::Del, ctx);
        undo_veth(cont_nl, attached.container.index, ctx.ifname.clone()).await;
        return Err(e);
    }
    // Read the links again: the bridge's MAC can change when its first port is added.
    let bridge = host_nl.link(&spec.bridge).await?.unwrap_or(bridge);
    let ips = ipam
        .ips
        .iter()
        .map(|ip| IpConfig {
            interface: Some(2),
            ..ip.clone()
        })
        .collect();
    Ok(CniResult {
        cni_version: ctx.conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: bridge.name.clone(),
                mac: bridge.mac.clone(),
                mtu: Some(bridge.mtu),
                sandbox: String::new(),
            },
            Interface {
                name: attached.host.name.clone(),
                mac: attached.host.mac.clone(),
                mtu: Some(attached.host.mtu),
                sandbox: String::new(),
            },
            Interface {
                name: ctx.ifname.clone(),
                mac: attached.container.mac.clone(),
                mtu: Some(attached.container.mtu),
                sandbox: ns.path().display().to_string(),
            },
        ],
        ips,
        routes,
        dns: ctx.conf.dns.clone().unwrap_or(ipam.dns),
    })
}

/// DEL: release the addresses, then remove the container's veth (its host peer goes with
/// it). Everything already gone counts as success.
pub async fn del(ctx: &Context) -> Result<(), CniError> {
    if ctx.conf.ipam.is_some() {
        delegate::ipam(Command::Del, ctx)?;
    }
    let Some(path) = ctx.netns.as_deref() else {
        return Ok(());
    };
    let Ok(ns) = NetNs::open(path) else {
        // No namespace, no interface: the kernel removed the veth pair with it.
        return Ok(());
    };
    let nl = Netlink::connect_in(&ns)?;
    if let Some(link) = nl.link(&ctx.ifname).await? {
        nl.del_link(link.index, &link.name).await?;
    }
    Ok(())
}

/// CHECK: compares the namespace and the host with `prevResult`; lists every difference.
pub async fn check(ctx: &Context, spec: &AttachSpec) -> Result<(), CniError> {
    let prev =
        ctx.conf.prev_result.as_ref().ok_or_else(|| {
            CniError::config("CHECK: network config field `prevResult` is missing")
        })?;
    let prev = CniResult::from_value(prev)?;
    delegate::ipam(Command::Check, ctx)?;
    let ns = open_netns(ctx)?;
    let host_nl = Netlink::connect()?;
    let cont_nl = Netlink::connect_in(&ns)?;
    let mut problems = Vec::new();
    let bridge = host_nl.link(&spec.bridge).await?;
    match &bridge {
        None => problems.push(format!("bridge {} is missing", spec.bridge)),
        Some(b) if !b.up => problems.push(format!("bridge {} is down", spec.bridge)),
        Some(_) => {}
    }
    let Some(container) = cont_nl.link(&ctx.ifname).await? else {
        problems.push(format!(
            "interface {} is missing in the container",
            ctx.ifname
        ));
        return report(problems);
    };
    let expected = prev
        .interfaces
        .iter()
        .position(|i| i.name == ctx.ifname && !i.sandbox.is_empty());
    match expected.map(|i| &prev.interfaces[i]) {
        None => problems.push(format!(
            "prevResult lists no container interface {}",
            ctx.ifname
        )),
        Some(i) if !i.mac.is_empty() && !i.mac.eq_ignore_ascii_case(&container.mac) => problems
            .push(format!(
                "{} has MAC {}, prevResult says {}",
                ctx.ifname, container.mac, i.mac
            )),
        Some(_) => {}
    }
    if !container.up {
        problems.push(format!("{} is down", ctx.ifname));
    }
    if let Some(mtu) = spec.mtu.filter(|m| *m != container.mtu) {
        problems.push(format!(
            "{} has MTU {}, config says {mtu}",
            ctx.ifname, container.mtu
        ));
    }
    let have: Vec<IpNet> = cont_nl
        .addresses(Some(container.index))
        .await?
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    for ip in &prev.ips {
        let ours = ip.interface.is_none() || ip.interface == expected;
        if ours && !have.contains(&ip.address) {
            problems.push(format!(
                "address {} is missing on {}",
                ip.address, ctx.ifname
            ));
        }
    }
    for route in &prev.routes {
        let v6 = route.dst.addr().is_ipv6();
        let routes = cont_nl.routes(v6).await?;
        if !routes.iter().any(|(dst, _, _)| *dst == route.dst.trunc()) {
            problems.push(format!(
                "route to {} is missing in the container",
                route.dst
            ));
        }
    }
    match (container.peer_index, &bridge) {
        (Some(peer), Some(b)) => match host_nl.link_by_index(peer).await? {
            None => problems.push(format!("host end of {} is missing", ctx.ifname)),
            Some(host) if host.master != Some(b.index) => problems.push(format!(
                "host end {} is not attached to bridge {}",
                host.name, b.name
            )),
            Some(host) if spec.hairpin && host.hairpin == Some(false) => {
                problems.push(format!("hairpin mode is off on {}", host.name))
            }
            Some(_) => {}
        },
        (None, _) => problems.push(format!("{} is not a veth with a host peer", ctx.ifname)),
        (_, None) => {}
    }
    report(problems)
}

fn report(problems: Vec<String>) -> Result<(), CniError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::internal(format!(
            "CHECK failed: {}",
            problems.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam() -> CniResult {
        CniResult {
            ips: vec![
                IpConfig {
                    interface: None,
                    address: "10.1.0.5/24".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                },
                IpConfig {
                    interface: None,
                    address: "fd01::5/64".parse().unwrap(),
                    gateway: Some("fd01::1".parse().unwrap()),
                },
            ],
            routes: vec![Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("10.1.0.254".parse().unwrap()),
            }],
            ..CniResult::default()
        }
    }

    #[test]
    fn default_gateway_adds_only_missing_defaults() {
        let spec = AttachSpec {
            is_default_gateway: true,
            ..AttachSpec::default()
        };
        let routes = container_routes(&ipam(), &spec);
        // The IPAM's IPv4 default wins; IPv6 gets one via its gateway.
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].gw, Some("10.1.0.254".parse().unwrap()));
        assert_eq!(routes[1].dst.to_string(), "::/0");
        assert_eq!(routes[1].gw, Some("fd01::1".parse().unwrap()));
    }

    #[test]
    fn without_default_gateway_routes_are_the_ipams() {
        let routes = container_routes(&ipam(), &AttachSpec::default());
        assert_eq!(routes, ipam().routes);
        assert_eq!(
            gateway_for(&ipam().ips, false),
            Some("fd01::1".parse().unwrap())
        );
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..16 {
            let mac = random_mac().unwrap();
            assert_eq!(mac[0] & 0x01, 0, "multicast bit set");
            assert_eq!(mac[0] & 0x02, 0x02, "not locally administered");
        }
        let name = random_veth_name().unwrap();
        assert!(name.starts_with("veth") && name.len() == 12, "{name}");
    }
}

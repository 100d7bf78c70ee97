//! Remote hosts of the vxlan overlay. Each peer is three kernel entries on the local VXLAN
//! device: a route to the peer's pod subnet via the subnet's network address (on-link), a
//! permanent neighbour entry mapping that address to the peer's VTEP MAC, and an FDB entry
//! sending that MAC to the peer's underlay address. The agent calls this as Nodes come and go;
//! `capstan network peer add|del` exposes it for hand-built setups.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};

use crate::error::CniError;
use crate::netlink::{EEXIST, Netlink, errno, nl_error};

/// One remote host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The peer's underlay (node) address: VXLAN packets go there.
    pub underlay: Ipv4Addr,
    /// The peer's pod subnet.
    pub subnet: Ipv4Net,
    /// The peer's VXLAN device MAC; derived from `underlay` when not given (see [`vtep_mac`]).
    pub mac: Option<[u8; 6]>,
}

/// The VTEP MAC Capstan gives a host's VXLAN device: locally administered `0e:ca` followed by
/// the underlay IPv4 address, so peers can be added knowing only each other's address.
pub fn vtep_mac(underlay: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = underlay.octets();
    [0x0e, 0xca, a, b, c, d]
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Result<[u8; 6], CniError> {
    let bad = || CniError::config(format!("{text:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

impl Peer {
    fn mac(&self) -> [u8; 6] {
        self.mac.unwrap_or_else(|| vtep_mac(self.underlay))
    }

    /// The next hop for the peer's subnet: its network address, which the neighbour entry
    /// resolves to the peer's VTEP MAC.
    fn gateway(&self) -> Ipv4Addr {
        self.subnet.network()
    }
}

async fn device_index(nl: &Netlink, device: &str) -> Result<u32, CniError> {
    let link = nl.link(device).await?.ok_or_else(|| {
        CniError::config(format!(
            "VXLAN device {device} does not exist (the vxlan plugin creates it on the first ADD)"
        ))
    })?;
    if link.kind.as_deref() != Some("vxlan") {
        return Err(CniError::config(format!("{device} is not a VXLAN device")));
    }
    Ok(link.index)
}

fn neighbour_message(index: u32, peer: &Peer) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = rtnetlink::packet_route::AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            peer.gateway(),
        )));
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(peer.mac().to_vec()));
    msg
}

fn fdb_message(index: u32, peer: &Peer) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = rtnetlink::packet_route::AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(peer.mac().to_vec()));
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            peer.underlay,
        )));
    msg
}

/// Programs `peer` on VXLAN device `device`; repeating it (or changing the peer's underlay
/// address or MAC) replaces the entries.
pub async fn add(nl: &Netlink, device: &str, peer: &Peer) -> Result<(), CniError> {
    let index = device_index(nl, device).await?;
    let handle = nl.handle().neighbours();
    let mut fdb = handle.add_bridge(index, &peer.mac()).replace();
    *fdb.message_mut() = fdb_message(index, peer);
    fdb.execute()
        .await
        .map_err(nl_error(format!("adding FDB entry for {}", peer.underlay)))?;
    let mut neigh = handle.add(index, IpAddr::V4(peer.gateway())).replace();
    *neigh.message_mut() = neighbour_message(index, peer);
    neigh.execute().await.map_err(nl_error(format!(
        "adding neighbour entry {}",
        peer.gateway()
    )))?;
    let subnet = IpNet::V4(peer.subnet.trunc());
    let route = nl
        .handle()
        .route()
        .add(route_message(index, peer)?)
        .replace();
    match route.execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        Err(e) => Err(nl_error(format!("adding route to {subnet}"))(e)),
    }
}

fn route_message(
    index: u32,
    peer: &Peer,
) -> Result<rtnetlink::packet_route::route::RouteMessage, CniError> {
    Ok(rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(peer.subnet.network(), peer.subnet.prefix_len())
        .gateway(peer.gateway())
        .output_interface(index)
        .onlink()
        .build())
}

/// Removes `peer`'s entries from `device`; entries (or the device) already gone are fine.
pub async fn del(nl: &Netlink, device: &str, peer: &Peer) -> Result<(), CniError> {
    let Some(link) = nl.link(device).await? else {
        return Ok(());
    };
    let index = link.index;
    let gone = |e: &rtnetlink::Error| {
        matches!(
            errno(e),
            Some(nix::libc::ENOENT) | Some(nix::libc::ESRCH) | Some(nix::libc::ENODEV)
        )
    };
    let handle = nl.handle();
    if let Err(e) = handle
        .route()
        .del(route_message(index, peer)?)
        .execute()
        .await
    {
        if !gone(&e) {
            return Err(nl_error(format!("removing route to {}", peer.subnet))(e));
        }
    }
    if let Err(e) = handle
        .neighbours()
        .del(neighbour_message(index, peer))
        .execute()
        .await
    {
        if !gone(&e) {
            return Err(nl_error(format!("removing neighbour {}", peer.gateway()))(
                e,
            ));
        }
    }
    if let Err(e) = handle
        .neighbours()
        .del(fdb_message(index, peer))
        .execute()
        .await
    {
        if !gone(&e) {
            return Err(nl_error(format!(
                "removing FDB entry for {}",
                peer.underlay
            ))(e));
        }
    }
    Ok(())
}

/// Adds or removes a peer in the calling thread's network namespace, for callers without an
/// async runtime (the `capstan network peer` command).
pub fn apply_blocking(device: &str, peer: &Peer, remove: bool) -> Result<(), CniError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::internal("cannot start the async runtime").with_details(e))?;
    runtime.block_on(async {
        let nl = Netlink::connect()?;
        if remove {
            del(&nl, device, peer).await
        } else {
            add(&nl, device, peer).await
        }
    })
}

/// `capstan network peer add|del`: parses the command's arguments and applies them in the
/// current network namespace.
pub fn run_command(
    device: &str,
    remote: Ipv4Addr,
    subnet: &str,
    mac: Option<&str>,
    remove: bool,
) -> Result<(), CniError> {
    let subnet: Ipv4Net = subnet
        .parse()
        .map_err(|_| CniError::config(format!("--subnet {subnet:?} is not an IPv4 CIDR")))?;
    let mac = mac.map(parse_mac).transpose()?;
    let peer = Peer {
        underlay: remote,
        subnet,
        mac,
    };
    apply_blocking(device, &peer, remove)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtep_mac_embeds_the_underlay_address() {
        assert_eq!(
            vtep_mac("198.18.0.2".parse().unwrap()),
            [0x0e, 0xca, 198, 18, 0, 2]
        );
    }

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("0e:ca:c6:12:00:02").unwrap(),
            [0x0e, 0xca, 0xc6, 0x12, 0, 2]
        );
        assert_eq!(parse_mac("0e:ca").unwrap_err().code, 4);
        assert!(parse_mac("zz:ca:c6:12:00:02").is_err());
    }
}

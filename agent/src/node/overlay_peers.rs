//! The pod overlay's remote hosts, kept from the Node objects as flannel keeps them: every
//! other Node with an IPv4 InternalIP and an IPv4 podCIDR is a peer (route, neighbour and FDB
//! entry, [`capstan_cni::peers`]) on each of this host's Capstan VXLAN devices (those the
//! bundled `vxlan` plugin made, known by their `0e:ca` VTEP MAC), so pods on different nodes
//! reach each other with no `capstan network peer add`. A Node that goes away, or loses its
//! address or podCIDR, stops being a peer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use capstan_cni::netlink::Netlink;
use capstan_cni::peers::{self, Peer};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

/// How often the devices are looked at again when nothing changed: a VXLAN device appears
/// with the node's first pod, and an entry removed by hand comes back.
const RESYNC: Duration = Duration::from_secs(10);

/// The peer a Node stands for, unless it is this node or lacks an IPv4 address or subnet.
pub fn peer_of(node: &Node, own_name: &str) -> Option<(String, Peer)> {
    let name = node.metadata.name.clone()?;
    if name == own_name {
        return None;
    }
    let underlay: Ipv4Addr = node
        .status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())?;
    let spec = node.spec.as_ref()?;
    let subnet = spec
        .pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.iter())
        .find_map(|c| c.parse::<ipnet::Ipv4Net>().ok())?;
    Some((
        name,
        Peer {
            underlay,
            subnet,
            mac: None,
        },
    ))
}

/// The VXLAN devices Capstan's plugin made on this host.
async fn capstan_devices(nl: &Netlink) -> Vec<String> {
    match nl.links().await {
        Ok(links) => links
            .into_iter()
            .filter(|l| l.kind.as_deref() == Some("vxlan") && l.mac.starts_with("0e:ca:"))
            .map(|l| l.name)
            .collect(),
        Err(error) => {
            tracing::warn!(%error, "listing links for the overlay failed");
            Vec::new()
        }
    }
}

/// What is programmed: per device, per Node, the peer.
type Programmed = BTreeMap<String, BTreeMap<String, Peer>>;

/// Brings every Capstan VXLAN device to `wanted`; returns what is now in place.
async fn reconcile(
    nl: &Netlink,
    wanted: &BTreeMap<String, Peer>,
    mut done: Programmed,
) -> Programmed {
    let devices: BTreeSet<String> = capstan_devices(nl).await.into_iter().collect();
    done.retain(|device, _| devices.contains(device));
    for device in devices {
        let programmed = done.entry(device.clone()).or_default();
        let stale: Vec<(String, Peer)> = programmed
            .iter()
            .filter(|(node, peer)| wanted.get(*node) != Some(peer))
            .map(|(node, peer)| (node.clone(), *peer))
            .collect();
        for (node, peer) in stale {
            match peers::del(nl, &device, &peer).await {
                Ok(()) => {
                    tracing::info!(%device, %node, subnet = %peer.subnet, "overlay peer removed");
                    programmed.remove(&node);
                }
                Err(error) => {
                    tracing::warn!(%device, %node, %error, "removing an overlay peer failed")
                }
            }
        }
        for (node, peer) in wanted {
            // Re-adding replaces the entries: one removed by hand comes back at the resync.
            match peers::add(nl, &device, peer).await {
                Ok(()) => {
                    if programmed.insert(node.clone(), *peer).is_none() {
                        tracing::info!(%device, %node, underlay = %peer.underlay, subnet = %peer.subnet, "overlay peer added");
                    }
                }
                Err(error) => {
                    tracing::warn!(%device, %node, %error, "adding an overlay peer failed")
                }
            }
        }
    }
    done
}

/// Follows the Nodes and keeps the peers on this host's devices until the task is dropped.
pub async fn run(client: kube::Client, own_name: String) {
    let nl = match Netlink::connect() {
        Ok(nl) => nl,
        Err(error) => {
            tracing::warn!(%error, "no netlink socket: overlay peers are not kept");
            return;
        }
    };
    let nodes: Api<Node> = Api::all(client);
    let mut stream = watcher::watcher(nodes, watcher::Config::default())
        .default_backoff()
        .boxed();
    // Every Node seen, by name, and the listing being rebuilt after a (re)connect.
    let mut known: BTreeMap<String, Peer> = BTreeMap::new();
    let mut relisting: Option<BTreeMap<String, Peer>> = None;
    let mut programmed = Programmed::new();
    let mut tick = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            event = stream.next() => {
                let Some(event) = event else { return };
                let remember = |map: &mut BTreeMap<String, Peer>, node: &Node| {
                    let name = node.metadata.name.clone().unwrap_or_default();
                    match peer_of(node, &own_name) {
                        Some((_, peer)) => { map.insert(name, peer); }
                        None => { map.remove(&name); }
                    }
                };
                match event {
                    Ok(Event::Apply(node)) => remember(&mut known, &node),
                    Ok(Event::Delete(node)) => {
                        known.remove(node.metadata.name.as_deref().unwrap_or_default());
                    }
                    Ok(Event::Init) => {
                        relisting = Some(BTreeMap::new());
                        continue;
                    }
                    Ok(Event::InitApply(node)) => {
                        if let Some(map) = relisting.as_mut() {
                            remember(map, &node);
                        }
                        continue;
                    }
                    Ok(Event::InitDone) => {
                        if let Some(map) = relisting.take() {
                            known = map;
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, "watching Nodes for overlay peers failed; retrying");
                        continue;
                    }
                }
            }
            _ = tick.tick() => {}
        }
        programmed = reconcile(&nl, &known, programmed).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: Option<&str>, cidr: Option<&str>) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": ip.map(|ip| vec![
                serde_json::json!({"type": "Hostname", "address": name}),
                serde_json::json!({"type": "InternalIP", "address": ip}),
            ])},
        }))
        .unwrap()
    }

    #[test]
    fn other_nodes_with_address_and_subnet_are_peers() {
        let (name, peer) =
            peer_of(&node("b", Some("192.168.5.2"), Some("10.244.1.0/24")), "a").unwrap();
        assert_eq!(name, "b");
        assert_eq!(peer.underlay, Ipv4Addr::new(192, 168, 5, 2));
        assert_eq!(peer.subnet.to_string(), "10.244.1.0/24");
        assert!(peer_of(&node("a", Some("192.168.5.1"), Some("10.244.0.0/24")), "a").is_none());
        assert!(peer_of(&node("c", None, Some("10.244.2.0/24")), "a").is_none());
        assert!(peer_of(&node("d", Some("192.168.5.4"), None), "a").is_none());
        assert!(peer_of(&node("e", Some("fd00::5"), Some("10.244.3.0/24")), "a").is_none());
    }
}

//! The EndpointSlices an Endpoints object is mirrored into, as upstream's
//! endpointslicemirroring reconciler computes them: subsets repacked, one group per set of
//! ports and address family, at most `max` addresses per subset (ready ones first), each
//! address an endpoint whose `ready` condition says which list it was in.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort as CorePort, Endpoints};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

/// Annotations of the Endpoints not carried to its slices.
const DROPPED_ANNOTATIONS: &[&str] = &[
    "endpoints.kubernetes.io/last-change-trigger-time",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// One slice's worth: its family, ports and endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// `IPv4` or `IPv6`.
    pub address_type: String,
    /// The subset's ports.
    pub ports: Vec<EndpointPort>,
    /// The endpoints, in the Endpoints' order.
    pub endpoints: Vec<Endpoint>,
}

/// What was left out, for the controller's events.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Addresses that are not IPs.
    pub invalid: usize,
    /// Addresses past the per-subset limit.
    pub over_limit: usize,
}

/// The groups of `endpoints`, keyed by family and ports (so that existing slices are matched
/// with the group they carry), with what was skipped.
pub fn groups(endpoints: &Endpoints, max: usize) -> (BTreeMap<String, Group>, Skipped) {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut skipped = Skipped::default();
    for (ports, addresses) in repack(endpoints) {
        let ports: Vec<EndpointPort> = ports.iter().map(slice_port).collect();
        let mut added = 0;
        for (address, ready) in addresses {
            if added >= max {
                skipped.over_limit += 1;
                continue;
            }
            let Some((endpoint, family)) = endpoint(&address, ready) else {
                skipped.invalid += 1;
                continue;
            };
            added += 1;
            groups
                .entry(key(family, &ports))
                .or_insert_with(|| Group {
                    address_type: family.into(),
                    ports: ports.clone(),
                    endpoints: Vec::new(),
                })
                .endpoints
                .push(endpoint);
        }
    }
    (groups, skipped)
}

/// The group key of a slice of `address_type` with `ports`.
pub fn key(address_type: &str, ports: &[EndpointPort]) -> String {
    let mut sorted: Vec<String> = ports
        .iter()
        .map(|p| serde_json::to_string(p).unwrap_or_default())
        .collect();
    sorted.sort();
    format!("{address_type}/{}", sorted.join(","))
}

/// An address and whether it was listed ready.
type Listed = (EndpointAddress, bool);

/// Subsets merged by identical ports, addresses deduplicated (ready wins) and sorted, as
/// upstream's `RepackSubsets`.
fn repack(endpoints: &Endpoints) -> Vec<(Vec<CorePort>, Vec<Listed>)> {
    let mut merged: BTreeMap<String, (Vec<CorePort>, BTreeMap<String, Listed>)> = BTreeMap::new();
    for subset in endpoints.subsets.iter().flatten() {
        let mut ports = subset.ports.clone().unwrap_or_default();
        ports.sort_by(|a, b| {
            (a.name.as_deref(), a.port, a.protocol.as_deref()).cmp(&(
                b.name.as_deref(),
                b.port,
                b.protocol.as_deref(),
            ))
        });
        let port_key = serde_json::to_string(&ports).unwrap_or_default();
        let entry = merged
            .entry(port_key)
            .or_insert_with(|| (ports, BTreeMap::new()));
        for address in subset.addresses.iter().flatten() {
            entry.1.insert(address.ip.clone(), (address.clone(), true));
        }
        for address in subset.not_ready_addresses.iter().flatten() {
            entry
                .1
                .entry(address.ip.clone())
                .or_insert_with(|| (address.clone(), false));
        }
    }
    merged
        .into_values()
        .map(|(ports, addresses)| {
            let (ready, not_ready): (Vec<_>, Vec<_>) =
                addresses.into_values().partition(|(_, ready)| *ready);
            (ports, ready.into_iter().chain(not_ready).collect())
        })
        .collect()
}

fn slice_port(port: &CorePort) -> EndpointPort {
    EndpointPort {
        name: Some(port.name.clone().unwrap_or_default()),
        port: Some(port.port),
        protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
        app_protocol: port.app_protocol.clone(),
    }
}

fn endpoint(address: &EndpointAddress, ready: bool) -> Option<(Endpoint, &'static str)> {
    let ip: IpAddr = address.ip.trim().parse().ok()?;
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let endpoint = Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..EndpointConditions::default()
        }),
        target_ref: address.target_ref.clone(),
        node_name: address.node_name.clone(),
        hostname: address.hostname.clone().filter(|h| !h.is_empty()),
        ..Endpoint::default()
    };
    Some((endpoint, family))
}

/// The slices' labels: the Endpoints' own, then the service name and this controller.
pub fn labels(endpoints: &Endpoints, name: &str) -> BTreeMap<String, String> {
    let mut labels = endpoints.metadata.labels.clone().unwrap_or_default();
    labels.insert(crate::endpointslice::SERVICE_NAME_LABEL.into(), name.into());
    labels.insert(
        crate::endpointslice::MANAGED_BY_LABEL.into(),
        super::MANAGED_BY.into(),
    );
    labels
}

/// The slices' annotations: the Endpoints' own but the trigger time and kubectl's record.
pub fn annotations(endpoints: &Endpoints) -> BTreeMap<String, String> {
    let mut annotations = endpoints.metadata.annotations.clone().unwrap_or_default();
    for dropped in DROPPED_ANNOTATIONS {
        annotations.remove(*dropped);
    }
    annotations
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EndpointSubset;

    fn address(ip: &str) -> EndpointAddress {
        EndpointAddress {
            ip: ip.into(),
            ..EndpointAddress::default()
        }
    }

    fn port(port: i32) -> CorePort {
        CorePort {
            name: Some("http".into()),
            port,
            protocol: Some("TCP".into()),
            app_protocol: None,
        }
    }

    #[test]
    fn subsets_group_by_family_and_ports_with_the_limit_per_subset() {
        let endpoints = Endpoints {
            subsets: Some(vec![
                EndpointSubset {
                    addresses: Some(vec![
                        address("10.0.0.2"),
                        address("fd00::1"),
                        address("bad"),
                    ]),
                    not_ready_addresses: Some(vec![address("10.0.0.3")]),
                    ports: Some(vec![port(80)]),
                },
                EndpointSubset {
                    addresses: Some(vec![
                        address("10.0.1.1"),
                        address("10.0.1.2"),
                        address("10.0.1.3"),
                        address("10.0.1.4"),
                    ]),
                    not_ready_addresses: None,
                    ports: Some(vec![port(81)]),
                },
            ]),
            ..Endpoints::default()
        };
        let (groups, skipped) = groups(&endpoints, 3);
        assert_eq!(
            skipped,
            Skipped {
                invalid: 1,
                over_limit: 1
            }
        );
        let v4: Vec<&Group> = groups
            .values()
            .filter(|g| g.address_type == "IPv4")
            .collect();
        let v6: Vec<&Group> = groups
            .values()
            .filter(|g| g.address_type == "IPv6")
            .collect();
        assert_eq!((v4.len(), v6.len()), (2, 1));
        let on_80 = v4.iter().find(|g| g.ports[0].port == Some(80));
        let ready: Vec<(String, Option<bool>)> = on_80
            .map(|g| {
                g.endpoints
                    .iter()
                    .map(|e| {
                        (
                            e.addresses[0].clone(),
                            e.conditions.as_ref().and_then(|c| c.ready),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            ready,
            vec![
                ("10.0.0.2".into(), Some(true)),
                ("10.0.0.3".into(), Some(false))
            ]
        );
        let on_81 = v4.iter().find(|g| g.ports[0].port == Some(81));
        assert_eq!(on_81.map(|g| g.endpoints.len()), Some(3));
    }
}

//! A Service's v1 Endpoints subsets, as upstream's endpoints controller computes them:
//! ready pods in `addresses`, the others in `notReadyAddresses` (all in `addresses` with
//! `publishNotReadyAddresses`), terminating pods left out unless published, named ports
//! resolved per pod, addresses regrouped by their port sets, at most 1000 addresses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, ObjectReference, Pod, Service,
};

use crate::podutil;

/// The most addresses an Endpoints object holds.
pub const MAX_CAPACITY: usize = 1000;

/// The address of `pod` in the Service's primary IP family.
fn address(service: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let family = service
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first().cloned());
    let ips = podutil::pod_ips(pod);
    let ip = match family {
        Some(family) => ips.into_iter().find(|ip| podutil::is_family(ip, &family))?,
        None => ips.into_iter().next()?,
    };
    let spec = pod.spec.as_ref();
    Some(EndpointAddress {
        ip,
        node_name: spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        hostname: podutil::should_set_hostname(pod, service)
            .then(|| spec.and_then(|s| s.hostname.clone()))
            .flatten(),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
    })
}

fn port_key(port: &EndpointPort) -> String {
    format!(
        "{}/{}/{}",
        port.name.as_deref().unwrap_or(""),
        port.port,
        port.protocol.as_deref().unwrap_or("")
    )
}

fn address_key(address: &EndpointAddress) -> String {
    let uid = address
        .target_ref
        .as_ref()
        .and_then(|t| t.uid.as_deref())
        .unwrap_or("");
    format!("{}|{uid}", address.ip)
}

#[derive(Default)]
struct Collected {
    address: Option<EndpointAddress>,
    ready: bool,
    ports: BTreeMap<String, EndpointPort>,
}

/// The subsets of `pods` for `service`.
pub fn subsets(service: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let spec = service.spec.as_ref();
    let publish = spec
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let headless = spec.and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    let service_ports = spec.and_then(|s| s.ports.clone()).unwrap_or_default();
    let mut collected: BTreeMap<String, Collected> = BTreeMap::new();
    for pod in pods {
        if !podutil::should_be_in_endpoints(pod, publish) {
            continue;
        }
        let Some(address) = address(service, pod) else {
            continue;
        };
        let ready = publish || podutil::is_ready(pod);
        let entry = collected.entry(address_key(&address)).or_default();
        entry.ready = ready;
        if service_ports.is_empty() {
            // A headless Service may have no ports: its addresses stand alone.
            if headless {
                entry.address = Some(address);
            }
            continue;
        }
        for port in &service_ports {
            let Some(number) = podutil::find_port(pod, port) else {
                continue;
            };
            let endpoint_port = EndpointPort {
                name: port.name.clone().filter(|n| !n.is_empty()),
                port: number,
                protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: port.app_protocol.clone(),
            };
            entry.ports.insert(port_key(&endpoint_port), endpoint_port);
            entry.address = Some(address.clone());
        }
    }
    // Addresses with the same ports share a subset.
    let mut by_ports: BTreeMap<String, EndpointSubset> = BTreeMap::new();
    for (_, entry) in collected {
        let Some(address) = entry.address else {
            continue;
        };
        let key = entry.ports.keys().cloned().collect::<Vec<_>>().join(",");
        let subset = by_ports.entry(key).or_insert_with(|| EndpointSubset {
            ports: (!entry.ports.is_empty()).then(|| entry.ports.values().cloned().collect()),
            ..EndpointSubset::default()
        });
        let list = if entry.ready {
            subset.addresses.get_or_insert_with(Vec::new)
        } else {
            subset.not_ready_addresses.get_or_insert_with(Vec::new)
        };
        list.push(address);
    }
    let mut subsets: Vec<EndpointSubset> = by_ports.into_values().collect();
    for subset in &mut subsets {
        for list in [&mut subset.addresses, &mut subset.not_ready_addresses]
            .into_iter()
            .flatten()
        {
            list.sort_by_key(address_key);
        }
    }
    subsets
}

/// Cuts the subsets to [`MAX_CAPACITY`] addresses as upstream does: ready addresses first,
/// each subset keeping its share; whether anything was cut.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let count = |list: &Option<Vec<EndpointAddress>>| list.as_ref().map_or(0, Vec::len);
    let ready: usize = subsets.iter().map(|s| count(&s.addresses)).sum();
    let not_ready: usize = subsets.iter().map(|s| count(&s.not_ready_addresses)).sum();
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let cut_ready = ready > MAX_CAPACITY;
    let (max, total) = if cut_ready {
        (MAX_CAPACITY, ready)
    } else {
        (MAX_CAPACITY - ready, not_ready)
    };
    let mut room = max;
    for subset in subsets.iter_mut() {
        let list = if cut_ready {
            subset.not_ready_addresses = None;
            &mut subset.addresses
        } else {
            &mut subset.not_ready_addresses
        };
        let here = count(list);
        let share = (here * max).div_ceil(total.max(1)).min(room);
        if let Some(list) = list {
            list.truncate(share);
            room -= list.len();
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subset(ready: usize, not_ready: usize) -> EndpointSubset {
        let address = |i: usize| EndpointAddress {
            ip: format!("10.0.{}.{}", i / 250, i % 250),
            ..EndpointAddress::default()
        };
        EndpointSubset {
            addresses: Some((0..ready).map(address).collect()),
            not_ready_addresses: Some((0..not_ready).map(address).collect()),
            ports: None,
        }
    }

    #[test]
    fn truncation_keeps_ready_addresses_first() {
        let mut subsets = vec![subset(600, 300), subset(300, 300)];
        assert!(truncate(&mut subsets));
        let ready: usize = subsets
            .iter()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        let not_ready: usize = subsets
            .iter()
            .map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .sum();
        assert_eq!((ready, not_ready), (900, 100));
        let mut small = vec![subset(10, 10)];
        assert!(!truncate(&mut small));
    }
}

//! The endpoints a Service's pods stand for, as upstream's `podToEndpoint` and
//! `getEndpointPorts` make them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

use super::plan::{Group, ports_key};
use crate::podutil;

/// The node label the endpoint's zone comes from.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The address types of a Service: its IP families (IPv4 when it has none).
pub fn address_types(service: &Service) -> Vec<String> {
    let spec = service.spec.as_ref();
    let families: Vec<String> = spec.and_then(|s| s.ip_families.clone()).unwrap_or_default();
    if !families.is_empty() {
        return families;
    }
    let cluster_ips: Vec<String> = spec.and_then(|s| s.cluster_ips.clone()).unwrap_or_default();
    let mut types: Vec<String> = Vec::new();
    for ip in cluster_ips.iter().filter(|ip| ip.as_str() != "None") {
        let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
        if !types.iter().any(|t| t == family) {
            types.push(family.into());
        }
    }
    if types.is_empty() {
        types.push("IPv4".into());
    }
    types
}

/// The Service's ports resolved for `pod`; ports the pod lacks are left out.
pub fn endpoint_ports(service: &Service, pod: &Pod) -> Vec<EndpointPort> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|port| {
            let number = podutil::find_port(pod, port)?;
            Some(EndpointPort {
                name: Some(port.name.clone().unwrap_or_default()),
                port: Some(number),
                protocol: Some(port.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: port.app_protocol.clone(),
            })
        })
        .collect()
}

/// The endpoint of `pod` for `address_type` (no addresses when it has no IP of that family).
pub fn endpoint(pod: &Pod, node: Option<&Node>, service: &Service, address_type: &str) -> Endpoint {
    let serving = podutil::is_ready(pod);
    let terminating = podutil::is_terminating(pod);
    let publish = publish_not_ready(service);
    // For compatibility a terminating pod is never ready, unless unready pods are published.
    let ready = publish || (serving && !terminating);
    let spec = pod.spec.as_ref();
    let zone = node
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(ZONE_LABEL))
        .filter(|z| !z.is_empty())
        .cloned();
    Endpoint {
        addresses: podutil::pod_ips(pod)
            .into_iter()
            .filter(|ip| podutil::is_family(ip, address_type))
            .collect(),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        node_name: spec
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        zone,
        hostname: podutil::should_set_hostname(pod, service)
            .then(|| spec.and_then(|s| s.hostname.clone()))
            .flatten(),
        ..Endpoint::default()
    }
}

/// Whether the Service publishes unready pods.
pub fn publish_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The desired groups of `pods` for `address_type`, and the pods left out because their
/// node is unknown (the sync is retried for them).
pub fn groups(
    service: &Service,
    pods: &[&Pod],
    node: &dyn Fn(&str) -> Option<std::sync::Arc<Node>>,
    address_type: &str,
) -> (Vec<Group>, Vec<String>) {
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    let mut missing = Vec::new();
    for pod in pods {
        if !podutil::should_be_in_endpoints(pod, true) {
            continue;
        }
        let ports = endpoint_ports(service, pod);
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let found = node(&node_name);
        if found.is_none() && !publish_not_ready(service) {
            missing.push(format!(
                "skipping Pod {} for Service {}/{}: Node {} Not Found",
                pod.metadata.name.as_deref().unwrap_or(""),
                service.metadata.namespace.as_deref().unwrap_or(""),
                service.metadata.name.as_deref().unwrap_or(""),
                node_name
            ));
            continue;
        }
        let endpoint = endpoint(pod, found.as_deref(), service, address_type);
        let group = groups
            .entry(ports_key(Some(&ports)))
            .or_insert_with(|| Group {
                address_type: address_type.into(),
                ports,
                endpoints: Vec::new(),
            });
        if !endpoint.addresses.is_empty() {
            group.endpoints.push(endpoint);
        }
    }
    (groups.into_values().collect(), missing)
}

//! What a Service and its EndpointSlices ask the proxy for, computed without side effects:
//! the frontends (a ClusterIP or node port, a port and protocol) and the ready endpoints
//! behind each, as kube-proxy reads them (ready endpoints; serving-but-terminating ones only
//! when none is ready).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    fn parse(text: Option<&str>) -> Protocol {
        match text {
            Some("UDP") => Protocol::Udp,
            Some("SCTP") => Protocol::Sctp,
            _ => Protocol::Tcp,
        }
    }
}

/// Where clients connect: an address (a ClusterIP, or unspecified for a node port on every
/// node address), a port and a protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    /// The listening address.
    pub ip: IpAddr,
    /// The listening port.
    pub port: u16,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
}

/// One Service port's frontends and endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The Service port's name, for logs.
    pub port_name: String,
    /// Where clients connect.
    pub frontends: Vec<Frontend>,
    /// The endpoints connections go to.
    pub endpoints: Vec<SocketAddr>,
}

/// A Service's `namespace/name`.
pub fn service_key(service: &Service) -> String {
    format!(
        "{}/{}",
        service.metadata.namespace.as_deref().unwrap_or("default"),
        service.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The Service key an EndpointSlice belongs to, if labelled.
pub fn slice_service_key(slice: &EndpointSlice) -> Option<String> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(format!(
        "{}/{name}",
        slice.metadata.namespace.as_deref().unwrap_or("default")
    ))
}

/// The routes of `service` with the endpoints of `slices` (its own); none for a headless
/// Service, an ExternalName one, or one without a ClusterIP yet.
pub fn routes(service: &Service, slices: &[&EndpointSlice]) -> Vec<Route> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let cluster_ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        let protocol = Protocol::parse(port.protocol.as_deref());
        let Ok(number) = u16::try_from(port.port) else {
            continue;
        };
        let mut frontends: Vec<Frontend> = cluster_ips
            .iter()
            .map(|ip| Frontend {
                ip: *ip,
                port: number,
                protocol,
            })
            .collect();
        if node_ports && let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok()) {
            frontends.push(Frontend {
                ip: IpAddr::from([0, 0, 0, 0]),
                port: node_port,
                protocol,
            });
        }
        if frontends.is_empty() {
            continue;
        }
        let name = port.name.clone().unwrap_or_default();
        out.push(Route {
            endpoints: endpoints_for(slices, &name, protocol),
            port_name: name,
            frontends,
        });
    }
    out
}

/// The endpoints of the Service port `name`: ready ones, or serving terminating ones when
/// no endpoint is ready (as kube-proxy falls back).
fn endpoints_for(slices: &[&EndpointSlice], name: &str, protocol: Protocol) -> Vec<SocketAddr> {
    let mut ready = Vec::new();
    let mut serving = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == name
                && Protocol::parse(p.protocol.as_deref()) == protocol
        }) else {
            continue;
        };
        let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let is_serving = conditions.and_then(|c| c.serving).unwrap_or(is_ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    continue;
                };
                let at = SocketAddr::new(ip, number);
                if is_ready && !terminating {
                    ready.push(at);
                } else if is_serving && terminating {
                    serving.push(at);
                }
            }
        }
    }
    let mut chosen = if ready.is_empty() { serving } else { ready };
    chosen.sort();
    chosen.dedup();
    chosen
}

/// The routes of every Service, by Service key.
pub type RouteTable = BTreeMap<String, Vec<Route>>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn ready_endpoints_back_each_named_port() {
        let svc = service(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.7", "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ]}
        }));
        let s = slice(json!({
            "metadata": {"name": "web-1", "namespace": "ns", "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": [
                {"addresses": ["10.244.0.5"], "conditions": {"ready": true}},
                {"addresses": ["10.244.0.6"], "conditions": {"ready": false}},
                {"addresses": ["10.244.0.7"]}
            ]
        }));
        assert_eq!(slice_service_key(&s).as_deref(), Some("ns/web"));
        let routes = routes(&svc, &[&s]);
        assert_eq!(routes.len(), 2);
        assert_eq!(
            routes[0].frontends.len(),
            2,
            "the ClusterIP and the node port"
        );
        assert_eq!(routes[0].frontends[1].port, 30080);
        assert_eq!(
            routes[0].endpoints,
            vec![
                "10.244.0.5:8080".parse().unwrap(),
                "10.244.0.7:8080".parse().unwrap()
            ]
        );
        assert_eq!(routes[1].frontends[0].protocol, Protocol::Udp);
        assert_eq!(
            routes[1].endpoints,
            vec![
                "10.244.0.5:5353".parse().unwrap(),
                "10.244.0.7:5353".parse().unwrap()
            ]
        );
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let svc = service(
            json!({"metadata": {"name": "w"}, "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}}),
        );
        let s = slice(json!({
            "metadata": {"name": "w-1", "labels": {SERVICE_NAME_LABEL: "w"}},
            "addressType": "IPv4",
            "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": false, "serving": true, "terminating": true}}]
        }));
        assert_eq!(
            routes(&svc, &[&s])[0].endpoints,
            vec!["10.1.0.1:80".parse().unwrap()]
        );
    }

    #[test]
    fn headless_and_external_name_services_have_no_routes() {
        let headless = service(
            json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
        );
        assert!(routes(&headless, &[]).is_empty());
        let external = service(
            json!({"metadata": {"name": "e"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}),
        );
        assert!(routes(&external, &[]).is_empty());
    }
}

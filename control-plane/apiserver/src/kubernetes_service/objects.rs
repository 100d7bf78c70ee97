//! The objects of the `kubernetes` Service as kube-apiserver 1.33 writes them: the Service,
//! its Endpoints (one subset: every live API server's address, this server's port) and the
//! EndpointSlice made from that Endpoints.

use std::net::IpAddr;

use serde_json::{Map, Value, json};

/// The Service's name, in [`NAMESPACE`].
pub const NAME: &str = "kubernetes";
/// The Service's namespace.
pub const NAMESPACE: &str = "default";
/// The port's name in the Service, the Endpoints and the EndpointSlice.
pub const PORT_NAME: &str = "https";
/// Keeps the endpointslice-mirroring controller off the Endpoints: the API server writes the
/// EndpointSlice itself.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Service, created when missing (never reconciled after, as upstream since 1.17).
pub fn service(cluster_ip: IpAddr, port: u16, target_port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "ports": [{"name": PORT_NAME, "port": port, "protocol": "TCP", "targetPort": target_port}],
            "clusterIP": cluster_ip.to_string(),
            "ipFamilyPolicy": "SingleStack",
            "sessionAffinity": "None",
            "type": "ClusterIP",
        },
    })
}

/// The Endpoints' (and the slice's) ports: this server's.
pub fn endpoint_ports(port: u16) -> Value {
    json!([{"name": PORT_NAME, "port": port, "protocol": "TCP"}])
}

/// The Endpoints to write given what is stored (`current`), or `None` when it is right.
/// Ports are only put back when missing unless `reconcile_ports` (at start and stop), as
/// upstream's lease reconciler: servers on other ports do not fight over them.
pub fn endpoints(
    current: Option<&Value>,
    ips: &[IpAddr],
    ports: &Value,
    reconcile_ports: bool,
) -> Option<Value> {
    let mut endpoints = current.cloned().unwrap_or_else(|| {
        json!({
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
        })
    });
    let mut changed = current.is_none();
    let labels = labels_mut(&mut endpoints);
    if labels.get(SKIP_MIRROR_LABEL).and_then(Value::as_str) != Some("true") {
        labels.insert(SKIP_MIRROR_LABEL.into(), json!("true"));
        changed = true;
    }
    let subsets = endpoints.get("subsets").and_then(Value::as_array);
    let format_correct = subsets.is_some_and(|s| s.len() == 1);
    if !format_correct {
        endpoints["subsets"] = json!([{"addresses": [], "ports": ports}]);
        changed = true;
    }
    let subset = &mut endpoints["subsets"][0];
    let mut stored: Vec<&str> = subset
        .get("addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("ip").and_then(Value::as_str))
        .collect();
    stored.sort_unstable();
    let wanted: Vec<String> = sorted_texts(ips);
    if !format_correct || stored != wanted.iter().map(String::as_str).collect::<Vec<_>>() {
        subset["addresses"] = wanted.iter().map(|ip| json!({"ip": ip})).collect();
        changed = true;
    }
    let ports_missing = subset
        .get("ports")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if (reconcile_ports || ports_missing) && subset.get("ports") != Some(ports) {
        subset["ports"] = ports.clone();
        changed = true;
    }
    changed.then_some(endpoints)
}

/// Addresses in lexicographic order of their text, as upstream's `RepackSubsets` leaves them.
fn sorted_texts(ips: &[IpAddr]) -> Vec<String> {
    let mut texts: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    texts.sort();
    texts.dedup();
    texts
}

fn labels_mut(object: &mut Value) -> &mut Map<String, Value> {
    let metadata = &mut object["metadata"];
    if !metadata.get("labels").is_some_and(Value::is_object) {
        metadata["labels"] = json!({});
    }
    match metadata.get_mut("labels").and_then(Value::as_object_mut) {
        Some(labels) => labels,
        None => unreachable!("labels was just made an object"),
    }
}

/// The EndpointSlice made from the Endpoints: same name, the service-name label alone, one
/// endpoint per address (ready or not as listed), the subset's ports.
pub fn slice_from(endpoints: &Value) -> Value {
    let subset = endpoints.pointer("/subsets/0");
    let list = |field: &str| -> Vec<String> {
        subset
            .and_then(|s| s.get(field))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| a.get("ip").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    };
    let (ready, not_ready) = (list("addresses"), list("notReadyAddresses"));
    let all_v6 = ready
        .iter()
        .chain(&not_ready)
        .all(|ip| ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()))
        && !(ready.is_empty() && not_ready.is_empty());
    let endpoint =
        |ip: &String, ready: bool| json!({"addresses": [ip], "conditions": {"ready": ready}});
    let items: Vec<Value> = ready
        .iter()
        .map(|ip| endpoint(ip, true))
        .chain(not_ready.iter().map(|ip| endpoint(ip, false)))
        .collect();
    let ports = subset
        .and_then(|s| s.get("ports"))
        .cloned()
        .unwrap_or_else(|| json!([]));
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": {SERVICE_NAME_LABEL: NAME},
        },
        "addressType": if all_v6 { "IPv6" } else { "IPv4" },
        "endpoints": items,
        "ports": ports,
    })
}

/// Whether the stored slice differs from `desired` in what the reconciler owns.
pub fn slice_differs(current: &Value, desired: &Value) -> bool {
    let empty = json!([]);
    let field = |object: &Value, name: &str| -> Value {
        match object.get(name) {
            Some(Value::Null) | None => empty.clone(),
            Some(value) => value.clone(),
        }
    };
    field(current, "endpoints") != field(desired, "endpoints")
        || field(current, "ports") != field(desired, "ports")
        || current.pointer("/metadata/labels") != desired.pointer("/metadata/labels")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn endpoints_list_every_live_address_sorted_and_skip_mirroring() {
        let ports = endpoint_ports(6443);
        let made = endpoints(None, &[ip("10.0.0.9"), ip("10.0.0.10")], &ports, false);
        let made = made.unwrap_or_default();
        assert_eq!(made["metadata"]["labels"][SKIP_MIRROR_LABEL], "true");
        assert_eq!(
            made["subsets"],
            json!([{"addresses": [{"ip": "10.0.0.10"}, {"ip": "10.0.0.9"}], "ports": ports}])
        );
        // Nothing to write when it is right; another server's port is left alone.
        assert!(
            endpoints(
                Some(&made),
                &[ip("10.0.0.10"), ip("10.0.0.9")],
                &endpoint_ports(7443),
                false
            )
            .is_none()
        );
        let reset = endpoints(Some(&made), &[ip("10.0.0.9")], &endpoint_ports(7443), true);
        let reset = reset.unwrap_or_default();
        assert_eq!(
            reset["subsets"],
            json!([{"addresses": [{"ip": "10.0.0.9"}], "ports": endpoint_ports(7443)}])
        );
    }

    #[test]
    fn the_slice_mirrors_the_endpoints() {
        let ports = endpoint_ports(6443);
        let made = endpoints(None, &[ip("10.0.0.9")], &ports, false).unwrap_or_default();
        let slice = slice_from(&made);
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(
            slice["metadata"]["labels"],
            json!({SERVICE_NAME_LABEL: NAME})
        );
        assert_eq!(
            slice["endpoints"],
            json!([{"addresses": ["10.0.0.9"], "conditions": {"ready": true}}])
        );
        assert_eq!(slice["ports"], ports);
        assert!(!slice_differs(&slice, &slice));
    }
}

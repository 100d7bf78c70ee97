//! Services: upstream's defaults (type, protocols, target ports, traffic policies, IP
//! families) and validation of ports and types, with its field paths and messages. ClusterIPs
//! and nodePorts are allocated in `service_alloc`.

use serde_json::{Map, Value, json};

use crate::status::Cause;

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.into(), value);
    }
}

/// The service's type, `ClusterIP` when unset.
pub fn service_type(object: &Value) -> &str {
    object
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

/// Whether the type gives the service a ClusterIP (every type but ExternalName; headless
/// services ask for `None`).
pub fn wants_cluster_ip(object: &Value) -> bool {
    service_type(object) != "ExternalName"
        && object.pointer("/spec/clusterIP").and_then(Value::as_str) != Some("None")
}

/// Whether the type gives each port a nodePort.
pub fn wants_node_ports(object: &Value) -> bool {
    match service_type(object) {
        "NodePort" => true,
        "LoadBalancer" => object
            .pointer("/spec/allocateLoadBalancerNodePorts")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        _ => false,
    }
}

/// Upstream's SetDefaults_Service and the strategy's, for what clients read back.
pub fn defaults(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if kind != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if kind == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(port, "protocol", json!("TCP"));
            if let Some(number) = port.get("port").cloned() {
                set_default(port, "targetPort", number);
            }
        }
    }
    let empty = object
        .get("status")
        .is_none_or(|s| s.is_null() || s.as_object().is_some_and(Map::is_empty));
    if empty {
        object["status"] = json!({"loadBalancer": {}});
    }
}

/// Sets the IP-family fields once the ClusterIP is known (single-stack IPv4 or IPv6).
pub fn set_families(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if ip.is_empty() {
        return;
    }
    spec.insert("clusterIPs".into(), json!([ip]));
    if ip == "None" {
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        return;
    }
    let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
    set_default(spec, "ipFamilies", json!([family]));
    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
}

fn unsupported(field: &str, value: &str, supported: &[&str]) -> Cause {
    let listed: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
    Cause {
        reason: "FieldValueNotSupported".into(),
        message: format!(
            "Unsupported value: {}: supported values: {}",
            json!(value),
            listed.join(", ")
        ),
        field: field.into(),
    }
}

fn port_range(field: &str, value: i64) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value}: must be between 1 and 65535, inclusive"),
        field: field.into(),
    }
}

/// Upstream's ValidateService checks of type, ports and names.
pub fn check(object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let kind = service_type(object);
    if !TYPES.contains(&kind) {
        causes.push(unsupported("spec.type", kind, TYPES));
    }
    let headless = object.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let ports = object
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if kind == "ExternalName" {
        let name = object
            .pointer("/spec/externalName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required("spec.externalName"));
        }
    } else if ports.is_empty() && !headless {
        causes.push(Cause::required("spec.ports"));
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let name = port.get("name").and_then(Value::as_str).unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            causes.push(Cause::required(&format!("{at}.name")));
        } else if !name.is_empty() {
            if !crate::validation::is_dns_label(name) {
                causes.extend(crate::validation::check_name(
                    crate::kinds::NameRule::Label,
                    name,
                    &format!("{at}.name"),
                ));
            }
            if names.contains(&name) {
                causes.push(Cause {
                    reason: "FieldValueDuplicate".into(),
                    message: format!("Duplicate value: {}", json!(name)),
                    field: format!("{at}.name"),
                });
            }
            names.push(name);
        }
        match port.get("port").and_then(Value::as_i64) {
            Some(number) if (1..=65535).contains(&number) => {}
            Some(number) => causes.push(port_range(&format!("{at}.port"), number)),
            None => causes.push(port_range(&format!("{at}.port"), 0)),
        }
        let protocol = port
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP");
        if !PROTOCOLS.contains(&protocol) {
            causes.push(unsupported(&format!("{at}.protocol"), protocol, PROTOCOLS));
        }
        if let Some(target) = port.get("targetPort").and_then(Value::as_i64) {
            if !(1..=65535).contains(&target) {
                causes.push(port_range(&format!("{at}.targetPort"), target));
            }
        }
        let node_port = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if node_port != 0 && kind == "ClusterIP" {
            causes.push(Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: may not be used when `type` is 'ClusterIP'".into(),
                field: format!("{at}.nodePort"),
            });
        }
    }
    causes
}

/// What an update keeps of the stored Service: its allocated ClusterIP and nodePorts when the
/// new object leaves them out (upstream's patchAllocatedValues); a changed ClusterIP is
/// refused.
pub fn prepare_update(new: &mut Value, old: &Value) -> Vec<Cause> {
    defaults(new);
    let mut causes = Vec::new();
    let old_ip = old
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let keeps_ip = wants_cluster_ip(new) && service_type(old) != "ExternalName";
    if keeps_ip && !old_ip.is_empty() {
        let new_ip = new
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("");
        if new_ip.is_empty() {
            new["spec"]["clusterIP"] = json!(old_ip);
            if let Some(ips) = old.pointer("/spec/clusterIPs") {
                new["spec"]["clusterIPs"] = ips.clone();
            }
        } else if new_ip != old_ip {
            causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                new_ip,
                "field is immutable",
            ));
        }
    }
    if !wants_cluster_ip(new) && service_type(new) == "ExternalName" {
        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
            for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                spec.remove(field);
            }
        }
    }
    if wants_node_ports(new) && wants_node_ports(old) {
        let old_ports = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for port in ports.iter_mut() {
                if port.get("nodePort").and_then(Value::as_u64).unwrap_or(0) != 0 {
                    continue;
                }
                let same = old_ports.iter().find(|o| {
                    o.get("port") == port.get("port") && o.get("protocol") == port.get("protocol")
                });
                if let Some(held) = same.and_then(|o| o.get("nodePort")) {
                    port["nodePort"] = held.clone();
                }
            }
        }
    }
    if !wants_node_ports(new) {
        if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                // Upstream drops the nodePorts of a Service that no longer needs them.
                if service_type(old) != "ClusterIP" {
                    port.remove("nodePort");
                }
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks_follow_upstream() {
        let mut svc = json!({"spec": {"ports": [{"port": 80}]}});
        defaults(&mut svc);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert!(check(&svc).is_empty());
        let bad =
            json!({"spec": {"type": "Foo", "ports": [{"port": 70000}, {"port": 1, "name": "a"}]}});
        let fields: Vec<String> = check(&bad).into_iter().map(|c| c.field).collect();
        assert_eq!(
            fields,
            vec!["spec.type", "spec.ports[0].name", "spec.ports[0].port"]
        );
        let none = json!({"spec": {}});
        assert_eq!(check(&none), vec![Cause::required("spec.ports")]);
    }
}

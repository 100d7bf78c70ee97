//! Ingresses and NetworkPolicies (networking.k8s.io/v1): upstream's ValidateIngressSpec
//! (rules or a default backend, paths with a pathType, one backend with a port) and
//! ValidateNetworkPolicySpec (ports, peers, policyTypes), with upstream's paths and messages.

use serde_json::{Value, json};

use crate::status::Cause;

fn invalid(field: &str, shown: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {shown}: {detail}"),
        field: field.into(),
    }
}

fn required(field: &str, detail: &str) -> Cause {
    let mut cause = Cause::required(field);
    if !detail.is_empty() {
        cause.message = format!("Required value: {detail}");
    }
    cause
}

fn forbidden(field: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueForbidden".into(),
        message: format!("Forbidden: {detail}"),
        field: field.into(),
    }
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

fn present(value: Option<&Value>) -> bool {
    value.is_some_and(|v| !v.is_null())
}

fn items(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn check_backend(backend: &Value, field: &str, causes: &mut Vec<Cause>) {
    let service = backend.get("service").filter(|v| !v.is_null());
    let resource = present(backend.get("resource"));
    let Some(service) = service else {
        if !resource {
            causes.push(invalid(
                field,
                "\"\"",
                "resource or service backend is required",
            ));
        }
        return;
    };
    if resource {
        causes.push(invalid(
            field,
            "\"\"",
            "cannot set both resource and service backends",
        ));
        return;
    }
    if service
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        causes.push(Cause::required(&format!("{field}.service.name")));
    }
    let port = service.get("port");
    let name = port
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    let number = port
        .and_then(|p| p.get("number"))
        .and_then(Value::as_i64)
        .filter(|n| *n != 0);
    let port_field = format!("{field}.service.port");
    match (name, number) {
        (Some(name), Some(number)) => causes.push(invalid(
            &port_field,
            &format!(
                "v1.ServiceBackendPort{{Name:{}, Number:{number}}}",
                json!(name)
            ),
            "cannot set both port name & port number",
        )),
        (None, None) => causes.push(required(&port_field, "port name or number is required")),
        (None, Some(number)) if !(1..=65535).contains(&number) => causes.push(invalid(
            &format!("{port_field}.number"),
            &number.to_string(),
            "must be between 1 and 65535, inclusive",
        )),
        _ => {}
    }
}

/// Upstream's ValidateIngressSpec (the parts clients meet: rules, paths, backends).
pub fn check_ingress(object: &Value) -> Vec<Cause> {
    let null = Value::Null;
    let spec = object.get("spec").unwrap_or(&null);
    let mut causes = Vec::new();
    let rules = items(spec.get("rules"));
    let default = spec.get("defaultBackend").filter(|v| !v.is_null());
    if rules.is_empty() && default.is_none() {
        causes.push(invalid(
            "spec.rules",
            "[]networking.IngressRule(nil)",
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(backend) = default {
        check_backend(backend, "spec.defaultBackend", &mut causes);
    }
    for (i, rule) in rules.iter().enumerate() {
        let Some(http) = rule.get("http").filter(|v| !v.is_null()) else {
            continue;
        };
        let base = format!("spec.rules[{i}].http");
        let paths = items(http.get("paths"));
        if paths.is_empty() {
            causes.push(Cause::required(&format!("{base}.paths")));
        }
        for (j, path) in paths.iter().enumerate() {
            let field = format!("{base}.paths[{j}]");
            match path.get("pathType").and_then(Value::as_str) {
                None => causes.push(required(
                    &format!("{field}.pathType"),
                    "pathType must be specified",
                )),
                Some("Exact" | "Prefix") => {
                    let text = path.get("path").and_then(Value::as_str).unwrap_or("");
                    if !text.starts_with('/') {
                        causes.push(invalid(
                            &format!("{field}.path"),
                            &json!(text).to_string(),
                            "must be an absolute path",
                        ));
                    }
                }
                Some("ImplementationSpecific") => {}
                Some(other) => causes.push(unsupported(
                    &format!("{field}.pathType"),
                    other,
                    &["Exact", "ImplementationSpecific", "Prefix"],
                )),
            }
            check_backend(
                path.get("backend").unwrap_or(&null),
                &format!("{field}.backend"),
                &mut causes,
            );
        }
    }
    causes
}

fn check_port(port: &Value, field: &str, causes: &mut Vec<Cause>) {
    if let Some(protocol) = port.get("protocol").and_then(Value::as_str) {
        if !["TCP", "UDP", "SCTP"].contains(&protocol) {
            causes.push(unsupported(
                &format!("{field}.protocol"),
                protocol,
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
    let number = port.get("port").and_then(Value::as_i64);
    if let Some(number) = number {
        if !(1..=65535).contains(&number) {
            causes.push(invalid(
                &format!("{field}.port"),
                &number.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
    }
    if let Some(end) = port.get("endPort").and_then(Value::as_i64) {
        let end_field = format!("{field}.endPort");
        match port.get("port") {
            None | Some(Value::Null) => causes.push(invalid(
                &end_field,
                &end.to_string(),
                "may not be specified when `port` is not specified",
            )),
            Some(Value::String(_)) => causes.push(forbidden(
                &end_field,
                "may not be specified when `port` is non-numeric",
            )),
            Some(_) if number.is_some_and(|n| end < n) => causes.push(invalid(
                &end_field,
                &end.to_string(),
                "must be greater than or equal to `port`",
            )),
            Some(_) => {}
        }
    }
}

fn check_peer(peer: &Value, field: &str, causes: &mut Vec<Cause>) {
    let named = ["podSelector", "namespaceSelector", "ipBlock"]
        .iter()
        .filter(|k| present(peer.get(**k)))
        .count();
    let block = peer.get("ipBlock").filter(|v| !v.is_null());
    if named == 0 {
        causes.push(required(field, "must specify a peer"));
    } else if block.is_some() && named > 1 {
        causes.push(forbidden(
            field,
            "may not specify both ipBlock and another peer",
        ));
    }
    if let Some(block) = block {
        match block.get("cidr").and_then(Value::as_str) {
            None | Some("") => causes.push(Cause::required(&format!("{field}.ipBlock.cidr"))),
            Some(cidr) if !is_cidr(cidr) => causes.push(invalid(
                &format!("{field}.ipBlock.cidr"),
                &json!(cidr).to_string(),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )),
            Some(_) => {}
        }
    }
}

fn is_cidr(text: &str) -> bool {
    let Some((ip, bits)) = text.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.parse::<u8>().is_ok_and(|b| b <= max)
}

/// Upstream's ValidateNetworkPolicySpec: rules' ports and peers, and the policy types.
pub fn check_network_policy(object: &Value) -> Vec<Cause> {
    let null = Value::Null;
    let spec = object.get("spec").unwrap_or(&null);
    let mut causes = Vec::new();
    for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in items(spec.get(direction)).iter().enumerate() {
            let base = format!("spec.{direction}[{i}]");
            for (j, port) in items(rule.get("ports")).iter().enumerate() {
                check_port(port, &format!("{base}.ports[{j}]"), &mut causes);
            }
            for (j, peer) in items(rule.get(peers)).iter().enumerate() {
                check_peer(peer, &format!("{base}.{peers}[{j}]"), &mut causes);
            }
        }
    }
    let types = items(spec.get("policyTypes"));
    for (i, kind) in types.iter().enumerate() {
        let kind = kind.as_str().unwrap_or("");
        if !["Ingress", "Egress"].contains(&kind) {
            causes.push(unsupported(
                &format!("spec.policyTypes[{i}]"),
                kind,
                &["Egress", "Ingress"],
            ));
        }
    }
    if types.len() > 2 {
        let shown: Vec<String> = types
            .iter()
            .map(|t| json!(t.as_str().unwrap_or("")).to_string())
            .collect();
        causes.push(invalid(
            "spec.policyTypes",
            &format!("[]networking.PolicyType{{{}}}", shown.join(", ")),
            "may not specify more than two policyTypes",
        ));
    }
    causes
}

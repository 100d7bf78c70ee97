//! Validation of what clients send: object names by the kind's rule, and the minimal per-kind
//! checks (pods need containers with names and images), with kube's field paths and messages.

use serde_json::Value;

use crate::kinds::{Kind, NameRule};
use crate::status::Cause;

const SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|b| edge(b) || *b == b'-')
}

/// Whether `text` is an RFC 1123 label of at most 63 characters.
pub fn is_dns_label(text: &str) -> bool {
    text.len() <= 63 && is_label(text)
}

/// Whether `text` is an RFC 1123 subdomain of at most 253 characters.
pub fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(is_label)
}

/// What is wrong with `name` under `rule`, as causes on `field`.
pub fn check_name(rule: NameRule, name: &str, field: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    match rule {
        NameRule::Subdomain => {
            if name.len() > 253 {
                causes.push(Cause::invalid(
                    field,
                    name,
                    "must be no more than 253 characters",
                ));
            }
            if !name.split('.').all(is_label) {
                causes.push(Cause::invalid(field, name, SUBDOMAIN_MESSAGE));
            }
        }
        NameRule::Label => {
            if name.len() > 63 {
                causes.push(Cause::invalid(
                    field,
                    name,
                    "must be no more than 63 characters",
                ));
            }
            if !is_label(name) {
                causes.push(Cause::invalid(field, name, LABEL_MESSAGE));
            }
        }
        NameRule::PathSegment => {
            if name == "." || name == ".." {
                causes.push(Cause::invalid(field, name, &format!("may not be '{name}'")));
            }
            for bad in ["/", "%"] {
                if name.contains(bad) {
                    causes.push(Cause::invalid(
                        field,
                        name,
                        &format!("may not contain '{bad}'"),
                    ));
                }
            }
        }
    }
    causes
}

/// Checks of the metadata every object has: a valid name and a valid namespace.
pub fn check_metadata(kind: &Kind, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match object.pointer("/metadata/name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => {
            causes.extend(check_name(kind.name_rule, name, "metadata.name"));
        }
        _ => causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value: name or generateName is required".into(),
            field: "metadata.name".into(),
        }),
    }
    if kind.namespaced {
        if let Some(ns) = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
        {
            if !is_dns_label(ns) {
                causes.extend(check_name(NameRule::Label, ns, "metadata.namespace"));
            }
        }
    }
    for map in ["labels", "annotations"] {
        if let Some(values) = object.pointer(&format!("/metadata/{map}")) {
            let strings = values
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !values.is_null() && !strings {
                causes.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    message: "Invalid value: must be a map of strings".into(),
                    field: format!("metadata.{map}"),
                });
            }
        }
    }
    causes
}

/// The kind's own checks (only pods for now: enough to prove the Invalid path end to end).
pub fn check_kind(kind: &Kind, object: &Value) -> Vec<Cause> {
    match (kind.group, kind.kind) {
        ("", "Pod") => check_pod_spec(object.get("spec"), "spec"),
        _ => crate::strategies::check(kind, object),
    }
}

/// The checks of a pod spec at `path` (pods' `spec`, templates' `spec.template.spec`).
pub fn check_pod_spec(spec: Option<&Value>, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    match containers {
        Some(list) if !list.is_empty() => {
            for (i, container) in list.iter().enumerate() {
                let at = format!("{path}.containers[{i}]");
                for field in ["name", "image"] {
                    let present = container
                        .get(field)
                        .and_then(Value::as_str)
                        .is_some_and(|v| !v.is_empty());
                    if !present {
                        causes.push(Cause::required(&format!("{at}.{field}")));
                    }
                }
                if let Some(name) = container.get("name").and_then(Value::as_str) {
                    if !name.is_empty() && !is_dns_label(name) {
                        causes.extend(check_name(NameRule::Label, name, &format!("{at}.name")));
                    }
                }
            }
        }
        _ => causes.push(Cause::required(&format!("{path}.containers"))),
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::KindTable;
    use serde_json::json;

    #[test]
    fn names_follow_the_kind_rule() {
        assert!(check_name(NameRule::Subdomain, "a.b-c", "f").is_empty());
        assert!(!check_name(NameRule::Subdomain, "A", "f").is_empty());
        assert!(!check_name(NameRule::Label, "a.b", "f").is_empty());
        assert!(check_name(NameRule::PathSegment, "a:b.C", "f").is_empty());
        assert!(!check_name(NameRule::PathSegment, "a/b", "f").is_empty());
    }

    #[test]
    fn pods_need_container_images() {
        let table = KindTable::default();
        let Some(pods) = table.find("", "v1", "pods") else {
            panic!("pods missing from the table");
        };
        let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c"}]}});
        let causes = check_kind(pods, &pod);
        assert_eq!(causes, vec![Cause::required("spec.containers[0].image")]);
    }
}

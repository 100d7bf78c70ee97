//! The other kinds kubectl users look at: endpointslices, storageclasses, ingresses, leases,
//! priorityclasses, CSRs, PodDisruptionBudgets, RBAC roles and bindings.

use serde_json::{Value, json};

use super::Column;
use super::cells::{age, i, list, name, or_none, s};
use crate::kinds::Kind;

const ENDPOINTSLICE: &[Column] = &[
    ("Name", "string", 0),
    ("AddressType", "string", 0),
    ("Ports", "string", 0),
    ("Endpoints", "string", 0),
    ("Age", "string", 0),
];
const STORAGECLASS: &[Column] = &[
    ("Name", "string", 0),
    ("Provisioner", "string", 0),
    ("ReclaimPolicy", "string", 0),
    ("VolumeBindingMode", "string", 0),
    ("AllowVolumeExpansion", "string", 0),
    ("Age", "string", 0),
];
const INGRESS: &[Column] = &[
    ("Name", "string", 0),
    ("Class", "string", 0),
    ("Hosts", "string", 0),
    ("Address", "string", 0),
    ("Ports", "string", 0),
    ("Age", "string", 0),
];
const LEASE: &[Column] = &[
    ("Name", "string", 0),
    ("Holder", "string", 0),
    ("Age", "string", 0),
];
const PRIORITYCLASS: &[Column] = &[
    ("Name", "string", 0),
    ("Value", "integer", 0),
    ("Global-Default", "boolean", 0),
    ("Age", "string", 0),
    ("PreemptionPolicy", "string", 0),
];
const CSR: &[Column] = &[
    ("Name", "string", 0),
    ("Age", "string", 0),
    ("SignerName", "string", 0),
    ("Requestor", "string", 0),
    ("RequestedDuration", "string", 0),
    ("Condition", "string", 0),
];
const PDB: &[Column] = &[
    ("Name", "string", 0),
    ("Min Available", "string", 0),
    ("Max Unavailable", "string", 0),
    ("Allowed Disruptions", "integer", 0),
    ("Age", "string", 0),
];
const ROLE: &[Column] = &[("Name", "string", 0), ("Created At", "date", 0)];
const BINDING: &[Column] = &[
    ("Name", "string", 0),
    ("Role", "string", 0),
    ("Age", "string", 0),
    ("Users", "string", 1),
    ("Groups", "string", 1),
    ("ServiceAccounts", "string", 1),
];

const RBAC: &str = "rbac.authorization.k8s.io";

/// The columns of the kinds printed here.
pub fn columns(kind: &Kind) -> Option<&'static [Column]> {
    Some(match (kind.group, kind.kind) {
        ("discovery.k8s.io", "EndpointSlice") => ENDPOINTSLICE,
        ("storage.k8s.io", "StorageClass") => STORAGECLASS,
        ("networking.k8s.io", "Ingress") => INGRESS,
        ("coordination.k8s.io", "Lease") => LEASE,
        ("scheduling.k8s.io", "PriorityClass") => PRIORITYCLASS,
        ("certificates.k8s.io", "CertificateSigningRequest") => CSR,
        ("policy", "PodDisruptionBudget") => PDB,
        (RBAC, "Role" | "ClusterRole") => ROLE,
        (RBAC, "RoleBinding" | "ClusterRoleBinding") => BINDING,
        _ => return None,
    })
}

fn first_three(items: Vec<String>, empty: &str) -> Value {
    if items.is_empty() {
        return json!(empty);
    }
    let shown = items.len().min(3);
    let mut text = items[..shown].join(",");
    if items.len() > shown {
        text.push_str(&format!(" + {} more...", items.len() - shown));
    }
    json!(text)
}

/// An intstr field as kubectl prints it, `N/A` when unset.
fn int_or_string(o: &Value, pointer: &str) -> Value {
    match o.pointer(pointer) {
        Some(Value::Number(n)) => json!(n.to_string()),
        Some(Value::String(text)) => json!(text),
        _ => json!("N/A"),
    }
}

/// The cells of a kind printed here.
pub fn cells(kind: &Kind, o: &Value) -> Option<Vec<Value>> {
    Some(match (kind.group, kind.kind) {
        ("discovery.k8s.io", "EndpointSlice") => {
            let ports: Vec<String> = list(o, "/ports")
                .iter()
                .map(|p| i(p, "/port").to_string())
                .collect();
            let addresses: Vec<String> = list(o, "/endpoints")
                .iter()
                .flat_map(|e| list(e, "/addresses"))
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            vec![
                name(o),
                json!(s(o, "/addressType")),
                if ports.is_empty() {
                    json!("<unset>")
                } else {
                    json!(ports.join(","))
                },
                first_three(addresses, "<unset>"),
                age(o),
            ]
        }
        ("storage.k8s.io", "StorageClass") => {
            let default = s(
                o,
                "/metadata/annotations/storageclass.kubernetes.io~1is-default-class",
            ) == "true"
                || s(
                    o,
                    "/metadata/annotations/storageclass.beta.kubernetes.io~1is-default-class",
                ) == "true";
            let shown = if default {
                format!("{} (default)", s(o, "/metadata/name"))
            } else {
                s(o, "/metadata/name").to_string()
            };
            let or = |pointer: &str, fallback: &str| match s(o, pointer) {
                "" => fallback.to_string(),
                value => value.to_string(),
            };
            vec![
                json!(shown),
                json!(s(o, "/provisioner")),
                json!(or("/reclaimPolicy", "Delete")),
                json!(or("/volumeBindingMode", "Immediate")),
                json!((o.pointer("/allowVolumeExpansion") == Some(&json!(true))).to_string()),
                age(o),
            ]
        }
        ("networking.k8s.io", "Ingress") => {
            let hosts: Vec<&str> = list(o, "/spec/rules")
                .iter()
                .map(|r| s(r, "/host"))
                .filter(|h| !h.is_empty())
                .collect();
            let addresses: Vec<&str> = list(o, "/status/loadBalancer/ingress")
                .iter()
                .map(|a| {
                    if s(a, "/ip").is_empty() {
                        s(a, "/hostname")
                    } else {
                        s(a, "/ip")
                    }
                })
                .collect();
            let ports = if list(o, "/spec/tls").is_empty() {
                "80"
            } else {
                "80, 443"
            };
            vec![
                name(o),
                or_none(s(o, "/spec/ingressClassName")),
                json!(if hosts.is_empty() {
                    "*".to_string()
                } else {
                    hosts.join(",")
                }),
                json!(addresses.join(",")),
                json!(ports),
                age(o),
            ]
        }
        ("coordination.k8s.io", "Lease") => {
            vec![name(o), json!(s(o, "/spec/holderIdentity")), age(o)]
        }
        ("scheduling.k8s.io", "PriorityClass") => vec![
            name(o),
            json!(i(o, "/value")),
            json!(o.pointer("/globalDefault") == Some(&json!(true))),
            age(o),
            json!(match s(o, "/preemptionPolicy") {
                "" => "PreemptLowerPriority",
                policy => policy,
            }),
        ],
        ("certificates.k8s.io", "CertificateSigningRequest") => csr(o),
        ("policy", "PodDisruptionBudget") => vec![
            name(o),
            int_or_string(o, "/spec/minAvailable"),
            int_or_string(o, "/spec/maxUnavailable"),
            json!(i(o, "/status/disruptionsAllowed")),
            age(o),
        ],
        (RBAC, "Role" | "ClusterRole") => {
            vec![name(o), json!(s(o, "/metadata/creationTimestamp"))]
        }
        (RBAC, "RoleBinding" | "ClusterRoleBinding") => {
            let of = |wanted: &str| -> Vec<String> {
                list(o, "/subjects")
                    .iter()
                    .filter(|subject| s(subject, "/kind") == wanted)
                    .map(|subject| match wanted {
                        "ServiceAccount" => {
                            format!("{}/{}", s(subject, "/namespace"), s(subject, "/name"))
                        }
                        _ => s(subject, "/name").to_string(),
                    })
                    .collect()
            };
            vec![
                name(o),
                json!(format!(
                    "{}/{}",
                    s(o, "/roleRef/kind"),
                    s(o, "/roleRef/name")
                )),
                age(o),
                json!(of("User").join(", ")),
                json!(of("Group").join(", ")),
                json!(of("ServiceAccount").join(", ")),
            ]
        }
        _ => return None,
    })
}

fn csr(o: &Value) -> Vec<Value> {
    let mut conditions: Vec<&str> = list(o, "/status/conditions")
        .iter()
        .map(|c| s(c, "/type"))
        .filter(|t| !t.is_empty())
        .collect();
    if !s(o, "/status/certificate").is_empty() {
        conditions.push("Issued");
    }
    let condition = if conditions.is_empty() {
        "Pending".to_string()
    } else {
        conditions.join(",")
    };
    let requested = match o.pointer("/spec/expirationSeconds").and_then(Value::as_i64) {
        Some(seconds) => crate::table::human_age(seconds),
        None => "<none>".into(),
    };
    vec![
        name(o),
        age(o),
        json!(s(o, "/spec/signerName")),
        json!(s(o, "/spec/username")),
        json!(requested),
        json!(condition),
    ]
}

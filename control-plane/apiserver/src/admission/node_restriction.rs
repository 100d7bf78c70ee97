//! NodeRestriction (as kubeadm and k3s enable it): a node's user may change only its own Node
//! (not its owner references, nor labels outside the kubelet's set), only the status of pods
//! bound to it, create only mirror pods of its own that refer to no secrets, config maps,
//! claims or service account, delete and evict only its own pods, create only its own Lease,
//! and ask for tokens only bound to its own pods. Other users pass untouched.

use futures::future::BoxFuture;
use serde_json::Value;

use super::forbid::forbidden;
use super::service_account::MIRROR_ANNOTATION;
use super::{Attributes, Operation, Plugin};
use crate::authz::node::graph::{Reached, references};
use crate::authz::node::node_identity;
use crate::server::RequestUser;
use crate::status::{ApiError, ApiResult};

/// Labels a kubelet sets on its own Node although they are in a `kubernetes.io` namespace.
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
];
/// Label namespaces a kubelet may use freely.
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// The plugin.
pub struct NodeRestriction;

impl Plugin for NodeRestriction {
    fn name(&self) -> &'static str {
        "NodeRestriction"
    }

    fn validate<'a>(
        &'a self,
        attributes: &'a Attributes<'a>,
        object: Option<&'a Value>,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let Some(node) = node_identity(attributes.user) else {
                return Ok(());
            };
            let refuse = |why: String| Err(forbidden(attributes, object, &why));
            if node.is_empty() {
                return refuse(format!(
                    "could not determine node from user {:?}",
                    attributes.user.name
                ));
            }
            match (attributes.kind.group, attributes.kind.plural) {
                ("", "pods") => pod(attributes, object, node)
                    .map_err(|why| forbidden(attributes, object.or(attributes.old), &why)),
                ("", "nodes") => node_object(attributes, object, node)
                    .map_err(|why| forbidden(attributes, object.or(attributes.old), &why)),
                ("coordination.k8s.io", "leases")
                    if attributes.operation == Operation::Create
                        && name_of(object, attributes) != node =>
                {
                    refuse(
                        "can only access node lease with the same name as the requesting node"
                            .into(),
                    )
                }
                _ => Ok(()),
            }
        })
    }
}

fn name_of<'a>(object: Option<&'a Value>, attributes: &'a Attributes<'a>) -> &'a str {
    object
        .and_then(|o| o.pointer("/metadata/name"))
        .and_then(Value::as_str)
        .unwrap_or(attributes.name)
}

fn node_name_of(pod: Option<&Value>) -> &str {
    pod.and_then(|p| p.pointer("/spec/nodeName"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn pod(attributes: &Attributes<'_>, object: Option<&Value>, node: &str) -> Result<(), String> {
    match (attributes.subresource, attributes.operation) {
        (None, Operation::Create) => mirror_pod(object, node),
        (None, Operation::Delete) => match node_name_of(attributes.old) == node {
            true => Ok(()),
            false => Err(format!(
                "node {node:?} can only delete pods with spec.nodeName set to itself"
            )),
        },
        (None, operation) => Err(format!(
            "unexpected operation {:?}, node {node:?} can only create and delete mirror pods",
            operation_name(operation)
        )),
        (Some("status"), _) => match node_name_of(attributes.old) == node {
            true => Ok(()),
            false => Err(format!(
                "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
            )),
        },
        (Some(other), _) => Err(format!("unexpected subresource {other:?}")),
    }
}

fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
    }
}

/// A node creates only mirror pods of its own static pods.
fn mirror_pod(pod: Option<&Value>, node: &str) -> Result<(), String> {
    let Some(pod) = pod else {
        return Ok(());
    };
    let mirror = pod
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION));
    if !mirror {
        return Err(format!(
            "pod does not have \"{MIRROR_ANNOTATION}\" annotation, node {node:?} can only create mirror pods"
        ));
    }
    if node_name_of(Some(pod)) != node {
        return Err(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ));
    }
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if owners.len() > 1 {
        return Err(format!(
            "node {node:?} can only create pods with a single owner reference set to itself"
        ));
    }
    if let Some(owner) = owners.first() {
        let field = |f: &str| owner.get(f).and_then(Value::as_str).unwrap_or("");
        if field("apiVersion") != "v1" || field("kind") != "Node" || field("name") != node {
            return Err(format!(
                "node {node:?} can only create pods with an owner reference set to itself"
            ));
        }
    }
    let spec = pod.get("spec");
    let account = spec
        .and_then(|s| s.get("serviceAccountName"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !account.is_empty() {
        return Err(format!(
            "node {node:?} can not create pods that reference a service account"
        ));
    }
    let uses = references(pod);
    for (what, kind) in [
        ("secrets", Reached::Secret),
        ("configmaps", Reached::ConfigMap),
        ("persistentvolumeclaims", Reached::Claim),
    ] {
        if uses.iter().any(|(k, _)| *k == kind) {
            return Err(format!(
                "node {node:?} can not create pods that reference {what}"
            ));
        }
    }
    Ok(())
}

fn node_object(
    attributes: &Attributes<'_>,
    object: Option<&Value>,
    node: &str,
) -> Result<(), String> {
    let requested = name_of(object, attributes);
    if requested != node {
        return Err(format!(
            "node {node:?} is not allowed to modify node {requested:?}"
        ));
    }
    let labels = |v: Option<&Value>| {
        v.and_then(|o| o.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    match attributes.operation {
        Operation::Create => {
            let forbidden: Vec<String> = labels(object)
                .keys()
                .filter(|k| forbidden_label(k))
                .cloned()
                .collect();
            if !forbidden.is_empty() {
                return Err(format!(
                    "node {node:?} is not allowed to set the following labels: {}",
                    forbidden.join(", ")
                ));
            }
        }
        Operation::Update => {
            let owners = |v: Option<&Value>| {
                v.and_then(|o| o.pointer("/metadata/ownerReferences"))
                    .cloned()
            };
            if owners(object) != owners(attributes.old) {
                return Err(format!(
                    "node {node:?} is not allowed to modify ownerReferences"
                ));
            }
            let (new, old) = (labels(object), labels(attributes.old));
            let mut modified: Vec<String> = new
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .chain(old.keys().filter(|k| !new.contains_key(*k)).cloned())
                .filter(|k| forbidden_label(k))
                .collect();
            modified.sort();
            modified.dedup();
            if !modified.is_empty() {
                return Err(format!(
                    "is not allowed to modify labels: {}",
                    modified.join(", ")
                ));
            }
        }
        Operation::Delete => {}
    }
    Ok(())
}

/// Upstream's `getForbiddenLabels`: the node-restriction namespace always, and the kubernetes.io
/// and k8s.io namespaces except the kubelet's own labels.
fn forbidden_label(key: &str) -> bool {
    let Some((namespace, _)) = key.split_once('/') else {
        return false;
    };
    let within = |domain: &str| namespace == domain || namespace.ends_with(&format!(".{domain}"));
    if within("node-restriction.kubernetes.io") {
        return true;
    }
    if !(within("kubernetes.io") || within("k8s.io")) {
        return false;
    }
    !(KUBELET_LABELS.contains(&key) || KUBELET_LABEL_NAMESPACES.iter().any(|n| within(n)))
}

/// A node's TokenRequest must be bound to a pod bound to it (`pod` is the bound object as
/// stored, with the UID the request gave).
pub fn check_token_request(
    user: &RequestUser,
    account: &str,
    reference: Option<&Value>,
    pod: Option<&Value>,
) -> ApiResult<()> {
    let Some(node) = node_identity(user) else {
        return Ok(());
    };
    let refuse = |why: &str| Err(ApiError::forbidden("", "serviceaccounts", account, why));
    let Some(reference) =
        reference.filter(|r| r.get("kind").and_then(Value::as_str) == Some("Pod"))
    else {
        return refuse("node requested token not bound to a pod");
    };
    let uid = reference.get("uid").and_then(Value::as_str).unwrap_or("");
    if uid.is_empty() {
        return refuse("node requested token with a pod binding without a uid");
    }
    if node_name_of(pod) != node {
        return refuse("node requested token bound to a pod scheduled on a different node");
    }
    Ok(())
}

/// A node evicts only pods bound to it.
pub fn check_eviction(user: &RequestUser, name: &str, pod: &Value) -> ApiResult<()> {
    let Some(node) = node_identity(user) else {
        return Ok(());
    };
    if node_name_of(Some(pod)) == node {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "",
        "pods/eviction",
        name,
        &format!("node {node:?} can only evict pods with spec.nodeName set to itself"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mirror_pods_only_and_without_references() {
        let pod = |annotations: Value, spec: Value| json!({"metadata": {"name": "m", "annotations": annotations}, "spec": spec});
        let mirror = json!({MIRROR_ANNOTATION: "hash"});
        assert!(mirror_pod(Some(&pod(mirror.clone(), json!({"nodeName": "n1"}))), "n1").is_ok());
        assert_eq!(
            mirror_pod(Some(&pod(json!({}), json!({"nodeName": "n1"}))), "n1").unwrap_err(),
            "pod does not have \"kubernetes.io/config.mirror\" annotation, node \"n1\" can only create mirror pods"
        );
        assert_eq!(
            mirror_pod(Some(&pod(mirror.clone(), json!({"nodeName": "n2"}))), "n1").unwrap_err(),
            "node \"n1\" can only create pods with spec.nodeName set to itself"
        );
        let with_secret =
            json!({"nodeName": "n1", "volumes": [{"name": "v", "secret": {"secretName": "s"}}]});
        assert_eq!(
            mirror_pod(Some(&pod(mirror.clone(), with_secret)), "n1").unwrap_err(),
            "node \"n1\" can not create pods that reference secrets"
        );
        let with_account = json!({"nodeName": "n1", "serviceAccountName": "default"});
        assert_eq!(
            mirror_pod(Some(&pod(mirror, with_account)), "n1").unwrap_err(),
            "node \"n1\" can not create pods that reference a service account"
        );
    }

    #[test]
    fn kubelet_labels_are_allowed_and_restricted_ones_are_not() {
        for allowed in [
            "kubernetes.io/hostname",
            "node.kubernetes.io/exclude-from-external-load-balancers",
            "example.com/role",
            "plain",
        ] {
            assert!(!forbidden_label(allowed), "{allowed}");
        }
        for refused in [
            "node-restriction.kubernetes.io/team",
            "node-role.kubernetes.io/control-plane",
            "example.k8s.io/x",
        ] {
            assert!(forbidden_label(refused), "{refused}");
        }
    }
}

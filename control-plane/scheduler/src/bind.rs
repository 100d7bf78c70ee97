//! Binding and status writes: `POST pods/{name}/binding` (DefaultBinder) and the pod's
//! `PodScheduled` condition and `nominatedNodeName` when it cannot be scheduled.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// Binds `namespace/name` (with `uid` as precondition) to `node`.
pub async fn bind(
    client: kube::Client,
    namespace: &str,
    name: &str,
    uid: &str,
    node: &str,
) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    pods.create_subresource::<serde_json::Value, serde_json::Value>(
        "binding",
        name,
        &PostParams::default(),
        &binding,
    )
    .await?;
    Ok(())
}

/// The condition an unschedulable pod gets: `PodScheduled=False`, `reason`, `message`; the
/// transition time kept when the status was already False.
pub fn unschedulable_patch(
    pod: &Pod,
    reason: &str,
    message: &str,
    nominated: Option<&str>,
) -> Option<serde_json::Value> {
    let status = pod.status.as_ref();
    let existing = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
    let same = existing.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message)
    });
    let current_nominated = status
        .and_then(|s| s.nominated_node_name.as_deref())
        .unwrap_or_default();
    let nominated_changes = nominated.is_some_and(|n| n != current_nominated);
    if same && !nominated_changes {
        return None;
    }
    let transition = existing
        .filter(|c| c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_else(|| {
            jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .map(|t| t.to_string())
                .unwrap_or_default()
        });
    let mut patch = json!({
        "status": {
            "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": reason,
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": transition,
            }],
        },
    });
    if let Some(node) = nominated {
        patch["status"]["nominatedNodeName"] = json!(node);
    }
    Some(patch)
}

/// Writes a status patch made by [`unschedulable_patch`] (strategic merge, conditions merged
/// by type).
pub async fn patch_status(
    client: kube::Client,
    namespace: &str,
    name: &str,
    patch: serde_json::Value,
) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    pods.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    Ok(())
}

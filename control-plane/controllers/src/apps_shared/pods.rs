//! Pods made from a workload's template with a controllerRef, pod readiness as upstream's
//! `podutil`, and claiming (adopting orphans the selector matches, releasing owned pods it no
//! longer matches) as `ClaimPods` does.

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use serde_json::json;

use super::selector;
pub use crate::podutil::{controller_of, is_ready, is_terminating, phase};

/// A controllerRef to `owner` (`apps/v1`, kind `kind`), with blockOwnerDeletion.
pub fn controller_ref(owner: &ObjectMeta, kind: &str) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// A pod from `template` (labels, annotations, finalizers, spec) owned by `owner`, in `namespace`.
pub fn from_template(template: &PodTemplateSpec, namespace: &str, owner: OwnerReference) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// When the Ready condition last became True, if it is True (the epoch when unknown).
fn ready_since(pod: &Pod) -> Option<jiff::Timestamp> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        condition
            .last_transition_time
            .as_ref()
            .map_or(jiff::Timestamp::UNIX_EPOCH, |t| t.0),
    )
}

/// Whether the pod has been Ready for `min_ready_seconds` at `now` (`podutil.IsPodAvailable`).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    let Some(since) = ready_since(pod) else {
        return false;
    };
    min_ready_seconds <= 0
        || since + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds)) <= now
}

/// How long until a Ready pod becomes available, when it is Ready but not yet available.
pub fn until_available(
    pod: &Pod,
    min_ready_seconds: i32,
    now: jiff::Timestamp,
) -> Option<std::time::Duration> {
    let since = ready_since(pod)?;
    let at = since + jiff::SignedDuration::from_secs(i64::from(min_ready_seconds));
    let left = at.duration_since(now);
    (left.is_positive()).then(|| left.unsigned_abs() + std::time::Duration::from_millis(50))
}

/// The outcome of claiming pods.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Pods now controlled by the owner.
    pub pods: Vec<Pod>,
}

/// `ClaimPods`: of `candidates` (the namespace's pods), those controlled by `owner_uid` and
/// matched by `selector` are kept; orphans matched are adopted (unless the owner is being
/// deleted); owned ones no longer matched are released. Failures to adopt or release are
/// skipped (the pod's next event brings the owner back).
pub async fn claim(
    api: &Api<Pod>,
    owner: &OwnerReference,
    owner_deleting: bool,
    selector: &LabelSelector,
    candidates: impl IntoIterator<Item = Pod>,
) -> Claimed {
    let mut claimed = Claimed::default();
    for pod in candidates {
        let matched = !selector::is_empty(selector)
            && selector::matches(selector, pod.metadata.labels.as_ref());
        let name = pod.metadata.name.clone().unwrap_or_default();
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == owner.uid => {
                if matched || owner_deleting {
                    claimed.pods.push(pod);
                    continue;
                }
                if is_terminating(&pod) {
                    continue;
                }
                let refs: Vec<&OwnerReference> = pod
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| r.uid != owner.uid)
                    .collect();
                let patch = json!({"metadata": {"uid": pod.metadata.uid, "ownerReferences": refs}});
                if let Err(error) = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    tracing::debug!(pod = %name, %error, "release failed");
                }
            }
            Some(_) => {}
            None => {
                if !matched || owner_deleting || is_terminating(&pod) {
                    continue;
                }
                let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                refs.push(owner.clone());
                let patch = json!({"metadata": {"uid": pod.metadata.uid, "ownerReferences": refs}});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(adopted) => claimed.pods.push(adopted),
                    Err(error) => tracing::debug!(pod = %name, %error, "adoption failed"),
                }
            }
        }
    }
    claimed
}

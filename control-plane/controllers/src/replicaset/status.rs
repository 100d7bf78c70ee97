//! A replica owner's status from its pods (upstream's calculateStatus).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::kind::{OwnerCondition, ReplicaKind, ReplicaStatus};
use super::podutil;
use super::selector::Selector;

/// The status `owner` should have with `pods` (its active pods); `failure` is the error of
/// creating or deleting pods (`deficit`: whether pods were missing), which sets ReplicaFailure.
pub fn calculate<K: ReplicaKind>(
    owner: &K,
    pods: &[Arc<Pod>],
    failure: Option<(&str, bool)>,
) -> ReplicaStatus {
    let mut status = owner.replica_status();
    let template_labels = owner
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully = Selector::from_map(&template_labels);
    let now = jiff::Timestamp::now();
    let min_ready = owner.min_ready_seconds();
    let mut fully_labeled = 0;
    let mut ready = 0;
    let mut available = 0;
    for pod in pods {
        if fully.matches(pod.metadata.labels.as_ref()) {
            fully_labeled += 1;
        }
        if podutil::is_ready(pod) {
            ready += 1;
            if podutil::is_available(pod, min_ready, now) {
                available += 1;
            }
        }
    }
    let has_failure = status
        .conditions
        .iter()
        .any(|c| c.type_ == "ReplicaFailure");
    match failure {
        Some((message, deficit)) if !has_failure => status.conditions.push(OwnerCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            last_transition_time: Some(podutil::time_string(now)),
            reason: Some(
                if deficit {
                    "FailedCreate"
                } else {
                    "FailedDelete"
                }
                .into(),
            ),
            message: Some(message.into()),
        }),
        None if has_failure => status.conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    status.replicas = pods.len() as i32;
    status.fully_labeled_replicas = fully_labeled;
    status.ready_replicas = ready;
    status.available_replicas = available;
    status
}

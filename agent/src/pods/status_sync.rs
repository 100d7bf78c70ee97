//! The status sync (the kubelet's status manager): pushes the status each pod worker computes
//! to the API server as a merge patch of what changed since the last push, and finishes the
//! graceful deletion of pods whose workers have stopped them (a delete with grace 0 and the
//! pod's UID as precondition). Static pods' status goes to their mirror pods
//! ([`crate::node::mirror_pods`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::PodWorkers;
use crate::source::{DesiredPod, SourceName};

/// How often the sync looks again without being woken (failed pushes are retried then).
const RESYNC: Duration = Duration::from_secs(10);

/// The conditions the agent owns; the others (PodScheduled, DisruptionTarget, readiness gates)
/// belong to other writers and are kept as the API server has them.
const OWN_CONDITIONS: [&str; 4] = [
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
];

/// The desired pods as the merger last gave them, by UID.
pub type DesiredSet = Arc<BTreeMap<String, DesiredPod>>;

/// Keeps each condition's lastTransitionTime from `old` where its status did not change, as
/// the status manager does: the workers stamp every computation with the current time.
pub fn carry_transition_times(old: Option<&PodStatus>, new: &mut PodStatus) {
    let old = old.and_then(|s| s.conditions.as_ref());
    for condition in new.conditions.iter_mut().flatten() {
        if let Some(previous) = old
            .into_iter()
            .flatten()
            .find(|c| c.type_ == condition.type_ && c.status == condition.status)
        {
            condition.last_transition_time = previous.last_transition_time.clone();
        }
    }
}

/// Adds the conditions of `api` that the agent does not own to `new`.
pub fn keep_foreign_conditions(api: Option<&PodStatus>, new: &mut PodStatus) {
    let foreign: Vec<_> = api
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| !OWN_CONDITIONS.contains(&c.type_.as_str()))
        .filter(|c| !new.conditions.iter().flatten().any(|n| n.type_ == c.type_))
        .cloned()
        .collect();
    if !foreign.is_empty() {
        new.conditions.get_or_insert_with(Vec::new).extend(foreign);
    }
}

/// The JSON merge patch that turns `old` into `new`: changed and new keys, objects compared key
/// by key, lists whole, and null for a key `new` dropped. None when nothing changed.
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for (key, value) in new {
                match old.get(key) {
                    Some(previous) => {
                        if let Some(diff) = merge_diff(previous, value) {
                            patch.insert(key.clone(), diff);
                        }
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in old.keys() {
                if !new.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        (old, new) if old == new => None,
        (_, new) => Some(new.clone()),
    }
}

/// `value` with only the keys `like` has (at the top level): the API server's status seen as
/// far as the agent writes it, so that a first push removes nothing another writer set.
fn only_keys_of(value: &Value, like: &Value) -> Value {
    match (value, like) {
        (Value::Object(value), Value::Object(like)) => Value::Object(
            value
                .iter()
                .filter(|(k, _)| like.contains_key(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        (value, _) => value.clone(),
    }
}

/// The merge patch (`{"status": ...}`) that brings `api`, the status the API server holds, to
/// the worker's `status`: transition times carried, other writers' conditions kept, readiness
/// gates judged, and only the keys the agent writes compared. `None` when they agree.
pub fn status_patch(
    spec: Option<&k8s_openapi::api::core::v1::PodSpec>,
    api: Option<&PodStatus>,
    mut status: PodStatus,
) -> Option<Value> {
    keep_foreign_conditions(api, &mut status);
    super::readiness_gates::apply(spec, &mut status);
    carry_transition_times(api, &mut status);
    let new = serde_json::to_value(&status).ok()?;
    let old = serde_json::to_value(api.cloned().unwrap_or_default()).ok()?;
    let diff = merge_diff(&only_keys_of(&old, &new), &new)?;
    Some(serde_json::json!({ "status": diff }))
}

/// The status sync of one node.
pub struct StatusSync {
    client: kube::Client,
    workers: Arc<PodWorkers>,
    desired: watch::Receiver<DesiredSet>,
    /// What was pushed last, by UID.
    pushed: HashMap<String, PodStatus>,
    /// Pods whose final delete was sent.
    deleted: HashSet<String>,
}

impl StatusSync {
    /// A sync of the statuses of `workers`' pods that came from the API (the desired set as
    /// `desired` shows it) through `client`.
    pub fn new(
        client: kube::Client,
        workers: Arc<PodWorkers>,
        desired: watch::Receiver<DesiredSet>,
    ) -> Self {
        StatusSync {
            client,
            workers,
            desired,
            pushed: HashMap::new(),
            deleted: HashSet::new(),
        }
    }

    /// Runs until the desired set's sender is gone: wakes on every recorded status, finished
    /// worker and desired set, and every [`RESYNC`].
    pub async fn run(mut self) {
        let ctx = Arc::clone(self.workers.context());
        loop {
            self.sync_all().await;
            tokio::select! {
                _ = ctx.store.changed() => {}
                changed = self.desired.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
    }

    async fn sync_all(&mut self) {
        let desired = self.desired.borrow_and_update().clone();
        self.pushed.retain(|uid, _| desired.contains_key(uid));
        self.deleted.retain(|uid| desired.contains_key(uid));
        for (uid, pod) in desired.iter() {
            if pod.source != SourceName::Api {
                continue; // static pods: their mirror pods carry their status
            }
            if pod.pod.metadata.deletion_timestamp.is_some() && !self.workers.has_worker(uid) {
                self.finish_deletion(uid, &pod.pod).await;
                continue;
            }
            self.push(uid, &pod.pod).await;
        }
    }

    /// Pushes the worker's latest status of `pod` if it differs from what the API server has.
    async fn push(&mut self, uid: &str, pod: &Pod) {
        let Some(record) = self.workers.context().store.get(uid) else {
            return;
        };
        let api_status = pod.status.as_ref();
        let base = self.pushed.get(uid).or(api_status);
        let mut status = record.status;
        keep_foreign_conditions(api_status, &mut status);
        super::readiness_gates::apply(pod.spec.as_ref(), &mut status);
        carry_transition_times(base, &mut status);
        let (Ok(new), Ok(old)) = (
            serde_json::to_value(&status),
            serde_json::to_value(base.cloned().unwrap_or_default()),
        ) else {
            return;
        };
        let old = if self.pushed.contains_key(uid) {
            old
        } else {
            only_keys_of(&old, &new)
        };
        let Some(diff) = merge_diff(&old, &new) else {
            self.pushed.insert(uid.to_string(), status);
            return;
        };
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({ "status": diff });
        match pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::debug!(pod = %format!("{namespace}/{name}"), patch = %patch, "pod status pushed");
                self.pushed.insert(uid.to_string(), status);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tracing::debug!(pod = %format!("{namespace}/{name}"), "pod gone before its status was pushed");
            }
            Err(error) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), %error, "pod status not pushed; retrying");
            }
        }
    }

    /// Deletes a stopped pod marked for deletion: grace 0, only if it is still the same pod.
    async fn finish_deletion(&mut self, uid: &str, pod: &Pod) {
        if self.deleted.contains(uid) {
            return;
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{namespace}/{name}"), "pod stopped and deleted");
                self.deleted.insert(uid.to_string());
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                // Gone already, or a new pod of that name: nothing of this one is left to delete.
                self.deleted.insert(uid.to_string());
            }
            Err(error) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), %error, "stopped pod not deleted; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(value: Value) -> PodStatus {
        serde_json::from_value(value).expect("test status")
    }

    #[test]
    fn the_diff_holds_only_what_changed() {
        let old = json!({"phase": "Pending", "podIP": "10.0.0.2", "conditions": [{"type": "Ready", "status": "False"}], "reason": "x"});
        let new = json!({"phase": "Running", "podIP": "10.0.0.2", "conditions": [{"type": "Ready", "status": "True"}]});
        assert_eq!(
            merge_diff(&old, &new),
            Some(
                json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}], "reason": null})
            )
        );
        assert_eq!(merge_diff(&new, &new), None);
        // A first push removes nothing that another writer set.
        let api = json!({"phase": "Pending", "nominatedNodeName": "n"});
        assert_eq!(
            merge_diff(&only_keys_of(&api, &new), &new)
                .and_then(|d| d.get("nominatedNodeName").cloned()),
            None
        );
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let old = status(json!({"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Initialized", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ]}));
        let mut new = status(json!({"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-02-02T00:00:00Z"},
            {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-02-02T00:00:00Z"}
        ]}));
        carry_transition_times(Some(&old), &mut new);
        keep_foreign_conditions(Some(&old), &mut new);
        let value = serde_json::to_value(&new).expect("json");
        assert_eq!(
            value["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            value["conditions"][1]["lastTransitionTime"],
            "2026-02-02T00:00:00Z"
        );
        assert_eq!(value["conditions"][2]["type"], "PodScheduled");
        assert_eq!(value["conditions"].as_array().map(Vec::len), Some(3));
    }
}

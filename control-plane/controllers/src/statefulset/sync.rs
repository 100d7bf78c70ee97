//! One StatefulSet's sync (`updateStatefulSet`): claim pods, get revisions, then — once earlier
//! writes are in the cache — create missing ordinals (in order, each after the previous is
//! Running and Ready, when OrderedReady), delete condemned ones from the highest ordinal, and
//! roll updates from the highest ordinal down to the partition; finally write the status.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::identity::{self, POD_INDEX_LABEL, POD_NAME_LABEL};
use super::revisions::{self, Revisions};
use super::{KIND, Shared, claims};
use crate::apps_shared::SyncError;
use crate::apps_shared::history;
use crate::apps_shared::pods::{self, controller_ref};
use crate::events::{error_text, related};
use crate::queue::Key;

fn running_and_ready(pod: &Pod) -> bool {
    pods::phase(pod) == "Running" && pods::is_ready(pod)
}

fn healthy(pod: &Pod) -> bool {
    running_and_ready(pod) && !pods::is_terminating(pod)
}

/// `recordPodEvent`: `Successful<Verb>` / `Failed<Verb>` about the set, as upstream words it.
fn record_pod_event(
    shared: &Shared,
    set: &StatefulSet,
    verb: &str,
    pod: &str,
    error: Option<&kube::Error>,
) {
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let title = verb_title(verb);
    let (reason, note) = match error {
        None => (
            format!("Successful{title}"),
            format!("{verb} Pod {pod} in StatefulSet {set_name} successful"),
        ),
        Some(error) => (
            format!("Failed{title}"),
            format!(
                "{verb} Pod {pod} in StatefulSet {set_name} failed error: {}",
                error_text(error)
            ),
        ),
    };
    let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
    let pod = related("v1", "Pod", namespace, pod);
    shared.events.record(
        set.object_ref(&()),
        Some(pod),
        error.is_some(),
        &reason,
        note,
    );
}

/// `create` → `Create`.
fn verb_title(verb: &str) -> String {
    let mut chars = verb.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Syncs the StatefulSet `key`; `Ok(Some(delay))` asks to look again after `delay`.
pub async fn sync(shared: &Shared, key: &Key) -> Result<Option<Duration>, SyncError> {
    let Some(set) = shared
        .sets
        .get(&ObjectRef::new(&key.name).within(&key.namespace))
    else {
        shared.expectations.forget(key);
        return Ok(None);
    };
    let set = (*set).clone();
    let Some(spec) = set.spec.clone() else {
        return Ok(None);
    };
    let deleting = set.metadata.deletion_timestamp.is_some();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &key.namespace);
    let owner = controller_ref(&set.metadata, KIND);
    // Checked before the cache is read: what is read must be at least as new as the check.
    let satisfied = shared.expectations.satisfied(key, &shared.pods);
    let candidates = shared
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(key.namespace.as_str()))
        .map(|p| (*p).clone())
        .collect::<Vec<_>>();
    let claimed = pods::claim(&api, &owner, deleting, &spec.selector, candidates)
        .await
        .pods;
    if deleting {
        return Ok(None);
    }
    let revisions = revisions::get(shared, &set).await?;
    let set_name = key.name.clone();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let now = jiff::Timestamp::now();
    let mut slots: Vec<Option<Pod>> = vec![None; usize::try_from(replicas).unwrap_or(0)];
    let mut condemned: Vec<(i32, Pod)> = Vec::new();
    for pod in &claimed {
        let Some(ordinal) = identity::ordinal(&set_name, pod) else {
            continue;
        };
        if ordinal < replicas {
            if let Some(slot) = usize::try_from(ordinal).ok().and_then(|i| slots.get_mut(i)) {
                *slot = Some(pod.clone());
            }
        } else {
            condemned.push((ordinal, pod.clone()));
        }
    }
    condemned.sort_by_key(|c| std::cmp::Reverse(c.0));
    let mut status = status_of(&set, &revisions, &claimed, min_ready, now);
    let mut again: Option<Duration> = None;
    if satisfied {
        again = act(
            shared, key, &api, &set, &revisions, &mut slots, &condemned, now,
        )
        .await?;
    }
    let live: BTreeSet<String> = claimed
        .iter()
        .map(|p| identity::revision(p).to_string())
        .collect();
    revisions::truncate(shared, &set, &revisions, &live).await?;
    complete_rolling_update(&set, &mut status);
    write_status(shared, &set, status).await?;
    Ok(again)
}

/// Creates, deletes and updates pods; returns when to look again for minReadySeconds.
#[allow(clippy::too_many_arguments)]
async fn act(
    shared: &Shared,
    key: &Key,
    api: &Api<Pod>,
    set: &StatefulSet,
    revisions: &Revisions,
    slots: &mut [Option<Pod>],
    condemned: &[(i32, Pod)],
    now: jiff::Timestamp,
) -> Result<Option<Duration>, SyncError> {
    let spec = set.spec.clone().unwrap_or_default();
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        != Some("OnDelete");
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let update_name = revisions.update.metadata.name.clone().unwrap_or_default();
    let current_name = revisions.current.metadata.name.clone().unwrap_or_default();
    let current_template =
        history::template_of(&revisions.current).unwrap_or(spec.template.clone());
    let first_unhealthy = slots
        .iter()
        .flatten()
        .chain(condemned.iter().map(|(_, p)| p))
        .find(|p| !healthy(p))
        .and_then(|p| p.metadata.name.clone());

    for (index, slot) in slots.iter_mut().enumerate() {
        let ordinal = i32::try_from(index).unwrap_or(i32::MAX);
        let existing = slot.take();
        let Some(pod) = existing else {
            // `newVersionedStatefulSetPod`: below the partition a pod is made at the current
            // revision, at or above it at the update revision.
            let (template, revision) = if rolling && ordinal < partition {
                (&current_template, current_name.as_str())
            } else {
                (&spec.template, update_name.as_str())
            };
            let pod = identity::new_pod(set, template, revision, ordinal);
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            if let Err(error) = claims::create_missing(shared, set, ordinal).await {
                if let SyncError::Api(error) = &error {
                    record_pod_event(shared, set, "create", &pod_name, Some(error));
                }
                return Err(error);
            }
            match api.create(&PostParams::default(), &pod).await {
                Ok(created) => {
                    tracing::debug!(statefulset = %key, pod = %pod_name, "created pod");
                    shared.expectations.created(key, &created);
                    record_pod_event(shared, set, "create", &pod_name, None);
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => {
                    record_pod_event(shared, set, "create", &pod_name, Some(&error));
                    return Err(error.into());
                }
            }
            if monotonic {
                return Ok(None);
            }
            continue;
        };
        *slot = Some(pod.clone());
        if matches!(pods::phase(&pod), "Failed" | "Succeeded") && !pods::is_terminating(&pod) {
            // A pod that ended is replaced under the same name.
            let set_name = set.metadata.name.as_deref().unwrap_or_default();
            let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            let (failed, reason, what) = if pods::phase(&pod) == "Failed" {
                (true, "RecreatingFailedPod", "failed")
            } else {
                (false, "RecreatingTerminatedPod", "terminated")
            };
            shared.events.record(
                set.object_ref(&()),
                Some(related("v1", "Pod", namespace, pod_name)),
                failed,
                reason,
                format!("StatefulSet {namespace}/{set_name} is recreating {what} Pod {pod_name}"),
            );
            delete(shared, key, api, set, &pod).await?;
            if monotonic {
                return Ok(None);
            }
            continue;
        }
        if pods::is_terminating(&pod) && monotonic {
            return Ok(None);
        }
        if !running_and_ready(&pod) && monotonic {
            return Ok(None);
        }
        if !pods::is_available(&pod, min_ready, now) && monotonic {
            return Ok(pods::until_available(&pod, min_ready, now));
        }
        ensure_identity(shared, api, set, &pod, ordinal).await?;
        claims::create_missing(shared, set, ordinal).await?;
        claims::update_owner_refs(shared, set, &pod, ordinal, false).await?;
    }

    for (ordinal, pod) in condemned {
        if pods::is_terminating(pod) {
            if monotonic {
                return Ok(None);
            }
            continue;
        }
        if !running_and_ready(pod) && monotonic && pod.metadata.name != first_unhealthy {
            return Ok(None);
        }
        claims::update_owner_refs(shared, set, pod, *ordinal, true).await?;
        delete(shared, key, api, set, pod).await?;
        if monotonic {
            return Ok(None);
        }
    }

    if !rolling {
        return Ok(None);
    }
    // One pod at a time from the highest ordinal down to the partition.
    for index in (0..slots.len()).rev() {
        let ordinal = i32::try_from(index).unwrap_or(i32::MAX);
        if ordinal < partition {
            break;
        }
        let Some(pod) = &slots[index] else {
            return Ok(None);
        };
        if identity::revision(pod) != update_name && !pods::is_terminating(pod) {
            delete(shared, key, api, set, pod).await?;
            return Ok(None);
        }
        if !healthy(pod) || !pods::is_available(pod, min_ready, now) {
            return Ok(pods::until_available(pod, min_ready, now));
        }
    }
    Ok(None)
}

/// Puts back the identity labels if someone removed them (`updateIdentity`).
async fn ensure_identity(
    shared: &Shared,
    api: &Api<Pod>,
    set: &StatefulSet,
    pod: &Pod,
    ordinal: i32,
) -> Result<(), SyncError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let index = ordinal.to_string();
    if labels.get(POD_NAME_LABEL) == Some(&name) && labels.get(POD_INDEX_LABEL) == Some(&index) {
        return Ok(());
    }
    let patch = json!({"metadata": {"labels": {POD_NAME_LABEL: &name, POD_INDEX_LABEL: index}}});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            record_pod_event(shared, set, "update", &name, None);
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => {
            record_pod_event(shared, set, "update", &name, Some(&error));
            Err(error.into())
        }
    }
}

async fn delete(
    shared: &Shared,
    key: &Key,
    api: &Api<Pod>,
    set: &StatefulSet,
    pod: &Pod,
) -> Result<(), SyncError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::debug!(statefulset = %key, pod = %name, "deleted pod");
            shared.expectations.deleted(key, pod);
            record_pod_event(shared, set, "delete", &name, None);
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => {
            record_pod_event(shared, set, "delete", &name, Some(&error));
            Err(error.into())
        }
    }
}

/// The status the pods in the cache give.
fn status_of(
    set: &StatefulSet,
    revisions: &Revisions,
    claimed: &[Pod],
    min_ready: i32,
    now: jiff::Timestamp,
) -> StatefulSetStatus {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let current = revisions.current.metadata.name.clone().unwrap_or_default();
    let update = revisions.update.metadata.name.clone().unwrap_or_default();
    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: Some(
            set.status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0),
        ),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
        current_revision: Some(current.clone()),
        update_revision: Some(update.clone()),
        ..StatefulSetStatus::default()
    };
    let (mut ready, mut available, mut at_current, mut at_update) = (0, 0, 0, 0);
    for pod in claimed
        .iter()
        .filter(|p| identity::ordinal(&set_name, p).is_some())
    {
        let created = !pods::phase(pod).is_empty();
        if created {
            status.replicas += 1;
        }
        if running_and_ready(pod) {
            ready += 1;
            if pods::is_available(pod, min_ready, now) {
                available += 1;
            }
        }
        if created && !pods::is_terminating(pod) {
            let revision = identity::revision(pod);
            if revision == current {
                at_current += 1;
            }
            if revision == update {
                at_update += 1;
            }
        }
    }
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status.current_replicas = Some(at_current);
    status.updated_replicas = Some(at_update);
    status
}

/// `completeRollingUpdate`: with every replica updated and Ready, the update revision
/// becomes current.
fn complete_rolling_update(set: &StatefulSet, status: &mut StatefulSetStatus) {
    let spec = set.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        != Some("OnDelete");
    if rolling
        && status.updated_replicas == Some(replicas)
        && status.ready_replicas == Some(replicas)
        && status.replicas == replicas
    {
        status.current_replicas = status.updated_replicas;
        status.current_revision = status.update_revision.clone();
    }
}

/// The status with absent counters as 0 (the API server may omit zeros).
fn normalized(mut status: StatefulSetStatus) -> StatefulSetStatus {
    for field in [
        &mut status.ready_replicas,
        &mut status.available_replicas,
        &mut status.current_replicas,
        &mut status.updated_replicas,
        &mut status.collision_count,
    ] {
        field.get_or_insert(0);
    }
    status
}

async fn write_status(
    shared: &Shared,
    set: &StatefulSet,
    status: StatefulSetStatus,
) -> Result<(), SyncError> {
    if set.status.clone().map(normalized) == Some(normalized(status.clone())) {
        return Ok(());
    }
    let api: Api<StatefulSet> = Api::namespaced(
        shared.client.clone(),
        set.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let name = set.metadata.name.clone().unwrap_or_default();
    let patch = json!({"status": status});
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

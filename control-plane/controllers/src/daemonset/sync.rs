//! One DaemonSet's sync (`syncDaemonSet`): claim pods, construct history, then — once earlier
//! writes are in the cache — create pods on nodes that should run one and lack it, delete them
//! where they may not stay, roll updates; finally write the status.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::eligibility::{self, Eligibility};
use super::history::{self, HASH_LABEL, Revisions};
use super::{KIND, Shared, rollout};
use crate::apps_shared::SyncError;
use crate::apps_shared::pods::{self, controller_ref};
use crate::apps_shared::selector;
use crate::events::{error_text, related};
use crate::queue::Key;

/// The deprecated label with the DaemonSet's generation, still set upstream.
const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

/// Syncs the DaemonSet `key`; `Ok(Some(delay))` asks to look again after `delay`.
pub async fn sync(shared: &Shared, key: &Key) -> Result<Option<Duration>, SyncError> {
    let Some(set) = shared
        .sets
        .get(&ObjectRef::new(&key.name).within(&key.namespace))
    else {
        shared.expectations.forget(key);
        return Ok(None);
    };
    let set = (*set).clone();
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let Some(spec) = set.spec.clone() else {
        return Ok(None);
    };
    if selector::is_empty(&spec.selector) {
        shared.events.warning(
            set.object_ref(&()),
            "SelectingAll",
            "This daemon set is selecting all pods. A non-empty selector is required.".into(),
        );
        return Ok(None);
    }
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
    let claimed = pods::claim(&api, &owner, false, &spec.selector, candidates)
        .await
        .pods;
    let revisions = history::construct(shared, &set).await?;
    let nodes: Vec<Node> = {
        let mut nodes: Vec<Node> = shared.nodes.state().iter().map(|n| (**n).clone()).collect();
        nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        nodes
    };
    let template_spec = daemon_pod_spec(&set);
    let eligible: BTreeMap<String, Eligibility> = nodes
        .iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            (name, eligibility::of(n, &template_spec))
        })
        .collect();
    let by_node = pods_by_node(&claimed);
    if satisfied {
        let mut plan = manage(&set, &revisions, &eligible, &by_node);
        let on_delete = spec
            .update_strategy
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            == Some("OnDelete");
        // The rolling update acts only on a cache that shows manage's writes (upstream checks
        // the expectations again in between): here, only when manage has nothing to do.
        if plan.delete.is_empty() && plan.create.is_empty() && !on_delete {
            plan = rollout::plan(&set, &revisions.hash, &eligible, &by_node);
        }
        for (failed, reason, note, pod) in plan.notices {
            let pod = related("v1", "Pod", &key.namespace, &pod);
            shared
                .events
                .record(set.object_ref(&()), Some(pod), failed, reason, note);
        }
        let (deletes, creates) = (plan.delete, plan.create);
        sync_nodes(shared, key, &api, &set, &revisions, &deletes, &creates).await?;
    }
    history::cleanup(shared, &set, &revisions, &claimed).await?;
    update_status(shared, &set, &revisions.hash, &eligible, &by_node).await
}

/// The template's pod spec with the daemon tolerations, which eligibility is judged on.
fn daemon_pod_spec(set: &DaemonSet) -> PodSpec {
    let mut spec = set
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    eligibility::add_daemon_tolerations(&mut spec);
    spec
}

/// Claimed pods by the node they are for (bound or pinned), terminal deleted ones left out.
fn pods_by_node(claimed: &[Pod]) -> BTreeMap<String, Vec<Pod>> {
    let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in claimed {
        let terminal = matches!(pods::phase(pod), "Succeeded" | "Failed");
        if terminal && pods::is_terminating(pod) {
            continue;
        }
        let Some(node) = pod.spec.as_ref().and_then(eligibility::target_node) else {
            continue;
        };
        by_node.entry(node).or_default().push(pod.clone());
    }
    for pods in by_node.values_mut() {
        sort_oldest_first(pods);
    }
    by_node
}

/// Oldest first, as `podByCreationTimestampAndPhase`.
fn sort_oldest_first(pods: &mut [Pod]) {
    pods.sort_by(|a, b| {
        let at = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        at(a)
            .cmp(&at(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// Whether the pod runs the current template.
pub fn is_updated(pod: &Pod, hash: &str, generation: Option<i64>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).cloned();
    (!hash.is_empty() && label(HASH_LABEL).as_deref() == Some(hash))
        || generation
            .is_some_and(|g| label(TEMPLATE_GENERATION_LABEL).as_deref() == Some(&g.to_string()))
            && label(HASH_LABEL).is_none()
}

/// Pods to delete and nodes to create on.
#[derive(Debug, Default)]
pub struct Plan {
    /// Pods to delete.
    pub delete: Vec<Pod>,
    /// Nodes to create a pod on.
    pub create: Vec<String>,
    /// Events to record about the set: (a warning, reason, message, the pod's name).
    pub notices: Vec<(bool, &'static str, String, String)>,
}

/// `manage` / `podsShouldBeOnNode`.
fn manage(
    set: &DaemonSet,
    revisions: &Revisions,
    eligible: &BTreeMap<String, Eligibility>,
    by_node: &BTreeMap<String, Vec<Pod>>,
) -> Plan {
    let mut plan = Plan::default();
    let surge = rollout::max_surge(set, eligible) > 0;
    let min_ready = set
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let now = jiff::Timestamp::now();
    for (node, eligibility) in eligible {
        let on_node = by_node.get(node).cloned().unwrap_or_default();
        if eligibility.should_run && on_node.is_empty() {
            plan.create.push(node.clone());
            continue;
        }
        if !eligibility.should_continue {
            plan.delete
                .extend(on_node.into_iter().filter(|p| !pods::is_terminating(p)));
            continue;
        }
        let mut running = Vec::new();
        for pod in on_node {
            if pods::is_terminating(&pod) {
                continue;
            }
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            if pods::phase(&pod) == "Failed" {
                // Upstream backs off per node; the next create waits for the next sync.
                plan.notices.push((
                    true,
                    "FailedDaemonPod",
                    format!(
                        "Found failed daemon pod {namespace}/{name} on node {node}, will try to kill it"
                    ),
                    name.to_string(),
                ));
                plan.delete.push(pod);
                continue;
            }
            if pods::phase(&pod) == "Succeeded" {
                plan.notices.push((
                    false,
                    "SucceededDaemonPod",
                    format!(
                        "Found succeeded daemon pod {namespace}/{name} on node {node}, will try to delete it"
                    ),
                    name.to_string(),
                ));
                plan.delete.push(pod);
                continue;
            }
            running.push(pod);
        }
        if !surge {
            plan.delete.extend(running.into_iter().skip(1));
            continue;
        }
        let generation = set.metadata.generation;
        let (mut oldest_new, mut oldest_old) = (None, None);
        for pod in running {
            let slot = if is_updated(&pod, &revisions.hash, generation) {
                &mut oldest_new
            } else {
                &mut oldest_old
            };
            if slot.is_none() {
                *slot = Some(pod);
            } else {
                plan.delete.push(pod);
            }
        }
        if let (Some(new), Some(old)) = (oldest_new, oldest_old)
            && (!pods::is_ready(&old) || pods::is_available(&new, min_ready, now))
        {
            plan.delete.push(old);
        }
    }
    // Pods pinned to nodes that are gone and never bound: nothing will run them.
    for (node, on_node) in by_node {
        if eligible.contains_key(node) {
            continue;
        }
        plan.delete.extend(
            on_node
                .iter()
                .filter(|p| {
                    p.spec
                        .as_ref()
                        .is_none_or(|s| s.node_name.as_deref().unwrap_or("").is_empty())
                        && !pods::is_terminating(p)
                })
                .cloned(),
        );
    }
    plan
}

/// Creates and deletes, recording expectations.
async fn sync_nodes(
    shared: &Shared,
    key: &Key,
    api: &Api<Pod>,
    set: &DaemonSet,
    revisions: &Revisions,
    deletes: &[Pod],
    creates: &[String],
) -> Result<(), SyncError> {
    for pod in deletes {
        let name = pod.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                shared.expectations.deleted(key, pod);
                shared.events.record(
                    set.object_ref(&()),
                    Some(related("v1", "Pod", &key.namespace, &name)),
                    false,
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                );
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                shared.events.warning(
                    set.object_ref(&()),
                    "FailedDelete",
                    format!("Error deleting: {}", error_text(&error)),
                );
                return Err(error.into());
            }
        }
        tracing::debug!(daemonset = %key, pod = %name, "deleted daemon pod");
    }
    let template = set.spec.clone().unwrap_or_default().template;
    let name = set.metadata.name.clone().unwrap_or_default();
    for node in creates {
        let mut pod = pods::from_template(
            &template,
            &key.namespace,
            controller_ref(&set.metadata, KIND),
        );
        pod.metadata.generate_name = Some(format!("{name}-"));
        let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(HASH_LABEL.into(), revisions.hash.clone());
        if let Some(generation) = set.metadata.generation {
            labels.insert(TEMPLATE_GENERATION_LABEL.into(), generation.to_string());
        }
        let spec = pod.spec.get_or_insert_with(PodSpec::default);
        eligibility::add_daemon_tolerations(spec);
        eligibility::pin_to_node(spec, node);
        match api.create(&PostParams::default(), &pod).await {
            Ok(created) => {
                shared.expectations.created(key, &created);
                tracing::debug!(daemonset = %key, %node, "created daemon pod");
                let pod = created.metadata.name.unwrap_or_default();
                shared.events.record(
                    set.object_ref(&()),
                    Some(related("v1", "Pod", &key.namespace, &pod)),
                    false,
                    "SuccessfulCreate",
                    format!("Created pod: {pod}"),
                );
            }
            // The namespace is being deleted: nothing to do until it is gone.
            Err(kube::Error::Api(status)) if status.code == 403 && status.reason == "Forbidden" => {
                return Ok(());
            }
            Err(error) => {
                shared.events.warning(
                    set.object_ref(&()),
                    "FailedCreate",
                    format!("Error creating: {}", error_text(&error)),
                );
                return Err(error.into());
            }
        }
    }
    Ok(())
}

/// `updateDaemonSetStatus`; asks to look again when a Ready pod becomes available later.
async fn update_status(
    shared: &Shared,
    set: &DaemonSet,
    hash: &str,
    eligible: &BTreeMap<String, Eligibility>,
    by_node: &BTreeMap<String, Vec<Pod>>,
) -> Result<Option<Duration>, SyncError> {
    let min_ready = set
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let now = jiff::Timestamp::now();
    let mut status = DaemonSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: set.status.as_ref().and_then(|s| s.collision_count),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
        number_available: Some(0),
        number_unavailable: Some(0),
        updated_number_scheduled: Some(0),
        ..DaemonSetStatus::default()
    };
    let mut again: Option<Duration> = None;
    let (mut available, mut updated) = (0, 0);
    for (node, eligibility) in eligible {
        let on_node = by_node.get(node).map(Vec::as_slice).unwrap_or_default();
        if !eligibility.should_run {
            if !on_node.is_empty() {
                status.number_misscheduled += 1;
            }
            continue;
        }
        status.desired_number_scheduled += 1;
        let Some(pod) = on_node.first() else {
            continue;
        };
        status.current_number_scheduled += 1;
        if pods::is_ready(pod) {
            status.number_ready += 1;
            if pods::is_available(pod, min_ready, now) {
                available += 1;
            } else if let Some(wait) = pods::until_available(pod, min_ready, now) {
                again = Some(again.map_or(wait, |a| a.min(wait)));
            }
        }
        if is_updated(pod, hash, set.metadata.generation) {
            updated += 1;
        }
    }
    status.number_available = Some(available);
    status.updated_number_scheduled = Some(updated);
    status.number_unavailable = Some(status.desired_number_scheduled - available);
    let changed = set.status.clone().map(normalized) != Some(normalized(status.clone()));
    if changed {
        let api: Api<DaemonSet> = Api::namespaced(
            shared.client.clone(),
            set.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let name = set.metadata.name.clone().unwrap_or_default();
        let patch = json!({"status": status});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(again)
}

/// The status with absent counters as 0 (the API server may omit zeros).
fn normalized(mut status: DaemonSetStatus) -> DaemonSetStatus {
    for field in [
        &mut status.number_available,
        &mut status.number_unavailable,
        &mut status.updated_number_scheduled,
    ] {
        field.get_or_insert(0);
    }
    status
}

//! DefaultPreemption: when a pod fits nowhere, find nodes where evicting lower-priority pods
//! would make room, choose victims as upstream does (all lower-priority pods removed, then the
//! most important put back while the pod still fits, PDB-violating ones first), pick one node
//! by upstream's criteria, then mark and delete its victims and nominate the node.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::cycle::{Diagnosis, filter_node};
use crate::events::Recorder;
use crate::filters::{Code, CycleState, Status};
use crate::message::fit_error;
use crate::selectors::selects;
use crate::snapshot::{Cache, NodeInfo, PodInfo};
use crate::volumes::Volumes;

/// The reason of nodes where removing pods cannot help.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// The reason of nodes without lower-priority pods.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// A node and the pods to evict there.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The node.
    pub node: String,
    /// The victims.
    pub victims: Vec<Arc<PodInfo>>,
    /// How many victims' eviction violates a PodDisruptionBudget.
    pub pdb_violations: usize,
}

fn start_time(pod: &PodInfo) -> Option<jiff::Timestamp> {
    pod.pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
}

/// More important first: higher priority, then started earlier.
fn more_important(a: &PodInfo, b: &PodInfo) -> std::cmp::Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| match (start_time(a), start_time(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        })
}

/// Splits `pods` into those whose eviction would violate a PDB and the rest (order kept).
fn split_by_pdb(
    pods: Vec<Arc<PodInfo>>,
    pdbs: &HashMap<String, Arc<PodDisruptionBudget>>,
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: HashMap<&str, i32> = pdbs
        .iter()
        .map(|(k, p)| {
            (
                k.as_str(),
                p.status
                    .as_ref()
                    .map(|s| s.disruptions_allowed)
                    .unwrap_or(0),
            )
        })
        .collect();
    let mut violating = Vec::new();
    let mut fine = Vec::new();
    for pod in pods {
        let mut violates = false;
        for (key, pdb) in pdbs {
            if pdb.metadata.namespace.as_deref() != Some(pod.namespace.as_str()) {
                continue;
            }
            let Some(selector) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                continue;
            };
            let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && selector
                    .match_expressions
                    .as_ref()
                    .is_none_or(|m| m.is_empty());
            if empty || !selects(selector, &pod.labels) {
                continue;
            }
            let name = pod.pod.metadata.name.clone().unwrap_or_default();
            let disrupted = pdb
                .status
                .as_ref()
                .and_then(|s| s.disrupted_pods.as_ref())
                .is_some_and(|d| d.contains_key(&name));
            if disrupted {
                continue;
            }
            if let Some(count) = allowed.get_mut(key.as_str()) {
                *count -= 1;
                if *count < 0 {
                    violates = true;
                }
            }
        }
        if violates {
            violating.push(pod);
        } else {
            fine.push(pod);
        }
    }
    (violating, fine)
}

/// upstream's SelectVictimsOnNode.
fn select_victims(
    state: &CycleState,
    node: &NodeInfo,
    nominees: Option<&Vec<Arc<PodInfo>>>,
    pdbs: &HashMap<String, Arc<PodDisruptionBudget>>,
) -> Result<Candidate, Status> {
    let pod = &state.pod;
    let mut lower: Vec<Arc<PodInfo>> = node
        .pods
        .values()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if lower.is_empty() {
        return Err(Status::new(Code::UnschedulableAndUnresolvable, NO_VICTIMS));
    }
    let keys: Vec<String> = lower.iter().map(|p| p.key.clone()).collect();
    let mut trimmed = node.without(&keys);
    if let Some(status) = filter_node(state, &trimmed, nominees) {
        return Err(status);
    }
    lower.sort_by(|a, b| more_important(a, b).then_with(|| a.key.cmp(&b.key)));
    let (violating, fine) = split_by_pdb(lower, pdbs);
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    for (pod, violates) in violating
        .into_iter()
        .map(|p| (p, true))
        .chain(fine.into_iter().map(|p| (p, false)))
    {
        let with = trimmed.with(Arc::clone(&pod));
        if filter_node(state, &with, nominees).is_none() {
            trimmed = with;
        } else {
            if violates {
                pdb_violations += 1;
            }
            victims.push(pod);
        }
    }
    Ok(Candidate {
        node: node.name.clone(),
        victims,
        pdb_violations,
    })
}

/// upstream's pickOneNodeForPreemption.
fn pick(mut candidates: Vec<Candidate>) -> Option<Candidate> {
    let highest = |c: &Candidate| {
        c.victims
            .iter()
            .map(|v| v.priority)
            .max()
            .unwrap_or(i32::MIN)
    };
    let sum = |c: &Candidate| {
        c.victims
            .iter()
            .map(|v| i64::from(v.priority) + i64::from(i32::MAX) + 1)
            .sum::<i64>()
    };
    // Among the highest-priority victims, the earliest start; later is better.
    let earliest = |c: &Candidate| {
        let top = highest(c);
        c.victims
            .iter()
            .filter(|v| v.priority == top)
            .filter_map(|v| start_time(v))
            .min()
    };
    let keep_min = |candidates: &mut Vec<Candidate>, f: &dyn Fn(&Candidate) -> i64| {
        if let Some(min) = candidates.iter().map(f).min() {
            candidates.retain(|c| f(c) == min);
        }
    };
    keep_min(&mut candidates, &|c| c.pdb_violations as i64);
    keep_min(&mut candidates, &|c| i64::from(highest(c)));
    keep_min(&mut candidates, &sum);
    keep_min(&mut candidates, &|c| c.victims.len() as i64);
    if candidates.len() > 1 {
        let latest = candidates.iter().filter_map(earliest).max();
        if let Some(latest) = latest {
            candidates.retain(|c| earliest(c) == Some(latest));
        }
    }
    candidates.into_iter().next()
}

/// PostFilter: a candidate to preempt on, or the `preemption: …` message saying why none.
pub fn preempt(
    cache: &Cache,
    volumes: &Volumes,
    pod: &Arc<PodInfo>,
    diagnosis: &Diagnosis,
    pdbs: &HashMap<String, Arc<PodDisruptionBudget>>,
    nominated: &HashMap<String, Vec<Arc<PodInfo>>>,
) -> Result<Candidate, String> {
    let spec = pod.pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err("preemption: not eligible due to preemptionPolicy=Never.".into());
    }
    // A pod that preempted before waits for its victims to go.
    if let Some(node) = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .and_then(|n| cache.nodes.get(n))
        && diagnosis
            .statuses
            .get(&node.name)
            .is_some_and(|s| s.code == Code::Unschedulable)
        && node
            .pods
            .values()
            .any(|p| p.terminating && p.priority < pod.priority)
    {
        return Err(
            "preemption: not eligible due to a terminating pod on the nominated node.".into(),
        );
    }
    let not_helpful = || {
        let statuses = vec![
            Status::new(Code::UnschedulableAndUnresolvable, NOT_HELPFUL);
            diagnosis.node_count
        ];
        format!(
            "preemption: {}",
            fit_error(diagnosis.node_count, &statuses, None, None)
        )
    };
    // A PreFilter rejection fails every node whatever is removed.
    if diagnosis.pre_filter.is_some() {
        return Err(not_helpful());
    }
    let Ok(state) = CycleState::new(cache, volumes, Arc::clone(pod)) else {
        return Err(not_helpful());
    };
    let mut statuses: Vec<Status> = Vec::new();
    let mut candidates = Vec::new();
    for node in cache.ready_nodes() {
        match diagnosis.statuses.get(&node.name) {
            Some(status) if status.code == Code::Unschedulable => {
                match select_victims(&state, node, nominated.get(&node.name), pdbs) {
                    Ok(candidate) => candidates.push(candidate),
                    Err(status) => statuses.push(status),
                }
            }
            _ => statuses.push(Status::new(Code::UnschedulableAndUnresolvable, NOT_HELPFUL)),
        }
    }
    pick(candidates).ok_or_else(|| {
        format!(
            "preemption: {}",
            fit_error(diagnosis.node_count, &statuses, None, None)
        )
    })
}

/// Prepares the candidate: victims get the `DisruptionTarget` condition and are deleted, an
/// event says who preempted them.
pub fn execute(
    client: kube::Client,
    scheduler_name: &str,
    preemptor: &PodInfo,
    candidate: &Candidate,
    recorder: &mut Recorder,
) {
    let preemptor_name = preemptor.pod.metadata.name.clone().unwrap_or_default();
    for victim in &candidate.victims {
        let note = format!(
            "Preempted by pod {} on node {}",
            preemptor.uid, candidate.node
        );
        recorder.record(&victim.pod, "Normal", "Preempted", "Preempting", &note);
        let client = client.clone();
        let namespace = victim.namespace.clone();
        let name = victim.pod.metadata.name.clone().unwrap_or_default();
        let message = format!("{scheduler_name}: preempting to accommodate a higher priority pod");
        let preemptor_name = preemptor_name.clone();
        tokio::spawn(async move {
            let pods: Api<Pod> = Api::namespaced(client, &namespace);
            let now = jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .map(|t| t.to_string())
                .unwrap_or_default();
            let patch = json!({"status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": message,
                "lastTransitionTime": now,
            }]}});
            if let Err(error) = pods
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
            {
                tracing::debug!(%error, victim = %name, "DisruptionTarget not set");
            }
            match pods.delete(&name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(victim = %name, preemptor = %preemptor_name, "preempted"),
                Err(error) => tracing::debug!(%error, victim = %name, "victim not deleted"),
            }
        });
    }
}

//! One scheduling cycle: PreFilter, Filter over every node (with the pods nominated there by
//! earlier preemptions counted), Score the feasible ones and pick the best, ties at random.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::Rng;

use crate::filters::volume_binding::PodVolumes;
use crate::filters::{self, CycleState, Status};
use crate::scores;
use crate::snapshot::{Cache, NodeInfo, PodInfo};
use crate::volumes::Volumes;

/// Why a pod fits no node.
#[derive(Debug, Clone)]
pub struct Diagnosis {
    /// How many nodes there are.
    pub node_count: usize,
    /// Each node's failed filter; nodes PreFilter left out have none.
    pub statuses: BTreeMap<String, Status>,
    /// The PreFilter rejection, which fails every node at once.
    pub pre_filter: Option<String>,
}

/// The pods nominated to each node that rank at least as high as `pod`.
pub fn nominated_for<'a>(
    pod: &PodInfo,
    nominated: impl Iterator<Item = &'a Arc<PodInfo>>,
) -> HashMap<String, Vec<Arc<PodInfo>>> {
    let mut by_node: HashMap<String, Vec<Arc<PodInfo>>> = HashMap::new();
    for other in nominated {
        if other.key == pod.key || other.priority < pod.priority {
            continue;
        }
        if let Some(node) = other
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.clone())
        {
            by_node.entry(node).or_default().push(Arc::clone(other));
        }
    }
    by_node
}

/// Runs the filters on `node`, with `nominees` counted as if placed there.
pub fn filter_node(
    state: &CycleState,
    node: &NodeInfo,
    nominees: Option<&Vec<Arc<PodInfo>>>,
) -> Option<Status> {
    match nominees {
        Some(nominees) if !nominees.is_empty() => {
            let mut copy = node.clone();
            for nominee in nominees {
                copy = copy.with(Arc::clone(nominee));
            }
            filters::run(state, &copy)
        }
        _ => filters::run(state, node),
    }
}

/// The node for `pod` and what its claims need there, or why there is none.
pub fn schedule(
    cache: &Cache,
    volumes: &Volumes,
    pod: Arc<PodInfo>,
    nominated: &HashMap<String, Vec<Arc<PodInfo>>>,
) -> Result<(String, PodVolumes), Diagnosis> {
    let state = match CycleState::new(cache, volumes, Arc::clone(&pod)) {
        Ok(state) => state,
        Err(status) => {
            return Err(Diagnosis {
                node_count: cache.node_count(),
                statuses: BTreeMap::new(),
                pre_filter: Some(status.message()),
            });
        }
    };
    let chosen = |node: &NodeInfo| {
        // The filter passed, so the claims can be had there.
        let volumes = state.binding.find_pod_volumes(node).unwrap_or_default();
        (node.name.clone(), volumes)
    };
    // A pod nominated by an earlier preemption tries its node first.
    if let Some(node) = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .and_then(|n| cache.nodes.get(n))
        .filter(|n| n.node.is_some() && state.considers(&n.name))
        && filter_node(&state, node, nominated.get(&node.name)).is_none()
    {
        return Ok(chosen(node));
    }
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    let mut statuses = BTreeMap::new();
    let mut node_count = 0;
    for node in cache.ready_nodes() {
        node_count += 1;
        if !state.considers(&node.name) {
            continue;
        }
        match filter_node(&state, node, nominated.get(&node.name)) {
            None => feasible.push(node),
            Some(status) => {
                statuses.insert(node.name.clone(), status);
            }
        }
    }
    match feasible.len() {
        0 => Err(Diagnosis {
            node_count,
            statuses,
            pre_filter: None,
        }),
        1 => Ok(chosen(feasible[0])),
        _ => {
            let totals = scores::score(cache, &state, &feasible);
            Ok(chosen(select(&feasible, &totals)))
        }
    }
}

/// The highest-scoring node; equal scores are chosen between uniformly (reservoir sampling).
fn select<'a>(nodes: &[&'a NodeInfo], totals: &[i64]) -> &'a NodeInfo {
    let mut rng = rand::rng();
    let mut best = 0;
    let mut ties = 0u32;
    for (i, total) in totals.iter().enumerate() {
        if *total > totals[best] {
            best = i;
            ties = 1;
        } else if *total == totals[best] {
            ties += 1;
            if rng.random_range(0..ties) == 0 {
                best = i;
            }
        }
    }
    nodes[best]
}

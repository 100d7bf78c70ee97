//! InterPodAffinity's filter: the incoming pod's required affinity and anti-affinity, and the
//! required anti-affinity of pods already placed (symmetry), each counted per topology domain.

use std::collections::HashMap;

use super::{Code, Status};
use crate::snapshot::{Cache, NodeInfo, PodInfo};

/// The reason of a node breaking an existing pod's anti-affinity.
pub const REASON_EXISTING_ANTI: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
/// The reason of a node breaking the pod's anti-affinity.
pub const REASON_ANTI: &str = "node(s) didn't match pod anti-affinity rules";
/// The reason of a node not meeting the pod's affinity.
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";

type Pair = (String, String);

/// Counts per topology pair (label key, value).
#[derive(Debug, Default)]
pub struct FilterState {
    existing_anti: HashMap<Pair, usize>,
    affinity: HashMap<Pair, usize>,
    anti: HashMap<Pair, usize>,
    required_affinity: Vec<(String, bool)>,
    anti_keys: Vec<String>,
    self_match: bool,
}

impl FilterState {
    /// PreFilter: reads only the assigned pods with affinity terms unless the incoming pod
    /// has required terms of its own.
    pub fn new(cache: &Cache, pod: &PodInfo) -> FilterState {
        let mut state = FilterState::default();
        for key in &cache.with_affinity {
            let Some(existing) = cache.pod(key) else {
                continue;
            };
            let Some(node) = cache.assigned.get(key).and_then(|n| cache.nodes.get(n)) else {
                continue;
            };
            for term in &existing.required_anti_affinity {
                if term.matches(pod)
                    && let Some(value) = node.labels.get(&term.topology_key)
                {
                    *state
                        .existing_anti
                        .entry((term.topology_key.clone(), value.clone()))
                        .or_default() += 1;
                }
            }
        }
        if pod.required_affinity.is_empty() && pod.required_anti_affinity.is_empty() {
            return state;
        }
        for node in cache.nodes.values() {
            for existing in node.pods.values() {
                for term in &pod.required_affinity {
                    if term.matches(existing)
                        && let Some(value) = node.labels.get(&term.topology_key)
                    {
                        *state
                            .affinity
                            .entry((term.topology_key.clone(), value.clone()))
                            .or_default() += 1;
                    }
                }
                for term in &pod.required_anti_affinity {
                    if term.matches(existing)
                        && let Some(value) = node.labels.get(&term.topology_key)
                    {
                        *state
                            .anti
                            .entry((term.topology_key.clone(), value.clone()))
                            .or_default() += 1;
                    }
                }
            }
        }
        state.required_affinity = pod
            .required_affinity
            .iter()
            .map(|t| (t.topology_key.clone(), true))
            .collect();
        state.anti_keys = pod
            .required_anti_affinity
            .iter()
            .map(|t| t.topology_key.clone())
            .collect();
        state.self_match = pod.required_affinity.iter().all(|t| t.matches(pod));
        state
    }

    /// Filter.
    pub fn filter(&self, node: &NodeInfo) -> Option<Status> {
        if !self.existing_anti.is_empty()
            && node
                .labels
                .iter()
                .any(|(k, v)| self.existing_anti.contains_key(&(k.clone(), v.clone())))
        {
            return Some(Status::new(Code::Unschedulable, REASON_EXISTING_ANTI));
        }
        for key in &self.anti_keys {
            if let Some(value) = node.labels.get(key)
                && self
                    .anti
                    .get(&(key.clone(), value.clone()))
                    .is_some_and(|c| *c > 0)
            {
                return Some(Status::new(Code::Unschedulable, REASON_ANTI));
            }
        }
        let mut pods_exist = true;
        for (key, _) in &self.required_affinity {
            let Some(value) = node.labels.get(key) else {
                return Some(Status::new(
                    Code::UnschedulableAndUnresolvable,
                    REASON_AFFINITY,
                ));
            };
            if self
                .affinity
                .get(&(key.clone(), value.clone()))
                .is_none_or(|c| *c == 0)
            {
                pods_exist = false;
            }
        }
        // The first pod of a group with affinity to itself may go anywhere its topology exists.
        let first_of_group = self.affinity.is_empty() && self.self_match;
        if !(pods_exist || first_of_group) {
            return Some(Status::new(
                Code::UnschedulableAndUnresolvable,
                REASON_AFFINITY,
            ));
        }
        None
    }
}

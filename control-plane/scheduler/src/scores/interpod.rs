//! InterPodAffinity's score: the incoming pod's preferred (anti-)affinity towards pods already
//! placed, and theirs towards it (required affinity counts with the hard weight 1), summed per
//! topology domain and scaled between the lowest and highest node.

use std::collections::HashMap;

use super::MAX_NODE_SCORE;
use crate::snapshot::{Cache, NodeInfo, PodInfo};

/// The weight of an existing pod's required affinity to the incoming pod.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

fn process(
    scores: &mut HashMap<(String, String), i64>,
    pod: &PodInfo,
    existing: &PodInfo,
    node: &NodeInfo,
) {
    let mut add = |key: &str, weight: i64| {
        if let Some(value) = node.labels.get(key) {
            *scores.entry((key.to_string(), value.clone())).or_default() += weight;
        }
    };
    for (weight, term) in &pod.preferred_affinity {
        if term.matches(existing) {
            add(&term.topology_key, i64::from(*weight));
        }
    }
    for (weight, term) in &pod.preferred_anti_affinity {
        if term.matches(existing) {
            add(&term.topology_key, -i64::from(*weight));
        }
    }
    for term in &existing.required_affinity {
        if term.matches(pod) {
            add(&term.topology_key, HARD_POD_AFFINITY_WEIGHT);
        }
    }
    for (weight, term) in &existing.preferred_affinity {
        if term.matches(pod) {
            add(&term.topology_key, i64::from(*weight));
        }
    }
    for (weight, term) in &existing.preferred_anti_affinity {
        if term.matches(pod) {
            add(&term.topology_key, -i64::from(*weight));
        }
    }
}

/// The normalised scores; `None` (skipped) when no affinity is involved.
pub fn score(cache: &Cache, pod: &PodInfo, nodes: &[&NodeInfo]) -> Option<Vec<i64>> {
    let own = !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
    if !own && cache.with_affinity.is_empty() {
        return None;
    }
    let mut topology: HashMap<(String, String), i64> = HashMap::new();
    if own {
        for node in cache.nodes.values() {
            for existing in node.pods.values() {
                process(&mut topology, pod, existing, node);
            }
        }
    } else {
        for key in &cache.with_affinity {
            let (Some(existing), Some(node)) = (
                cache.pod(key),
                cache.assigned.get(key).and_then(|n| cache.nodes.get(n)),
            ) else {
                continue;
            };
            process(&mut topology, pod, existing, node);
        }
    }
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|node| {
            topology
                .iter()
                .filter(|((key, value), _)| node.labels.get(key) == Some(value))
                .map(|(_, score)| *score)
                .sum()
        })
        .collect();
    let min = scores.iter().copied().min().unwrap_or(0);
    let max = scores.iter().copied().max().unwrap_or(0);
    for score in scores.iter_mut() {
        *score = if max > min {
            (MAX_NODE_SCORE as f64 * ((*score - min) as f64 / (max - min) as f64)) as i64
        } else {
            0
        };
    }
    Some(scores)
}

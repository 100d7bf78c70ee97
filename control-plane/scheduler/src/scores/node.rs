//! Scores from the node alone: TaintToleration (PreferNoSchedule taints not tolerated, fewer
//! is better) and NodeAffinity (weights of the preferred terms the node matches).

use super::default_normalize;
use crate::selectors::{term_matches, tolerates};
use crate::snapshot::{NodeInfo, PodInfo};

/// TaintToleration's normalised scores.
pub fn taint_toleration(pod: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
    let tolerations: Vec<_> = pod
        .tolerations
        .iter()
        .filter(|t| {
            t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
        })
        .collect();
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|node| {
            node.taints
                .iter()
                .filter(|taint| {
                    taint.effect == "PreferNoSchedule"
                        && !tolerations.iter().any(|t| tolerates(t, taint))
                })
                .count() as i64
        })
        .collect();
    default_normalize(&mut scores, true);
    scores
}

/// NodeAffinity's normalised scores.
pub fn node_affinity(pod: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
    let preferred = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let Some(preferred) = preferred.filter(|p| !p.is_empty()) else {
        return vec![0; nodes.len()];
    };
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|node| {
            preferred
                .iter()
                .filter(|t| t.weight != 0 && term_matches(&t.preference, &node.name, &node.labels))
                .map(|t| i64::from(t.weight))
                .sum()
        })
        .collect();
    default_normalize(&mut scores, false);
    scores
}

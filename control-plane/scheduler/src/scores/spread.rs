//! PodTopologySpread's score for `whenUnsatisfiable: ScheduleAnyway`: nodes in domains with
//! fewer matching pods score higher, each constraint weighted by the log of its domain count.

use std::collections::HashMap;

use super::MAX_NODE_SCORE;
use crate::filters::spread::{constraints, count_matching, node_counts};
use crate::snapshot::{Cache, NodeInfo, PodInfo};

const HOSTNAME: &str = "kubernetes.io/hostname";

/// The normalised scores; `None` (skipped) without ScheduleAnyway constraints.
pub fn score(cache: &Cache, pod: &PodInfo, nodes: &[&NodeInfo]) -> Option<Vec<i64>> {
    let constraints = constraints(pod, "ScheduleAnyway");
    if constraints.is_empty() {
        return None;
    }
    let ignored: Vec<bool> = nodes
        .iter()
        .map(|n| {
            !constraints
                .iter()
                .all(|c| n.labels.contains_key(&c.topology_key))
        })
        .collect();
    let mut pairs: HashMap<(usize, String), i64> = HashMap::new();
    for (node, _) in nodes.iter().zip(&ignored).filter(|(_, i)| !**i) {
        for (i, c) in constraints.iter().enumerate() {
            if c.topology_key != HOSTNAME {
                pairs.insert((i, node.labels[&c.topology_key].clone()), 0);
            }
        }
    }
    let considered = ignored.iter().filter(|i| !**i).count();
    let weights: Vec<f64> = constraints
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let size = if c.topology_key == HOSTNAME {
                considered
            } else {
                pairs.keys().filter(|(j, _)| *j == i).count()
            };
            ((size + 2) as f64).ln()
        })
        .collect();
    for node in cache.ready_nodes() {
        for (i, c) in constraints.iter().enumerate() {
            if c.topology_key == HOSTNAME || !node_counts(c, pod, node) {
                continue;
            }
            let Some(value) = node.labels.get(&c.topology_key) else {
                continue;
            };
            if let Some(count) = pairs.get_mut(&(i, value.clone())) {
                *count += count_matching(c, pod, node) as i64;
            }
        }
    }
    let raw: Vec<Option<i64>> = nodes
        .iter()
        .zip(&ignored)
        .map(|(node, ignored)| {
            if *ignored {
                return None;
            }
            let mut score = 0.0;
            for (i, c) in constraints.iter().enumerate() {
                let Some(value) = node.labels.get(&c.topology_key) else {
                    continue;
                };
                let count = if c.topology_key == HOSTNAME {
                    count_matching(c, pod, node) as i64
                } else {
                    pairs.get(&(i, value.clone())).copied().unwrap_or(0)
                };
                score += count as f64 * weights[i] + f64::from(c.max_skew - 1);
            }
            Some(score.round() as i64)
        })
        .collect();
    let min = raw.iter().flatten().copied().min().unwrap_or(0);
    let max = raw.iter().flatten().copied().max().unwrap_or(0);
    Some(
        raw.into_iter()
            .map(|s| match s {
                None => 0,
                Some(_) if max == 0 => MAX_NODE_SCORE,
                Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
            })
            .collect(),
    )
}

//! The Score plugins of the default profile, each normalised to 0–100 and weighted as
//! upstream's default profile weighs them: TaintToleration 3, NodeAffinity 2,
//! PodTopologySpread 2, InterPodAffinity 2, NodeResourcesFit 1, BalancedAllocation 1,
//! ImageLocality 1.

pub mod image;
pub mod interpod;
pub mod node;
pub mod resources;
pub mod spread;

use crate::filters::CycleState;
use crate::snapshot::{Cache, NodeInfo};

/// The highest score a plugin gives a node.
pub const MAX_NODE_SCORE: i64 = 100;

/// Scales `scores` to 0–100 by the highest (reversed when `reverse`), as upstream's
/// `DefaultNormalizeScore`.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for score in scores.iter_mut() {
        *score = MAX_NODE_SCORE * *score / max;
        if reverse {
            *score = MAX_NODE_SCORE - *score;
        }
    }
}

/// The weighted total of every plugin's normalised score for each of `nodes`.
pub fn score(cache: &Cache, state: &CycleState, nodes: &[&NodeInfo]) -> Vec<i64> {
    let pod = &state.pod;
    let mut total = vec![0i64; nodes.len()];
    let mut add = |scores: Vec<i64>, weight: i64| {
        for (t, s) in total.iter_mut().zip(scores) {
            *t += s * weight;
        }
    };
    add(node::taint_toleration(pod, nodes), 3);
    add(node::node_affinity(pod, nodes), 2);
    if let Some(scores) = spread::score(cache, pod, nodes) {
        add(scores, 2);
    }
    if let Some(scores) = interpod::score(cache, pod, nodes) {
        add(scores, 2);
    }
    add(
        nodes
            .iter()
            .map(|n| resources::least_allocated(pod, n))
            .collect(),
        1,
    );
    if !pod.requests.is_zero() {
        add(
            nodes
                .iter()
                .map(|n| resources::balanced_allocation(pod, n))
                .collect(),
            1,
        );
    }
    add(image::score(cache, pod, nodes), 1);
    total
}

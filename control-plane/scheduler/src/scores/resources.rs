//! NodeResourcesFit's LeastAllocated strategy and NodeResourcesBalancedAllocation, over CPU
//! and memory with weight 1 each.

use crate::snapshot::{NodeInfo, PodInfo};

use super::MAX_NODE_SCORE;

/// LeastAllocated: the free share of CPU and memory after placing the pod, averaged; pods
/// without requests count the defaults (100m, 200Mi).
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let pairs = [
        (
            node.allocatable.milli_cpu,
            node.non_zero_requested.milli_cpu + pod.non_zero.milli_cpu,
        ),
        (
            node.allocatable.memory,
            node.non_zero_requested.memory + pod.non_zero.memory,
        ),
    ];
    let mut sum = 0;
    let mut weights = 0;
    for (allocatable, requested) in pairs {
        if allocatable == 0 {
            continue;
        }
        weights += 1;
        if requested <= allocatable {
            sum += (allocatable - requested) * MAX_NODE_SCORE / allocatable;
        }
    }
    if weights == 0 { 0 } else { sum / weights }
}

/// BalancedAllocation: 100 × (1 − the standard deviation of the CPU and memory fractions
/// requested after placing the pod).
pub fn balanced_allocation(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let fraction = |allocatable: i64, requested: i64| {
        if allocatable == 0 {
            None
        } else {
            Some((requested as f64 / allocatable as f64).min(1.0))
        }
    };
    let fractions: Vec<f64> = [
        fraction(
            node.allocatable.milli_cpu,
            node.requested.milli_cpu + pod.requests.milli_cpu,
        ),
        fraction(
            node.allocatable.memory,
            node.requested.memory + pod.requests.memory,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let std = match fractions.as_slice() {
        [a, b] => (a - b).abs() / 2.0,
        _ => 0.0,
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

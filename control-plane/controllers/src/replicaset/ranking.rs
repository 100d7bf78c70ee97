//! Which pods a ReplicaSet deletes first when it scales down (upstream's ActivePodsWithRanks):
//! unscheduled before scheduled, Pending < Unknown < Running, not ready before ready, lower
//! pod-deletion-cost first, more co-located pods of the same owner first, recently ready first
//! (in logarithmic buckets), more restarts first, newer first.

use std::cmp::Ordering;
use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

use super::podutil;

/// `controller.kubernetes.io/pod-deletion-cost`.
const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

fn phase_rank(pod: &Pod) -> u8 {
    match podutil::phase(pod) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn node(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

/// floor(log2(age in ns)), -1 for no age: ages in the same bucket count as equal, so that
/// scale-down does not always pick the very newest pods (LogarithmicScaleDown).
fn log_bucket(since: Option<jiff::Timestamp>, now: jiff::Timestamp) -> i64 {
    match since {
        Some(t) => {
            let age = now.duration_since(t).as_nanos();
            if age > 0 {
                (age as f64).log2() as i64
            } else {
                -1
            }
        }
        None => -1,
    }
}

/// Orders `a` before `b` when `a` should be deleted first.
fn compare(a: &(Pod, usize), b: &(Pod, usize), now: jiff::Timestamp) -> Ordering {
    let (pa, ra) = a;
    let (pb, rb) = b;
    let (na, nb) = (node(pa), node(pb));
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    let by_phase = phase_rank(pa).cmp(&phase_rank(pb));
    if by_phase != Ordering::Equal {
        return by_phase;
    }
    let (ready_a, ready_b) = (podutil::is_ready(pa), podutil::is_ready(pb));
    if ready_a != ready_b {
        return if ready_a {
            Ordering::Greater
        } else {
            Ordering::Less
        };
    }
    let by_cost = deletion_cost(pa).cmp(&deletion_cost(pb));
    if by_cost != Ordering::Equal {
        return by_cost;
    }
    if ra != rb {
        // More co-located pods: delete first.
        return rb.cmp(ra);
    }
    let uid_order = || pa.metadata.uid.cmp(&pb.metadata.uid);
    if ready_a && ready_b {
        let (ta, tb) = (podutil::ready_since(pa), podutil::ready_since(pb));
        if ta != tb {
            let diff = log_bucket(ta, now) - log_bucket(tb, now);
            if diff != 0 {
                // Younger (smaller bucket) first.
                return diff.cmp(&0);
            }
            return uid_order();
        }
    }
    let by_restarts = podutil::max_restarts(pb).cmp(&podutil::max_restarts(pa));
    if by_restarts != Ordering::Equal {
        return by_restarts;
    }
    let (ca, cb) = (
        pa.metadata.creation_timestamp.as_ref().map(|t| t.0),
        pb.metadata.creation_timestamp.as_ref().map(|t| t.0),
    );
    if ca != cb {
        let diff = log_bucket(ca, now) - log_bucket(cb, now);
        if diff != 0 {
            return diff.cmp(&0);
        }
        return uid_order();
    }
    Ordering::Equal
}

/// The `count` pods of `pods` to delete first; `related` are the active and inactive pods of
/// every ReplicaSet with the same owner, which rank pods by how many share their node.
pub fn pods_to_delete(mut pods: Vec<Pod>, related: &[Pod], count: usize) -> Vec<Pod> {
    if count >= pods.len() {
        return pods;
    }
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for pod in related.iter().filter(|p| podutil::is_active(p)) {
        *on_node.entry(node(pod)).or_default() += 1;
    }
    let mut ranked: Vec<(Pod, usize)> = pods
        .drain(..)
        .map(|pod| {
            let rank = on_node.get(node(&pod)).copied().unwrap_or(0);
            (pod, rank)
        })
        .collect();
    let now = jiff::Timestamp::now();
    ranked.sort_by(|a, b| compare(a, b, now));
    ranked.into_iter().take(count).map(|(pod, _)| pod).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, phase: &str, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "uid": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": phase, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" },
                 "lastTransitionTime": "2026-01-01T00:00:10Z"}]},
        }))
        .unwrap_or_default()
    }

    #[test]
    fn unscheduled_pending_and_unready_pods_go_first() {
        let pods = vec![
            pod("running", "n1", "Running", true),
            pod("unready", "n1", "Running", false),
            pod("pending", "n1", "Pending", false),
            pod("unscheduled", "", "Pending", false),
        ];
        let names: Vec<String> = pods_to_delete(pods, &[], 3)
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        assert_eq!(names, ["unscheduled", "pending", "unready"]);
    }

    #[test]
    fn doubled_up_pods_go_before_lonely_ones() {
        let pods = vec![
            pod("alone", "n1", "Running", true),
            pod("crowded", "n2", "Running", true),
        ];
        let related = vec![
            pod("alone", "n1", "Running", true),
            pod("crowded", "n2", "Running", true),
            pod("other", "n2", "Running", true),
        ];
        let chosen = pods_to_delete(pods, &related, 1);
        assert_eq!(chosen[0].metadata.name.as_deref(), Some("crowded"));
    }
}

//! The taints the node controller owns, derived from the node's conditions: NoSchedule ones
//! as TaintNodesByCondition sets them, and the NoExecute `not-ready` / `unreachable` ones
//! that make the taint-eviction controller evict pods.

use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::health::condition;

/// The taint of a node whose Ready condition is False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is Unknown.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a cordoned node.
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// The taint of a node under memory pressure.
pub const MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
/// The taint of a node under disk pressure.
pub const DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
/// The taint of a node under PID pressure.
pub const PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
/// The taint of a node whose network is not set up.
pub const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// Every taint key the controller manages.
const OWNED: [&str; 7] = [
    NOT_READY,
    UNREACHABLE,
    UNSCHEDULABLE,
    MEMORY_PRESSURE,
    DISK_PRESSURE,
    PID_PRESSURE,
    NETWORK_UNAVAILABLE,
];

/// NoSchedule taints by condition, as upstream's nodeConditionToTaintKeyStatusMap.
fn no_schedule(node: &Node) -> Vec<&'static str> {
    let status = |kind: &str| condition(node, kind).map(|c| c.status.as_str());
    let mut keys = Vec::new();
    match status("Ready") {
        Some("False") => keys.push(NOT_READY),
        Some("Unknown") => keys.push(UNREACHABLE),
        _ => {}
    }
    for (kind, key) in [
        ("MemoryPressure", MEMORY_PRESSURE),
        ("DiskPressure", DISK_PRESSURE),
        ("PIDPressure", PID_PRESSURE),
        ("NetworkUnavailable", NETWORK_UNAVAILABLE),
    ] {
        if status(kind) == Some("True") {
            keys.push(key);
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        keys.push(UNSCHEDULABLE);
    }
    keys
}

/// The NoExecute taint the Ready condition calls for, if any.
pub fn no_execute(node: &Node) -> Option<&'static str> {
    match condition(node, "Ready").map(|c| c.status.as_str()) {
        Some("False") => Some(NOT_READY),
        Some("Unknown") => Some(UNREACHABLE),
        _ => None,
    }
}

/// Whether the node carries one of the controller's NoExecute taints now.
pub fn has_no_execute(node: &Node) -> bool {
    taints(node)
        .iter()
        .any(|t| t.effect == "NoExecute" && (t.key == NOT_READY || t.key == UNREACHABLE))
}

fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// The node's taints as they should be, or `None` when they already are. Taints of other
/// owners are kept in place; the controller's taints that stay keep their `timeAdded`; new
/// ones are stamped `now`. `allow_new_no_execute` is false while the eviction rate limit
/// holds back a fresh NoExecute taint (swapping not-ready for unreachable is not held back).
pub fn desired(
    node: &Node,
    now: jiff::Timestamp,
    allow_new_no_execute: bool,
) -> Option<Vec<Taint>> {
    let current = taints(node);
    let mut wanted: Vec<(&str, &str)> = no_schedule(node)
        .into_iter()
        .map(|key| (key, "NoSchedule"))
        .collect();
    if let Some(key) = no_execute(node)
        && (allow_new_no_execute || has_no_execute(node))
    {
        wanted.push((key, "NoExecute"));
    }
    let owned = |t: &Taint| {
        OWNED.contains(&t.key.as_str()) && (t.effect == "NoSchedule" || t.effect == "NoExecute")
    };
    let mut result: Vec<Taint> = current
        .iter()
        .filter(|t| !owned(t) || wanted.contains(&(t.key.as_str(), t.effect.as_str())))
        .cloned()
        .collect();
    for (key, effect) in &wanted {
        if !result.iter().any(|t| t.key == *key && t.effect == *effect) {
            result.push(Taint {
                key: (*key).into(),
                effect: (*effect).into(),
                value: None,
                time_added: Some(Time(now)),
            });
        }
    }
    (result.as_slice() != current).then_some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: &str, taints: serde_json::Value) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "spec": {"taints": taints},
            "status": {"conditions": [
                {"type": "Ready", "status": ready},
                {"type": "DiskPressure", "status": "True"},
            ]},
        }))
        .unwrap_or_default()
    }

    fn keys(taints: &[Taint]) -> Vec<String> {
        taints
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    #[test]
    fn unknown_node_gets_unreachable_taints_and_keeps_others() {
        let n = node(
            "Unknown",
            serde_json::json!([{"key": "mine", "effect": "NoSchedule"}]),
        );
        let now = jiff::Timestamp::now();
        let taints = desired(&n, now, true).unwrap_or_default();
        assert_eq!(
            keys(&taints),
            [
                "mine:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/disk-pressure:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute",
            ]
        );
        let held = desired(&n, now, false).unwrap_or_default();
        assert!(!keys(&held).contains(&"node.kubernetes.io/unreachable:NoExecute".to_string()));
    }

    #[test]
    fn ready_node_loses_them_and_false_swaps() {
        let n = node(
            "True",
            serde_json::json!([
                {"key": UNREACHABLE, "effect": "NoExecute"},
                {"key": UNREACHABLE, "effect": "NoSchedule"},
                {"key": DISK_PRESSURE, "effect": "NoSchedule"},
            ]),
        );
        let now = jiff::Timestamp::now();
        assert_eq!(
            keys(&desired(&n, now, false).unwrap_or_default()),
            ["node.kubernetes.io/disk-pressure:NoSchedule"]
        );
        let mut f = n.clone();
        if let Some(c) = f.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            c[0].status = "False".into();
        }
        // The swap to not-ready happens even while new NoExecute taints are held back.
        let swapped = keys(&desired(&f, now, false).unwrap_or_default());
        assert!(swapped.contains(&"node.kubernetes.io/not-ready:NoExecute".to_string()));
        assert!(!swapped.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string()));
        let settled = node(
            "True",
            serde_json::json!([{"key": DISK_PRESSURE, "effect": "NoSchedule"}]),
        );
        assert!(desired(&settled, now, true).is_none());
    }
}

//! Whether a node is still heard from: the controller's own clock stamps the moment it last
//! saw the node's Lease renewed or its Ready heartbeat move (so clock skew between node and
//! control plane does not matter, as upstream's probeTimestamp), and a node silent for longer
//! than the grace period has its kubelet-owned conditions turned Unknown.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The conditions the kubelet posts and the controller turns Unknown when it stops.
pub const KUBELET_CONDITIONS: [&str; 4] =
    ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
/// Reason of a condition the kubelet stopped posting.
pub const UNKNOWN_REASON: &str = "NodeStatusUnknown";
/// Message of a condition the kubelet stopped posting (upstream's text).
pub const UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";
/// Reason of a condition the kubelet never posted.
pub const NEVER_REASON: &str = "NodeStatusNeverUpdated";
/// Message of a condition the kubelet never posted (upstream's text).
pub const NEVER_MESSAGE: &str = "Kubelet never posted node status.";

/// What was last seen of one node.
#[derive(Debug, Clone)]
struct Seen {
    probe: Instant,
    lease_renew: Option<String>,
    heartbeat: Option<String>,
}

/// The last time each node was heard from, by name.
#[derive(Debug, Default)]
pub struct Probes {
    seen: HashMap<String, Seen>,
}

impl Probes {
    /// Notes what the node and its Lease show now; returns how long the node has been silent.
    /// A node seen for the first time counts as just heard from.
    pub fn observe(&mut self, node: &Node, lease_renew: Option<String>, now: Instant) -> Duration {
        let name = node.metadata.name.clone().unwrap_or_default();
        let heartbeat = condition(node, "Ready")
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0.to_string());
        let seen = self.seen.entry(name).or_insert_with(|| Seen {
            probe: now,
            lease_renew: lease_renew.clone(),
            heartbeat: heartbeat.clone(),
        });
        if seen.lease_renew != lease_renew || seen.heartbeat != heartbeat {
            seen.probe = now;
            seen.lease_renew = lease_renew;
            seen.heartbeat = heartbeat;
        }
        now.saturating_duration_since(seen.probe)
    }

    /// Forgets nodes that are gone.
    pub fn retain(&mut self, alive: impl Fn(&str) -> bool) {
        self.seen.retain(|name, _| alive(name));
    }
}

/// The node's condition of type `kind`.
pub fn condition<'a>(node: &'a Node, kind: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

/// The status of the node's Ready condition (`"Unknown"` when it has none).
pub fn ready_status(node: &Node) -> &str {
    condition(node, "Ready").map_or("Unknown", |c| c.status.as_str())
}

/// The conditions with the kubelet's ones set Unknown, or `None` when they already are:
/// a posted condition keeps its heartbeat and moves its transition time; a missing one is
/// added as never updated, its heartbeat the node's creation.
pub fn unknown_conditions(node: &Node, now: jiff::Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let mut changed = false;
    for kind in KUBELET_CONDITIONS {
        match conditions.iter_mut().find(|c| c.type_ == kind) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some(UNKNOWN_REASON.into());
                c.message = Some(UNKNOWN_MESSAGE.into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            None => {
                conditions.push(NodeCondition {
                    type_: kind.into(),
                    status: "Unknown".into(),
                    reason: Some(NEVER_REASON.into()),
                    message: Some(NEVER_MESSAGE.into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conditions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: &str, heartbeat: &str) -> Node {
        let value = serde_json::json!({
            "metadata": {"name": "n", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": [
                {"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat,
                 "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "MemoryPressure", "status": "False"},
            ]},
        });
        serde_json::from_value(value).unwrap_or_default()
    }

    #[test]
    fn silence_counts_from_the_last_change() {
        let mut probes = Probes::default();
        let start = Instant::now();
        let n = node("True", "2026-01-01T00:00:00Z");
        assert_eq!(probes.observe(&n, Some("a".into()), start), Duration::ZERO);
        let later = start + Duration::from_secs(10);
        assert_eq!(
            probes.observe(&n, Some("a".into()), later),
            Duration::from_secs(10)
        );
        assert_eq!(probes.observe(&n, Some("b".into()), later), Duration::ZERO);
        let n = node("True", "2026-01-01T00:01:00Z");
        let later = later + Duration::from_secs(3);
        assert_eq!(probes.observe(&n, Some("b".into()), later), Duration::ZERO);
    }

    #[test]
    fn unknown_keeps_heartbeats_and_adds_missing() {
        let n = node("True", "2026-01-01T00:00:00Z");
        let now = jiff::Timestamp::now();
        let conditions = unknown_conditions(&n, now).unwrap_or_default();
        assert_eq!(conditions.len(), 4);
        let ready = &conditions[0];
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some(UNKNOWN_REASON));
        assert_eq!(ready.message.as_deref(), Some(UNKNOWN_MESSAGE));
        assert_eq!(
            ready.last_heartbeat_time.as_ref().map(|t| t.0.to_string()),
            Some("2026-01-01T00:00:00Z".into())
        );
        let disk = conditions.iter().find(|c| c.type_ == "DiskPressure");
        assert_eq!(disk.and_then(|c| c.reason.as_deref()), Some(NEVER_REASON));
        let mut unknown = n.clone();
        if let Some(status) = unknown.status.as_mut() {
            status.conditions = Some(conditions);
        }
        assert!(unknown_conditions(&unknown, now).is_none());
    }
}

//! Filters that read only the node and the pod: NodeUnschedulable, NodeName, TaintToleration,
//! NodeAffinity (nodeSelector and required node affinity) and NodePorts.

use super::{Code, Status};
use crate::selectors::{term_matches, tolerated};
use crate::snapshot::{NodeInfo, PodInfo};

/// NodeUnschedulable's reason.
pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// NodeName's reason.
pub const REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";
/// NodeAffinity's reason.
pub const REASON_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
/// NodePorts' reason.
pub const REASON_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";

/// A cordoned node takes only pods tolerating `node.kubernetes.io/unschedulable:NoSchedule`.
pub fn unschedulable(pod: &PodInfo, node: &NodeInfo) -> Option<Status> {
    if !node.unschedulable {
        return None;
    }
    let taint = k8s_openapi::api::core::v1::Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    (!tolerated(&pod.tolerations, &taint))
        .then(|| Status::new(Code::UnschedulableAndUnresolvable, REASON_UNSCHEDULABLE))
}

/// A pod naming a node fits only that one.
pub fn node_name(pod: &PodInfo, node: &NodeInfo) -> Option<Status> {
    let wanted = pod.node_name.as_deref()?;
    (wanted != node.name).then(|| Status::new(Code::UnschedulableAndUnresolvable, REASON_NODE_NAME))
}

/// The first NoSchedule / NoExecute taint the pod does not tolerate fails the node.
pub fn taint_toleration(pod: &PodInfo, node: &NodeInfo) -> Option<Status> {
    let taint = node.taints.iter().find(|taint| {
        (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
            && !tolerated(&pod.tolerations, taint)
    })?;
    Some(Status::new(
        Code::UnschedulableAndUnresolvable,
        &format!(
            "node(s) had untolerated taint {{{}: {}}}",
            taint.key,
            taint.value.as_deref().unwrap_or_default()
        ),
    ))
}

/// Whether the node satisfies the pod's nodeSelector and required node affinity.
pub fn matches_node_affinity(pod: &PodInfo, node: &NodeInfo) -> bool {
    let spec = pod.pod.spec.as_ref();
    let selector_ok = spec
        .and_then(|s| s.node_selector.as_ref())
        .is_none_or(|selector| selector.iter().all(|(k, v)| node.labels.get(k) == Some(v)));
    if !selector_ok {
        return false;
    }
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    required.is_none_or(|selector| {
        selector
            .node_selector_terms
            .iter()
            .any(|term| term_matches(term, &node.name, &node.labels))
    })
}

/// NodeAffinity's filter.
pub fn node_affinity(pod: &PodInfo, node: &NodeInfo) -> Option<Status> {
    (!matches_node_affinity(pod, node))
        .then(|| Status::new(Code::UnschedulableAndUnresolvable, REASON_NODE_AFFINITY))
}

/// NodePorts: a host port (and protocol) taken on the same or a wildcard IP fails the node.
pub fn node_ports(pod: &PodInfo, node: &NodeInfo) -> Option<Status> {
    let conflict = pod.host_ports.iter().any(|(ip, protocol, port)| {
        node.used_ports
            .keys()
            .any(|(used_ip, used_protocol, used_port)| {
                used_port == port
                    && used_protocol == protocol
                    && (used_ip == ip || used_ip == "0.0.0.0" || ip == "0.0.0.0")
            })
    });
    conflict.then(|| Status::new(Code::Unschedulable, REASON_NODE_PORTS))
}

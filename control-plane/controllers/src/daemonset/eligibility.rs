//! Which nodes a DaemonSet runs on (`NodeShouldRunDaemonPod`): the template's nodeName,
//! nodeSelector and required node affinity must match, and the node's NoSchedule / NoExecute
//! taints must be tolerated by the pod, including the tolerations the controller adds.

use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PodSpec,
    Taint, Toleration,
};

use crate::apps_shared::selector;

/// Whether a daemon pod should be created on a node, and whether one already there may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eligibility {
    /// A pod should run there.
    pub should_run: bool,
    /// A pod running there may continue (only NoExecute taints evict).
    pub should_continue: bool,
}

/// `NodeShouldRunDaemonPod` for a pod with `spec` (the template with the daemon tolerations).
pub fn of(node: &Node, spec: &PodSpec) -> Eligibility {
    let neither = Eligibility {
        should_run: false,
        should_continue: false,
    };
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return neither;
    }
    if !fits_node_selector(node, spec) {
        return neither;
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let untolerated = |effects: &[&str]| {
        taints
            .iter()
            .filter(|t| effects.contains(&t.effect.as_str()))
            .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    };
    if untolerated(&["NoSchedule", "NoExecute"]) {
        return Eligibility {
            should_run: false,
            should_continue: !untolerated(&["NoExecute"]),
        };
    }
    Eligibility {
        should_run: true,
        should_continue: true,
    }
}

/// nodeSelector and required node affinity, as `GetRequiredNodeAffinity(pod).Match(node)`.
fn fits_node_selector(node: &Node, spec: &PodSpec) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let by_selector = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    by_selector
        && required.is_none_or(|r| selector::node_matches_terms(&r.node_selector_terms, node))
}

/// `ToleratesTaint`: effect (empty tolerates all), key (empty with Exists tolerates all),
/// then Exists or Equal on the value.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if toleration
        .effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    if toleration
        .key
        .as_deref()
        .is_some_and(|k| !k.is_empty() && k != taint.key)
    {
        return false;
    }
    match toleration.operator.as_deref() {
        Some("Exists") => true,
        None | Some("") | Some("Equal") => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// Adds the tolerations every daemon pod gets (`AddOrUpdateDaemonPodTolerations`): not-ready
/// and unreachable NoExecute without tolerationSeconds, the node-pressure and unschedulable
/// NoSchedule ones, and network-unavailable for host-network pods.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let toleration = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            value: None,
            toleration_seconds: None,
        };
        // `AddOrUpdateTolerationInPodSpec`: one with the same key, operator, value and effect
        // is replaced, anything else is kept.
        tolerations.retain(|t| {
            !(t.key == toleration.key
                && t.effect == toleration.effect
                && t.operator.as_deref().unwrap_or("Equal") == "Exists"
                && t.value.as_deref().unwrap_or_default().is_empty())
        });
        tolerations.push(toleration);
    }
}

/// Replaces the required node affinity with the single term `metadata.name In [node]`
/// (`ReplaceDaemonSetPodNodeNameNodeAffinity`); preferred terms are kept.
pub fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let term = NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![term],
    });
}

/// The node a daemon pod is for: its nodeName, or the node its `metadata.name` term names.
pub fn target_node(spec: &PodSpec) -> Option<String> {
    if let Some(name) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(name.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref())
        .filter(|v| v.len() == 1)
        .and_then(|v| v.first().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;
    use kube::api::ObjectMeta;

    fn node(taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n".into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: None,
        }
    }

    #[test]
    fn daemon_tolerations_cover_not_ready_and_unschedulable() {
        let mut spec = PodSpec::default();
        add_daemon_tolerations(&mut spec);
        let n = node(vec![
            taint("node.kubernetes.io/not-ready", "NoExecute"),
            taint("node.kubernetes.io/unschedulable", "NoSchedule"),
        ]);
        assert!(of(&n, &spec).should_run);
        let n = node(vec![taint("dedicated", "NoSchedule")]);
        assert_eq!(
            of(&n, &spec),
            Eligibility {
                should_run: false,
                should_continue: true
            }
        );
        let n = node(vec![taint("dedicated", "NoExecute")]);
        assert!(!of(&n, &spec).should_continue);
    }

    #[test]
    fn pinned_pods_name_their_node() {
        let mut spec = PodSpec::default();
        pin_to_node(&mut spec, "node-3");
        assert_eq!(target_node(&spec).as_deref(), Some("node-3"));
    }
}

//! PodTopologySpread's filter for `whenUnsatisfiable: DoNotSchedule`: the pods matching a
//! constraint's selector are counted per topology domain (over the nodes the pod could go to),
//! and a node fails when placing the pod there would make its domain's count exceed the
//! smallest domain's by more than `maxSkew`.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::node::matches_node_affinity;
use super::{Code, Status};
use crate::selectors::{selects, tolerated};
use crate::snapshot::{Cache, NodeInfo, PodInfo};

/// The reason of a node whose domain would be too skewed.
pub const REASON_SKEW: &str = "node(s) didn't match pod topology spread constraints";
/// The reason of a node without a constraint's topology label.
pub const REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// A constraint with its selector completed by `matchLabelKeys`.
#[derive(Debug, Clone)]
pub struct Constraint {
    /// The node label naming the domain.
    pub topology_key: String,
    /// The allowed skew.
    pub max_skew: i32,
    /// Fewer domains than this count as a global minimum of 0.
    pub min_domains: Option<i32>,
    /// Pods counted.
    pub selector: LabelSelector,
    /// Whether nodes failing the pod's node affinity are left out (`Honor`, the default).
    pub honor_affinity: bool,
    /// Whether nodes with untolerated taints are left out (`Ignore` by default).
    pub honor_taints: bool,
}

/// The pod's constraints with `whenUnsatisfiable` equal to `when`.
pub fn constraints(pod: &PodInfo, when: &str) -> Vec<Constraint> {
    let spec = pod.pod.spec.as_ref();
    spec.and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| constraint(pod, c))
        .collect()
}

fn constraint(pod: &PodInfo, c: &TopologySpreadConstraint) -> Constraint {
    let mut selector = c.label_selector.clone().unwrap_or_default();
    for key in c.match_label_keys.iter().flatten() {
        if let Some(value) = pod.labels.get(key) {
            selector
                .match_expressions
                .get_or_insert_with(Vec::new)
                .push(LabelSelectorRequirement {
                    key: key.clone(),
                    operator: "In".into(),
                    values: Some(vec![value.clone()]),
                });
        }
    }
    Constraint {
        topology_key: c.topology_key.clone(),
        max_skew: c.max_skew,
        min_domains: c.min_domains,
        selector,
        honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
        honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
    }
}

/// Whether `node` takes part in counting for `constraint`.
pub fn node_counts(constraint: &Constraint, pod: &PodInfo, node: &NodeInfo) -> bool {
    (!constraint.honor_affinity || matches_node_affinity(pod, node))
        && (!constraint.honor_taints
            || node.taints.iter().all(|t| {
                !(t.effect == "NoSchedule" || t.effect == "NoExecute")
                    || tolerated(&pod.tolerations, t)
            }))
}

/// The pods on `node` that `constraint` counts for `pod`: same namespace, not terminating.
pub fn count_matching(constraint: &Constraint, pod: &PodInfo, node: &NodeInfo) -> usize {
    node.pods
        .values()
        .filter(|p| {
            !p.terminating
                && p.namespace == pod.namespace
                && selects(&constraint.selector, &p.labels)
        })
        .count()
}

/// The counts per constraint and domain, and each constraint's global minimum.
#[derive(Debug, Default)]
pub struct FilterState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, usize>>,
    minimum: Vec<usize>,
}

impl FilterState {
    /// PreFilter: counts over every node that has all the constraints' keys.
    pub fn new(cache: &Cache, pod: &PodInfo) -> FilterState {
        let constraints = constraints(pod, "DoNotSchedule");
        if constraints.is_empty() {
            return FilterState::default();
        }
        let mut counts = vec![HashMap::new(); constraints.len()];
        for node in cache.ready_nodes() {
            if !constraints
                .iter()
                .all(|c| node.labels.contains_key(&c.topology_key))
            {
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                if !node_counts(c, pod, node) {
                    continue;
                }
                let value = node.labels[&c.topology_key].clone();
                *counts[i].entry(value).or_insert(0) += count_matching(c, pod, node);
            }
        }
        let minimum = constraints
            .iter()
            .zip(&counts)
            .map(|(c, domains)| {
                let few = c
                    .min_domains
                    .is_some_and(|min| (domains.len() as i64) < i64::from(min));
                if few {
                    0
                } else {
                    domains.values().copied().min().unwrap_or(0)
                }
            })
            .collect();
        FilterState {
            constraints,
            counts,
            minimum,
        }
    }

    /// Filter.
    pub fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Option<Status> {
        for (i, c) in self.constraints.iter().enumerate() {
            let Some(value) = node.labels.get(&c.topology_key) else {
                return Some(Status::new(
                    Code::UnschedulableAndUnresolvable,
                    REASON_MISSING_LABEL,
                ));
            };
            let own = usize::from(selects(&c.selector, &pod.labels));
            let count = self.counts[i].get(value).copied().unwrap_or(0);
            let skew = (count + own) as i64 - self.minimum[i] as i64;
            if skew > i64::from(c.max_skew) {
                return Some(Status::new(Code::Unschedulable, REASON_SKEW));
            }
        }
        None
    }
}

//! The Filter plugins of kube-scheduler's default profile, in its order: each says whether a
//! node can take the pod, and if not, why (the reasons counted in the failure message).

pub mod fit;
pub mod interpod;
pub mod node;
pub mod spread;
pub mod volume_binding;
pub mod volume_restrictions;
pub mod volume_zone;

use std::sync::Arc;

use crate::snapshot::{Cache, NodeInfo, PodInfo};
use crate::volumes::Volumes;

/// How a node failed a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Removing pods (preemption) might make it fit.
    Unschedulable,
    /// Preemption cannot help on this node.
    UnschedulableAndUnresolvable,
}

/// A failed filter: the code and the reasons shown to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Whether preemption may help.
    pub code: Code,
    /// The reasons, e.g. `Insufficient cpu`.
    pub reasons: Vec<String>,
}

impl Status {
    /// A failure with one reason.
    pub fn new(code: Code, reason: &str) -> Status {
        Status {
            code,
            reasons: vec![reason.to_string()],
        }
    }

    /// The reasons as one message, as upstream's `Status.Message()` joins them.
    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }
}

/// What the PreFilter step computes once per pod and cycle, for the per-node filters.
#[derive(Debug)]
pub struct CycleState {
    /// The pod being scheduled.
    pub pod: Arc<PodInfo>,
    /// PodTopologySpread's counts for DoNotSchedule constraints.
    pub spread: spread::FilterState,
    /// InterPodAffinity's counts.
    pub interpod: interpod::FilterState,
    /// VolumeRestrictions' ReadWriteOncePod claims.
    pub restrictions: volume_restrictions::FilterState,
    /// VolumeBinding's claims.
    pub binding: volume_binding::FilterState,
    /// VolumeZone's volume topologies.
    pub zone: volume_zone::FilterState,
}

impl CycleState {
    /// Runs the PreFilter steps for `pod` against the caches, in the default profile's order;
    /// the first rejection fails the pod on every node.
    pub fn new(cache: &Cache, volumes: &Volumes, pod: Arc<PodInfo>) -> Result<CycleState, Status> {
        let restrictions = volume_restrictions::FilterState::new(cache, volumes, &pod)?;
        let binding = volume_binding::FilterState::new(volumes, &pod)?;
        let zone = volume_zone::FilterState::new(volumes, &pod)?;
        let spread = spread::FilterState::new(cache, &pod);
        let interpod = interpod::FilterState::new(cache, &pod);
        Ok(CycleState {
            pod,
            spread,
            interpod,
            restrictions,
            binding,
            zone,
        })
    }

    /// Whether PreFilter left `node` to the filters (VolumeBinding may pin the pod to the
    /// nodes of its local volumes).
    pub fn considers(&self, node: &str) -> bool {
        self.binding
            .eligible
            .as_ref()
            .is_none_or(|nodes| nodes.contains(node))
    }
}

/// Runs the filters on `node` in the default profile's order; `None` when it fits.
pub fn run(state: &CycleState, node: &NodeInfo) -> Option<Status> {
    let pod = &state.pod;
    node::unschedulable(pod, node)
        .or_else(|| node::node_name(pod, node))
        .or_else(|| node::taint_toleration(pod, node))
        .or_else(|| node::node_affinity(pod, node))
        .or_else(|| node::node_ports(pod, node))
        .or_else(|| fit::fit(pod, node))
        .or_else(|| state.restrictions.filter(node))
        .or_else(|| state.binding.filter(node))
        .or_else(|| state.zone.filter(node))
        .or_else(|| state.spread.filter(pod, node))
        .or_else(|| state.interpod.filter(node))
}

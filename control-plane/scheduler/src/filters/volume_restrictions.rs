//! VolumeRestrictions for claims: a ReadWriteOncePod claim may be used by one pod only, so a
//! pod wanting one that an assigned pod uses fits no node until that pod goes (preemption may
//! make it go).

use std::collections::{HashMap, HashSet};

use super::{Code, Status};
use crate::snapshot::{Cache, NodeInfo, PodInfo};
use crate::volumes::Volumes;

/// The reason of every node while another pod uses the pod's ReadWriteOncePod claim.
pub const REASON_READ_WRITE_ONCE_POD: &str =
    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode";

/// The pod's ReadWriteOncePod claims and how many assigned pods' volumes use them.
#[derive(Debug, Default)]
pub struct FilterState {
    /// `namespace/name` of the pod's ReadWriteOncePod claims.
    claims: HashSet<String>,
    /// Volumes of assigned pods using them, over the cluster.
    total: usize,
    /// The same, per node, so that a node copy without some pods (preemption) is counted anew.
    per_node: HashMap<String, usize>,
}

/// `persistentvolumeclaim "name" not found`, the API's NotFound text.
pub fn claim_not_found(name: &str) -> Status {
    Status::new(
        Code::UnschedulableAndUnresolvable,
        &format!("persistentvolumeclaim \"{name}\" not found"),
    )
}

fn users(node: &NodeInfo, claims: &HashSet<String>) -> usize {
    claims.iter().filter_map(|c| node.claim_refs.get(c)).sum()
}

impl FilterState {
    /// PreFilter: every claim of a `persistentVolumeClaim` volume must exist.
    pub fn new(cache: &Cache, volumes: &Volumes, pod: &PodInfo) -> Result<FilterState, Status> {
        let mut state = FilterState::default();
        for claim in pod.claims.iter().filter(|c| !c.ephemeral) {
            let Some(object) = volumes.claim(&pod.namespace, &claim.name) else {
                return Err(claim_not_found(&claim.name));
            };
            let once = object
                .spec
                .as_ref()
                .and_then(|s| s.access_modes.as_ref())
                .is_some_and(|m| m.iter().any(|m| m == "ReadWriteOncePod"));
            if once {
                state
                    .claims
                    .insert(format!("{}/{}", pod.namespace, claim.name));
            }
        }
        if state.claims.is_empty() {
            return Ok(state);
        }
        for node in cache.nodes.values() {
            let count = users(node, &state.claims);
            if count > 0 {
                state.total += count;
                state.per_node.insert(node.name.clone(), count);
            }
        }
        Ok(state)
    }

    /// Filter.
    pub fn filter(&self, node: &NodeInfo) -> Option<Status> {
        if self.total == 0 && self.claims.is_empty() {
            return None;
        }
        let before = self.per_node.get(&node.name).copied().unwrap_or(0);
        let conflicts = self.total - before + users(node, &self.claims);
        (conflicts > 0).then(|| Status::new(Code::Unschedulable, REASON_READ_WRITE_ONCE_POD))
    }
}

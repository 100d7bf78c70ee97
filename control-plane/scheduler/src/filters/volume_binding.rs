//! VolumeBinding: a pod's claims must exist and not be going away; claims that bind at once
//! must already be bound; bound claims' volumes must admit the node; WaitForFirstConsumer
//! claims must find an available volume fitting the node, or a class that can provision
//! there. What a node would get (static bindings, claims to provision) is recomputed for the
//! chosen node when the pod is assumed, and written before the pod is bound (PreBind).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use super::{Code, Status};
use crate::snapshot::{NodeInfo, PodInfo};
use crate::volumes::{self, Volumes};

/// A PreFilter reason: claims that bind at once are still unbound.
pub const REASON_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// A bound volume's node affinity excludes the node.
pub const REASON_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// No volume to bind and no way to provision one on the node.
pub const REASON_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
/// A bound claim's volume does not exist.
pub const REASON_PV_NOT_EXIST: &str =
    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";

/// What binding the pod's claims on one node takes.
#[derive(Debug, Clone, Default)]
pub struct PodVolumes {
    /// Available volumes to bind to claims: (volume, claim).
    pub static_bindings: Vec<(Arc<PersistentVolume>, Arc<PersistentVolumeClaim>)>,
    /// Claims to annotate with the node for their provisioner.
    pub provisions: Vec<Arc<PersistentVolumeClaim>>,
}

impl PodVolumes {
    /// Whether nothing needs writing before the pod is bound.
    pub fn is_empty(&self) -> bool {
        self.static_bindings.is_empty() && self.provisions.is_empty()
    }
}

/// The pod's claims, sorted as the filter reads them.
#[derive(Debug, Default)]
pub struct FilterState {
    /// The pod has no claims: nothing to check.
    skip: bool,
    /// Bound claims and their volumes (`None`: the volume does not exist).
    bound: Vec<Option<Arc<PersistentVolume>>>,
    /// WaitForFirstConsumer claims not bound yet, smallest request first.
    delayed: Vec<Arc<PersistentVolumeClaim>>,
    /// The volumes of the delayed claims' classes.
    volumes_by_class: HashMap<String, Vec<Arc<PersistentVolume>>>,
    /// The delayed claims' classes.
    classes: HashMap<String, Arc<StorageClass>>,
    /// The nodes local bound volumes pin the pod to (upstream's PreFilterResult); `None`: all.
    pub eligible: Option<HashSet<String>>,
}

fn unresolvable(message: &str) -> Status {
    Status::new(Code::UnschedulableAndUnresolvable, message)
}

impl FilterState {
    /// PreFilter.
    pub fn new(volumes: &Volumes, pod: &PodInfo) -> Result<FilterState, Status> {
        if pod.claims.is_empty() {
            return Ok(FilterState {
                skip: true,
                ..FilterState::default()
            });
        }
        let mut claims = Vec::new();
        for claim in &pod.claims {
            let Some(object) = volumes.claim(&pod.namespace, &claim.name) else {
                if claim.ephemeral {
                    return Err(unresolvable(&format!(
                        "waiting for ephemeral volume controller to create the persistentvolumeclaim \"{}\"",
                        claim.name
                    )));
                }
                return Err(super::volume_restrictions::claim_not_found(&claim.name));
            };
            let phase = object.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase == Some("Lost") {
                return Err(unresolvable(&format!(
                    "persistentvolumeclaim \"{}\" bound to non-existent persistentvolume \"{}\"",
                    claim.name,
                    volumes::bound_volume(object).unwrap_or_default()
                )));
            }
            if object.metadata.deletion_timestamp.is_some() {
                return Err(unresolvable(&format!(
                    "persistentvolumeclaim \"{}\" is being deleted",
                    claim.name
                )));
            }
            if claim.ephemeral {
                let owned = object
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.controller == Some(true) && o.uid == pod.uid);
                if !owned {
                    return Err(unresolvable(&format!(
                        "PVC {}/{} was not created for pod {} (pod is not owner)",
                        pod.namespace, claim.name, pod.key
                    )));
                }
            }
            claims.push(Arc::clone(object));
        }
        let mut state = FilterState::default();
        for claim in claims {
            if let Some(volume_name) = volumes::bound_volume(&claim) {
                let volume = volumes.volume(volume_name).cloned();
                state.bound.push(volume);
                continue;
            }
            let class_name = volumes::claim_class(&claim);
            let class = volumes.class(&class_name);
            if !volumes::delays_binding(class.map(Arc::as_ref)) {
                return Err(unresolvable(REASON_UNBOUND_IMMEDIATE));
            }
            if let Some(class) = class {
                state.classes.insert(class_name.clone(), Arc::clone(class));
            }
            state
                .volumes_by_class
                .entry(class_name.clone())
                .or_insert_with(|| volumes.volumes_of_class(&class_name));
            state.delayed.push(claim);
        }
        state.delayed.sort_by_key(|c| volumes::claim_request(c));
        // A missing volume leaves the node set alone, as upstream's GetEligibleNodes does.
        if state.bound.iter().all(Option::is_some) {
            for volume in state.bound.iter().flatten() {
                let nodes = volumes::local_volume_nodes(volume);
                if nodes.is_empty() {
                    continue;
                }
                state.eligible = Some(match state.eligible.take() {
                    None => nodes,
                    Some(eligible) => eligible.intersection(&nodes).cloned().collect(),
                });
            }
        }
        Ok(state)
    }

    /// Upstream's FindPodVolumes: what the pod's claims need on `node`, or the reasons they
    /// cannot have it there.
    pub fn find_pod_volumes(&self, node: &NodeInfo) -> Result<PodVolumes, Vec<String>> {
        let mut result = PodVolumes::default();
        if self.skip {
            return Ok(result);
        }
        let mut reasons = Vec::new();
        if self.bound.iter().any(Option::is_none) {
            reasons.push(REASON_PV_NOT_EXIST.to_string());
        } else if !self
            .bound
            .iter()
            .flatten()
            .all(|v| volumes::volume_fits_node(v, &node.labels))
        {
            reasons.push(REASON_NODE_CONFLICT.to_string());
        }
        if !self.delayed.is_empty() && !self.find_unbound(node, &mut result) {
            reasons.push(REASON_BIND_CONFLICT.to_string());
        }
        if reasons.is_empty() {
            Ok(result)
        } else {
            Err(reasons)
        }
    }

    /// The delayed claims on `node`: matched to volumes, else provisioned; whether all can be.
    fn find_unbound(&self, node: &NodeInfo, result: &mut PodVolumes) -> bool {
        let mut to_match = Vec::new();
        let mut to_provision = Vec::new();
        for claim in &self.delayed {
            let selected = claim
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(volumes::ANN_SELECTED_NODE));
            match selected {
                Some(selected) if *selected != node.name => return false,
                Some(_) => to_provision.push(Arc::clone(claim)),
                None => to_match.push(claim),
            }
        }
        let mut chosen = HashSet::new();
        for claim in to_match {
            let candidates = self
                .volumes_by_class
                .get(&volumes::claim_class(claim))
                .map(Vec::as_slice)
                .unwrap_or_default();
            match volumes::find_matching_volume(claim, candidates, &node.labels, &chosen) {
                Some(volume) => {
                    chosen.insert(volume.metadata.name.clone().unwrap_or_default());
                    result.static_bindings.push((volume, Arc::clone(claim)));
                }
                None => to_provision.push(Arc::clone(claim)),
            }
        }
        for claim in to_provision {
            let Some(class) = self.classes.get(&volumes::claim_class(&claim)) else {
                return false;
            };
            if class.provisioner.is_empty()
                || class.provisioner == volumes::NO_PROVISIONER
                || !volumes::class_allows_node(class, &node.labels)
            {
                return false;
            }
            result.provisions.push(claim);
        }
        true
    }

    /// Filter.
    pub fn filter(&self, node: &NodeInfo) -> Option<Status> {
        if self.skip {
            return None;
        }
        self.find_pod_volumes(node).err().map(|reasons| Status {
            code: Code::UnschedulableAndUnresolvable,
            reasons,
        })
    }
}

//! VolumeZone: a pod whose bound volumes carry zone or region labels fits only nodes in those
//! zones and regions (nodes with no such label at all fit, as in a single-zone cluster).

use std::collections::HashSet;

use super::{Code, Status};
use crate::snapshot::{NodeInfo, PodInfo};
use crate::volumes::{self, Volumes};

/// The reason of a node outside the volumes' zones.
pub const REASON_ZONE: &str = "node(s) had no available volume zone";

const TOPOLOGY_LABELS: [&str; 4] = [
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
];

/// A volume's topology label and the values it allows (`a__b` lists several zones).
#[derive(Debug, Default)]
pub struct FilterState {
    topologies: Vec<(String, HashSet<String>)>,
}

fn unresolvable(message: &str) -> Status {
    Status::new(Code::UnschedulableAndUnresolvable, message)
}

/// The GA label a beta topology label became.
fn ga_label(key: &str) -> &str {
    match key {
        "failure-domain.beta.kubernetes.io/zone" => "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region" => "topology.kubernetes.io/region",
        other => other,
    }
}

impl FilterState {
    /// PreFilter: reads the zone labels of the volumes the pod's claims are bound to.
    pub fn new(volumes: &Volumes, pod: &PodInfo) -> Result<FilterState, Status> {
        let mut state = FilterState::default();
        for claim in pod.claims.iter().filter(|c| !c.ephemeral) {
            if claim.name.is_empty() {
                return Err(unresolvable("PersistentVolumeClaim had no name"));
            }
            let Some(object) = volumes.claim(&pod.namespace, &claim.name) else {
                return Err(super::volume_restrictions::claim_not_found(&claim.name));
            };
            let Some(volume_name) = volumes::bound_volume(object) else {
                let class_name = volumes::claim_class(object);
                if class_name.is_empty() {
                    return Err(unresolvable(
                        "PersistentVolumeClaim had no pv name and storageClass name",
                    ));
                }
                let Some(class) = volumes.class(&class_name) else {
                    return Err(unresolvable(&format!(
                        "storageclass.storage.k8s.io \"{class_name}\" not found"
                    )));
                };
                if volumes::delays_binding(Some(class)) {
                    continue;
                }
                return Err(unresolvable("PersistentVolume had no name"));
            };
            let Some(volume) = volumes.volume(volume_name) else {
                return Err(unresolvable(&format!(
                    "persistentvolume \"{volume_name}\" not found"
                )));
            };
            let labels = volume.metadata.labels.clone().unwrap_or_default();
            for key in TOPOLOGY_LABELS {
                if let Some(value) = labels.get(key) {
                    let values = value.split("__").map(str::to_string).collect();
                    state.topologies.push((key.to_string(), values));
                }
            }
        }
        Ok(state)
    }

    /// Filter.
    pub fn filter(&self, node: &NodeInfo) -> Option<Status> {
        if self.topologies.is_empty()
            || !TOPOLOGY_LABELS
                .iter()
                .any(|key| node.labels.contains_key(*key))
        {
            return None;
        }
        let mismatch = self.topologies.iter().any(|(key, values)| {
            let value = node
                .labels
                .get(key)
                .or_else(|| node.labels.get(ga_label(key)));
            value.is_none_or(|v| !values.contains(v))
        });
        mismatch.then(|| unresolvable(REASON_ZONE))
    }
}

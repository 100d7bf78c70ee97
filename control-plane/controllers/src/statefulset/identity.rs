//! A StatefulSet pod's identity: its name `<set>-<ordinal>`, labels, hostname and subdomain,
//! and the claims of its volumeClaimTemplates mounted as its volumes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodTemplateSpec, Volume,
};

use super::KIND;
use crate::apps_shared::pods::{self, controller_ref};

/// The label with the pod's name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label with the pod's revision (the ControllerRevision's name).
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The ordinal of a pod of `set` (`<set>-<n>`), if it is one.
pub fn ordinal(set_name: &str, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    let digits = name.strip_prefix(set_name)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The pod's revision label.
pub fn revision(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map_or("", String::as_str)
}

/// The claim name of template `claim` for ordinal `ordinal`: `<claim>-<set>-<ordinal>`.
pub fn claim_name(claim: &str, set_name: &str, ordinal: i32) -> String {
    format!("{claim}-{set_name}-{ordinal}")
}

/// A new pod for `ordinal` from `template` at `revision` (`newVersionedStatefulSetPod`).
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let spec = set.spec.clone().unwrap_or_default();
    let mut pod = pods::from_template(template, &namespace, controller_ref(&set.metadata, KIND));
    let name = format!("{set_name}-{ordinal}");
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.into());
    let pod_spec = pod.spec.get_or_insert_with(PodSpec::default);
    pod_spec.hostname = Some(name);
    if let Some(service) = spec.service_name.filter(|s| !s.is_empty()) {
        pod_spec.subdomain = Some(service);
    }
    // The claims replace any volume of the same name.
    let mut volumes: Vec<Volume> = Vec::new();
    let mut claimed = Vec::new();
    for template in spec.volume_claim_templates.iter().flatten() {
        let Some(claim) = template.metadata.name.clone() else {
            continue;
        };
        volumes.push(Volume {
            name: claim.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&claim, &set_name, ordinal),
                read_only: None,
            }),
            ..Volume::default()
        });
        claimed.push(claim);
    }
    for volume in pod_spec.volumes.take().unwrap_or_default() {
        if !claimed.contains(&volume.name) {
            volumes.push(volume);
        }
    }
    pod_spec.volumes = (!volumes.is_empty()).then_some(volumes);
    pod
}

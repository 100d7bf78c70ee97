//! The claims of a StatefulSet's volumeClaimTemplates: created before their pod, never deleted
//! by the controller; their ownerReferences follow `persistentVolumeClaimRetentionPolicy`
//! (whenDeleted Delete: the set; whenScaled Delete: the pod once it is scaled away), so the
//! garbage collector removes them as upstream.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::identity::claim_name;
use super::{KIND, Shared};
use crate::apps_shared::SyncError;
use crate::apps_shared::pods::controller_ref;
use crate::events::{error_text, related};

/// `(whenDeleted is Delete, whenScaled is Delete)`.
fn policy(set: &StatefulSet) -> (bool, bool) {
    let policy = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let delete = |v: Option<&String>| v.is_some_and(|v| v == "Delete");
    (
        delete(policy.and_then(|p| p.when_deleted.as_ref())),
        delete(policy.and_then(|p| p.when_scaled.as_ref())),
    )
}

fn pod_ref(pod: &Pod) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The claim's ownerReferences as the policy wants them (`updateClaimOwnerRefForSetAndPod`):
/// refs to the set and pod are scrubbed, then re-added as the policy says; `None` to leave the
/// claim alone (it has another controller).
fn wanted_refs(
    claim: &PersistentVolumeClaim,
    set: &StatefulSet,
    pod: Option<&Pod>,
    scaled_down: bool,
) -> Option<Vec<OwnerReference>> {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let pod_name = pod.and_then(|p| p.metadata.name.clone());
    let ours = |r: &OwnerReference| {
        (r.kind == KIND && r.name == set_name)
            || (r.kind == "Pod" && Some(&r.name) == pod_name.as_ref())
    };
    let refs = claim.metadata.owner_references.clone().unwrap_or_default();
    if refs.iter().any(|r| r.controller == Some(true) && !ours(r)) {
        return None;
    }
    let mut refs: Vec<OwnerReference> = refs.into_iter().filter(|r| !ours(r)).collect();
    let (when_deleted, when_scaled) = policy(set);
    if when_scaled && scaled_down {
        if let Some(pod) = pod.filter(|p| p.metadata.uid.is_some()) {
            refs.push(pod_ref(pod));
        }
    } else if when_deleted {
        refs.push(controller_ref(&set.metadata, KIND));
    }
    Some(refs)
}

/// The claims `ordinal` uses, as their templates make them (labels plus the selector's
/// matchLabels), with ownerReferences for a pod in range.
fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let spec = set.spec.clone().unwrap_or_default();
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .unwrap_or_default()
        .into_iter()
        .filter_map(|mut claim| {
            let template = claim.metadata.name.clone()?;
            let mut labels = claim.metadata.labels.take().unwrap_or_default();
            labels.extend(selector_labels.clone());
            claim.metadata = kube::api::ObjectMeta {
                name: Some(claim_name(&template, &set_name, ordinal)),
                namespace: set.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: claim.metadata.annotations.take(),
                ..kube::api::ObjectMeta::default()
            };
            claim.status = None;
            Some(claim)
        })
        .collect()
}

/// Creates the claims of `ordinal` that do not exist (`createMissingPersistentVolumeClaims`).
pub async fn create_missing(
    shared: &Shared,
    set: &StatefulSet,
    ordinal: i32,
) -> Result<(), SyncError> {
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(shared.client.clone(), &namespace);
    for mut claim in claims_for(set, ordinal) {
        let name = claim.metadata.name.clone().unwrap_or_default();
        if shared
            .claims
            .get(&ObjectRef::new(&name).within(&namespace))
            .is_some()
        {
            continue;
        }
        if let Some(refs) = wanted_refs(&claim, set, None, false) {
            claim.metadata.owner_references = (!refs.is_empty()).then_some(refs);
        }
        let result = api.create(&PostParams::default(), &claim).await;
        if matches!(&result, Err(kube::Error::Api(status)) if status.code == 409) {
            continue;
        }
        record_claim_event(shared, set, &name, ordinal, result.as_ref().err());
        match result {
            Ok(_) => tracing::debug!(claim = %name, "created claim"),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// `recordClaimEvent` for a create, as upstream words it.
fn record_claim_event(
    shared: &Shared,
    set: &StatefulSet,
    claim: &str,
    ordinal: i32,
    error: Option<&kube::Error>,
) {
    let set_name = set.metadata.name.as_deref().unwrap_or_default();
    let pod = format!("{set_name}-{ordinal}");
    let (reason, note) = match error {
        None => (
            "SuccessfulCreate",
            format!("create Claim {claim} Pod {pod} in StatefulSet {set_name} success"),
        ),
        Some(error) => (
            "FailedCreate",
            format!(
                "create Claim {claim} for Pod {pod} in StatefulSet {set_name} failed error: {}",
                error_text(error)
            ),
        ),
    };
    let namespace = set.metadata.namespace.as_deref().unwrap_or_default();
    let claim = related("v1", "PersistentVolumeClaim", namespace, claim);
    shared.events.record(
        set.object_ref(&()),
        Some(claim),
        error.is_some(),
        reason,
        note,
    );
}

/// Brings the ownerReferences of `pod`'s existing claims in line with the policy.
pub async fn update_owner_refs(
    shared: &Shared,
    set: &StatefulSet,
    pod: &Pod,
    ordinal: i32,
    scaled_down: bool,
) -> Result<(), SyncError> {
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(shared.client.clone(), &namespace);
    for template in claims_for(set, ordinal) {
        let name = template.metadata.name.clone().unwrap_or_default();
        let Some(claim) = shared.claims.get(&ObjectRef::new(&name).within(&namespace)) else {
            continue;
        };
        let Some(refs) = wanted_refs(&claim, set, Some(pod), scaled_down) else {
            continue;
        };
        let have = claim.metadata.owner_references.clone().unwrap_or_default();
        let key = |r: &OwnerReference| (r.uid.clone(), r.controller);
        let same = have.len() == refs.len()
            && have.iter().map(key).collect::<BTreeMap<_, _>>() == refs.iter().map(key).collect();
        if same {
            continue;
        }
        let patch = json!({"metadata": {"uid": claim.metadata.uid, "ownerReferences": refs}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

//! A DaemonSet's ControllerRevisions (`constructHistory`, `cleanupHistory`): the current one
//! holds the template patch and is named `<ds>-<hash>`, labelled `controller-revision-hash`.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::{KIND, Shared};
use crate::apps_shared::SyncError;
use crate::apps_shared::history;
use crate::apps_shared::pods::{controlled_by, controller_ref};

/// The label on daemon pods and revisions with the template hash.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The current revision and the others, oldest first.
pub struct Revisions {
    /// Its hash (the pods' `controller-revision-hash`).
    pub hash: String,
    /// The older ones.
    pub old: Vec<ControllerRevision>,
}

/// Finds or creates the current revision, deduplicates, and renumbers it newest.
pub async fn construct(shared: &Shared, set: &DaemonSet) -> Result<Revisions, SyncError> {
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let name = set.metadata.name.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(shared.client.clone(), &namespace);
    let spec = set.spec.clone().unwrap_or_default();
    let data = history::template_patch(&spec.template)?;
    let mut owned: Vec<ControllerRevision> = shared
        .revisions
        .state()
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|r| controlled_by(&r.metadata, &uid))
        .map(|r| (**r).clone())
        .collect();
    history::sort(&mut owned);
    let (mut matching, mut old): (Vec<_>, Vec<_>) =
        owned.into_iter().partition(|r| history::holds(r, &data));
    let next = old.last().map_or(1, |r| r.revision + 1);
    let current = match matching.pop() {
        Some(mut current) => {
            // Duplicates of the current template (a race upstream too): keep the newest.
            for duplicate in matching {
                let duplicate_name = duplicate.metadata.name.clone().unwrap_or_default();
                api.delete(&duplicate_name, &DeleteParams::default())
                    .await?;
            }
            let has_label = current
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(HASH_LABEL));
            if current.revision < next || !has_label {
                let current_name = current.metadata.name.clone().unwrap_or_default();
                let hash = current_name
                    .strip_prefix(&format!("{name}-"))
                    .unwrap_or(&current_name)
                    .to_string();
                let patch = json!({
                    "metadata": {"labels": {HASH_LABEL: hash}},
                    "revision": current.revision.max(next),
                });
                current = api
                    .patch(
                        &current_name,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
            }
            current
        }
        None => create(&api, set, &data, next).await?,
    };
    let hash = current
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .cloned()
        .unwrap_or_default();
    old.retain(|r| r.metadata.name != current.metadata.name);
    Ok(Revisions { hash, old })
}

/// Creates the revision `<ds>-<hash>`; on a name taken by other data, bumps
/// `status.collisionCount` and fails so the sync retries with the new hash.
async fn create(
    api: &Api<ControllerRevision>,
    set: &DaemonSet,
    data: &serde_json::Value,
    number: i64,
) -> Result<ControllerRevision, SyncError> {
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let name = set.metadata.name.clone().unwrap_or_default();
    let collision_count = set.status.as_ref().and_then(|s| s.collision_count);
    let hash = history::hash(data, collision_count);
    let revision_name = history::revision_name(&name, &hash);
    let spec = set.spec.clone().unwrap_or_default();
    let mut labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.clone());
    let revision = history::new_revision(
        &revision_name,
        &namespace,
        controller_ref(&set.metadata, KIND),
        labels,
        set.metadata.annotations.clone(),
        data.clone(),
        number,
    );
    match api.create(&PostParams::default(), &revision).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let existing = api.get(&revision_name).await?;
            if history::holds(&existing, data)
                && controlled_by(
                    &existing.metadata,
                    set.metadata.uid.as_deref().unwrap_or(""),
                )
            {
                return Ok(existing);
            }
            let sets: Api<DaemonSet> = Api::namespaced(api.clone().into_client(), &namespace);
            let count = collision_count.unwrap_or(0) + 1;
            let patch = json!({"status": {"collisionCount": count}});
            sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            tracing::info!(daemonset = %name, count, "revision hash collision");
            Err(SyncError::Api(kube::Error::Api(status)))
        }
        Err(error) => Err(error.into()),
    }
}

/// Deletes the oldest revisions no pod uses beyond `revisionHistoryLimit`.
pub async fn cleanup(
    shared: &Shared,
    set: &DaemonSet,
    revisions: &Revisions,
    pods: &[Pod],
) -> Result<(), SyncError> {
    let limit = set
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10);
    let live: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.metadata.labels.as_ref()?.get(HASH_LABEL).cloned())
        .collect();
    let is_live = |r: &ControllerRevision| {
        r.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL))
            .is_some_and(|h| live.contains(h))
    };
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(shared.client.clone(), &namespace);
    for revision in history::to_truncate(&revisions.old, &is_live, limit) {
        let name = revision.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

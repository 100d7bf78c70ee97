//! A StatefulSet's ControllerRevisions (`getStatefulSetRevisions`, `truncateHistory`): the update
//! revision holds the current template; an equal older one is renumbered newest (a rollback);
//! the current revision is the one the status names.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::{KIND, Shared};
use crate::apps_shared::SyncError;
use crate::apps_shared::history::{self, HASH_LABEL};
use crate::apps_shared::pods::{controlled_by, controller_ref};

/// The current and update revisions and all of the set's revisions, oldest first.
pub struct Revisions {
    /// The revision the status calls current (the update revision when none).
    pub current: ControllerRevision,
    /// The revision of the set's template.
    pub update: ControllerRevision,
    /// Every revision of the set, oldest first.
    pub all: Vec<ControllerRevision>,
}

/// Finds or creates the update revision.
pub async fn get(shared: &Shared, set: &StatefulSet) -> Result<Revisions, SyncError> {
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(shared.client.clone(), &namespace);
    let spec = set.spec.clone().unwrap_or_default();
    let data = history::template_patch(&spec.template)?;
    let mut all: Vec<ControllerRevision> = shared
        .revisions
        .state()
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|r| controlled_by(&r.metadata, &uid))
        .map(|r| (**r).clone())
        .collect();
    history::sort(&mut all);
    let next = history::next_number(&all);
    let equal = all.iter().rposition(|r| history::holds(r, &data));
    let update = match equal {
        Some(i) if i + 1 == all.len() => all[i].clone(),
        Some(i) => {
            let name = all[i].metadata.name.clone().unwrap_or_default();
            let patch = json!({"revision": next});
            let updated = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            all[i] = updated.clone();
            history::sort(&mut all);
            updated
        }
        None => {
            let created = create(&api, set, &data, next).await?;
            all.push(created.clone());
            created
        }
    };
    let status_current = set.status.as_ref().and_then(|s| s.current_revision.clone());
    let current = status_current
        .and_then(|name| {
            all.iter()
                .find(|r| r.metadata.name.as_deref() == Some(&name))
                .cloned()
        })
        .unwrap_or_else(|| update.clone());
    Ok(Revisions {
        current,
        update,
        all,
    })
}

/// `CreateControllerRevision`: `<set>-<hash>`; a name taken by other data bumps
/// `status.collisionCount` and fails, so the next sync hashes again.
async fn create(
    api: &Api<ControllerRevision>,
    set: &StatefulSet,
    data: &serde_json::Value,
    number: i64,
) -> Result<ControllerRevision, SyncError> {
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let name = set.metadata.name.clone().unwrap_or_default();
    let collision_count = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let hash = history::hash(data, Some(collision_count));
    let revision_name = history::revision_name(&name, &hash);
    let mut labels = set
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash);
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
            let sets: Api<StatefulSet> = Api::namespaced(api.clone().into_client(), &namespace);
            let patch = json!({"status": {"collisionCount": collision_count + 1}});
            sets.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            tracing::info!(statefulset = %name, "revision hash collision");
            Err(SyncError::Api(kube::Error::Api(status)))
        }
        Err(error) => Err(error.into()),
    }
}

/// Deletes the oldest revisions beyond `revisionHistoryLimit` that no pod, nor the current or
/// update revision, uses.
pub async fn truncate(
    shared: &Shared,
    set: &StatefulSet,
    revisions: &Revisions,
    live_names: &BTreeSet<String>,
) -> Result<(), SyncError> {
    let limit = set
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10);
    let is_live = |r: &ControllerRevision| {
        let name = r.metadata.name.clone().unwrap_or_default();
        live_names.contains(&name)
            || r.metadata.name == revisions.current.metadata.name
            || r.metadata.name == revisions.update.metadata.name
    };
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(shared.client.clone(), &namespace);
    for revision in history::to_truncate(&revisions.all, &is_live, limit) {
        let name = revision.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

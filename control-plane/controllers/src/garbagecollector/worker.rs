//! What a worker does with a job, as upstream's attemptToDeleteItem / orphanDependents: read
//! the object and its owners live (the graph may lag), then delete it, drop references to
//! owners that are gone, finish a foreground deletion, or orphan dependents.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use serde_json::json;

use super::graph::{FOREGROUND, Graph, Job, ORPHAN};
use crate::discovery::{Served, split_api_version};
use crate::queue::WorkQueue;

/// Why a job failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The API refused or failed.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// An owner reference names a kind discovery does not know.
    #[error("unable to get REST mapping for {0}")]
    UnknownKind(String),
}

/// The served resources, by key and by group and kind.
#[derive(Debug, Default)]
pub struct Resources {
    by_key: HashMap<String, Arc<Served>>,
    by_kind: HashMap<(String, String), Arc<Served>>,
}

impl Resources {
    /// The table of `served`.
    pub fn new(served: &[Arc<Served>]) -> Resources {
        let mut resources = Resources::default();
        for s in served {
            resources.by_key.insert(s.key(), Arc::clone(s));
            resources
                .by_kind
                .entry((s.resource.group.clone(), s.resource.kind.clone()))
                .or_insert_with(|| Arc::clone(s));
        }
        resources
    }
}

/// What the workers share.
#[derive(Clone)]
pub struct Env {
    /// The API client.
    pub client: kube::Client,
    /// The ownership graph.
    pub graph: Arc<Mutex<Graph>>,
    /// The served resources.
    pub resources: Arc<RwLock<Resources>>,
    /// The work queue.
    pub queue: Arc<WorkQueue<Job>>,
}

enum Owner {
    Solid,
    Absent,
    Waiting,
}

impl Env {
    fn graph<T>(&self, f: impl FnOnce(&Graph) -> T) -> T {
        f(&self.graph.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn by_key(&self, key: &str) -> Option<Arc<Served>> {
        let resources = self
            .resources
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        resources.by_key.get(key).cloned()
    }

    fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<Served>> {
        let resources = self
            .resources
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        resources
            .by_kind
            .get(&(group.to_string(), kind.to_string()))
            .cloned()
    }

    fn api(&self, served: &Served, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace.filter(|_| served.namespaced) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &served.resource),
            None => Api::all_with(self.client.clone(), &served.resource),
        }
    }

    /// Runs `job`.
    pub async fn run(&self, job: &Job) -> Result<(), GcError> {
        match job {
            Job::Attempt(uid) => self.attempt(uid).await,
            Job::Orphan(uid) => self.orphan(uid).await,
        }
    }

    /// The object of `uid` as it is now, with the API to reach it; `None` when it is gone.
    async fn latest(
        &self,
        uid: &str,
    ) -> Result<Option<(Api<DynamicObject>, DynamicObject)>, GcError> {
        let Some(node) = self.graph(|g| g.get(uid).cloned()) else {
            return Ok(None);
        };
        let Some(served) = self.by_key(&node.resource) else {
            return Ok(None);
        };
        let api = self.api(&served, node.namespace.as_deref());
        let latest = api.get_opt(&node.name).await?;
        Ok(latest
            .filter(|o| o.metadata.uid.as_deref() == Some(uid))
            .map(|o| (api, o)))
    }

    async fn attempt(&self, uid: &str) -> Result<(), GcError> {
        let Some((api, latest)) = self.latest(uid).await? else {
            return Ok(());
        };
        let name = latest.metadata.name.clone().unwrap_or_default();
        let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
        let has = |f: &str| finalizers.iter().any(|x| x == f);
        if latest.metadata.deletion_timestamp.is_some() {
            if has(FOREGROUND) {
                return self.deleting_dependents(uid, &api, &latest).await;
            }
            // Being deleted already, by someone else's choice.
            return Ok(());
        }
        let references = latest.metadata.owner_references.clone().unwrap_or_default();
        if references.is_empty() {
            return Ok(());
        }
        let namespace = latest.metadata.namespace.as_deref();
        let (mut solid, mut gone) = (0, Vec::new());
        let mut waiting = Vec::new();
        for reference in &references {
            match self.owner(reference, namespace).await? {
                Owner::Solid => solid += 1,
                Owner::Absent => gone.push(reference.uid.clone()),
                Owner::Waiting => waiting.push(reference.uid.clone()),
            }
        }
        if solid > 0 {
            if gone.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            // It stays for its solid owners; the references to the others go.
            let keep: Vec<&OwnerReference> = references
                .iter()
                .filter(|r| !gone.contains(&r.uid) && !waiting.contains(&r.uid))
                .collect();
            tracing::info!(object = %name, "garbage collector removes references to owners that are gone");
            patch_owners(&api, &latest, &keep).await?;
            return Ok(());
        }
        let dependents = self.graph(|g| g.dependents(uid));
        if !waiting.is_empty() && !dependents.is_empty() {
            if dependents.iter().any(|(_, d)| d.deleting_dependents) {
                // A cycle of foreground deletions would wait forever: this one stops blocking.
                let unblocked: Vec<OwnerReference> = references
                    .iter()
                    .cloned()
                    .map(|mut r| {
                        if waiting.contains(&r.uid) {
                            r.block_owner_deletion = Some(false);
                        }
                        r
                    })
                    .collect();
                patch_owners(&api, &latest, &unblocked.iter().collect::<Vec<_>>()).await?;
            }
            return delete(&api, &name, uid, "Foreground").await;
        }
        let policy = if has(ORPHAN) {
            "Orphan"
        } else if has(FOREGROUND) {
            "Foreground"
        } else {
            "Background"
        };
        delete(&api, &name, uid, policy).await
    }

    /// How the owner `reference` of an object in `namespace` stands.
    async fn owner(
        &self,
        reference: &OwnerReference,
        namespace: Option<&str>,
    ) -> Result<Owner, GcError> {
        let (group, _) = split_api_version(&reference.api_version);
        let served = self.by_kind(group, &reference.kind).ok_or_else(|| {
            GcError::UnknownKind(format!(
                "{}, Kind={}",
                reference.api_version, reference.kind
            ))
        })?;
        if served.namespaced && namespace.is_none() {
            // A cluster-scoped object cannot be owned by a namespaced one.
            return Ok(Owner::Absent);
        }
        let owner = self
            .api(&served, namespace)
            .get_opt(&reference.name)
            .await?;
        let Some(owner) = owner.filter(|o| o.metadata.uid.as_deref() == Some(&reference.uid))
        else {
            return Ok(Owner::Absent);
        };
        let foreground = owner.metadata.deletion_timestamp.is_some()
            && owner
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == FOREGROUND);
        Ok(if foreground {
            Owner::Waiting
        } else {
            Owner::Solid
        })
    }

    /// An owner in foreground deletion: its blocking dependents are deleted first; with none
    /// left, its finalizer goes.
    async fn deleting_dependents(
        &self,
        uid: &str,
        api: &Api<DynamicObject>,
        latest: &DynamicObject,
    ) -> Result<(), GcError> {
        let blocking: Vec<_> = self
            .graph(|g| g.dependents(uid))
            .into_iter()
            .filter(|(_, d)| d.blocks(uid))
            .collect();
        if blocking.is_empty() {
            return remove_finalizer(api, latest, FOREGROUND).await;
        }
        for (dependent, node) in blocking {
            if !node.deleting {
                self.queue.add(Job::Attempt(dependent));
            }
        }
        Ok(())
    }

    /// An owner deleted with the orphan finalizer: its dependents lose their references to
    /// it, then the finalizer goes.
    async fn orphan(&self, uid: &str) -> Result<(), GcError> {
        let Some((api, latest)) = self.latest(uid).await? else {
            return Ok(());
        };
        let orphaning = latest.metadata.deletion_timestamp.is_some()
            && latest
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == ORPHAN);
        if !orphaning {
            return Ok(());
        }
        for (dependent, node) in self.graph(|g| g.dependents(uid)) {
            let Some(served) = self.by_key(&node.resource) else {
                continue;
            };
            let dependent_api = self.api(&served, node.namespace.as_deref());
            let Some(object) = dependent_api.get_opt(&node.name).await? else {
                continue;
            };
            if object.metadata.uid.as_deref() != Some(&dependent) {
                continue;
            }
            let references = object.metadata.owner_references.clone().unwrap_or_default();
            let keep: Vec<&OwnerReference> = references.iter().filter(|r| r.uid != uid).collect();
            if keep.len() != references.len() {
                patch_owners(&dependent_api, &object, &keep).await?;
            }
        }
        remove_finalizer(&api, &latest, ORPHAN).await
    }
}

/// Replaces the object's ownerReferences with `keep`, pinned to the version read.
async fn patch_owners(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    keep: &[&OwnerReference],
) -> Result<(), GcError> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let references = if keep.is_empty() {
        serde_json::Value::Null
    } else {
        json!(keep)
    };
    let patch = json!({"metadata": {
        "ownerReferences": references,
        "resourceVersion": object.metadata.resource_version,
    }});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes `finalizer` from the object, pinned to the version read.
async fn remove_finalizer(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    finalizer: &str,
) -> Result<(), GcError> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let left: Vec<&String> = object
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .collect();
    let patch = json!({"metadata": {
        "finalizers": if left.is_empty() { serde_json::Value::Null } else { json!(left) },
        "resourceVersion": object.metadata.resource_version,
    }});
    tracing::info!(object = %name, finalizer, "garbage collector removes its finalizer");
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the object of `uid` with `policy`, with a UID precondition.
async fn delete(
    api: &Api<DynamicObject>,
    name: &str,
    uid: &str,
    policy: &str,
) -> Result<(), GcError> {
    let propagation = match policy {
        "Orphan" => kube::api::PropagationPolicy::Orphan,
        "Foreground" => kube::api::PropagationPolicy::Foreground,
        _ => kube::api::PropagationPolicy::Background,
    };
    let params = DeleteParams {
        propagation_policy: Some(propagation),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    tracing::info!(object = %name, policy, "garbage collector deletes an object whose owners are gone");
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        // Gone already, or replaced by another object of the same name.
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

//! The replicaset and replicationcontroller controllers: keep `spec.replicas` pods matching the
//! selector, adopting orphans and releasing pods that stopped matching, creating from the
//! template and deleting the pods upstream would pick, and report the counts in the status.
//! One generic controller runs both kinds ([`kind::ReplicaKind`]).

pub mod claim;
pub mod expectations;
pub mod kind;
pub mod manage;
pub mod podutil;
pub mod ranking;
pub mod selector;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::context::Context;
use crate::events::EventSink;
use crate::informer::{self, Cache, Change};
use crate::queue::{Key, WorkQueue};
use expectations::Expectations;
use kind::{ReplicaKind, ReplicaStatus};

/// Upstream's --concurrent-replicaset-syncs / --concurrent-rc-syncs.
const WORKERS: usize = 5;

/// Why a sync failed; the key is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// An API call failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// The object cannot be acted on.
    #[error("{0}")]
    Invalid(String),
}

/// Starts the replicaset controller.
pub fn start_replicaset(context: Context) -> BoxFuture<'static, ()> {
    run::<ReplicaSet>(context).boxed()
}

/// Starts the replicationcontroller controller.
pub fn start_replicationcontroller(context: Context) -> BoxFuture<'static, ()> {
    run::<ReplicationController>(context).boxed()
}

struct Controller<K: ReplicaKind> {
    client: kube::Client,
    owners: Arc<Cache<K>>,
    pods: Arc<Cache<Pod>>,
    queue: WorkQueue,
    expectations: Expectations,
    events: EventSink,
}

/// Runs the controller of kind `K` until dropped.
pub async fn run<K: ReplicaKind>(context: Context) {
    let client = context.client.clone();
    let (events, publish) = EventSink::new(client.clone(), K::COMPONENT);
    let this = Arc::new(Controller::<K> {
        client: client.clone(),
        owners: Arc::default(),
        pods: Arc::default(),
        queue: WorkQueue::new(),
        expectations: Expectations::default(),
        events,
    });
    let owners = {
        let this = Arc::clone(&this);
        informer::run(
            Api::<K>::all(client.clone()),
            Arc::clone(&this.owners),
            move |c| this.on_owner(c),
        )
    };
    let pods = {
        let this = Arc::clone(&this);
        informer::run(Api::<Pod>::all(client), Arc::clone(&this.pods), move |c| {
            this.on_pod(c)
        })
    };
    let workers = async {
        this.owners.wait_synced().await;
        this.pods.wait_synced().await;
        join_all((0..WORKERS).map(|_| this.worker())).await;
    };
    tokio::join!(owners, pods, workers, publish);
}

impl<K: ReplicaKind> Controller<K> {
    async fn worker(&self) {
        loop {
            let key = self.queue.next().await;
            match self.sync(&key).await {
                Ok(()) => self.queue.forget(&key),
                Err(error) => {
                    tracing::info!(kind = K::KIND, key = %key, %error, "sync failed; retrying");
                    self.queue.add_rate_limited(key.clone());
                }
            }
            self.queue.done(&key);
        }
    }

    fn on_owner(&self, change: Change<K>) {
        match change {
            Change::Applied { old, new } => {
                let key = Key::of(new.meta());
                if old.is_some_and(|old| old.meta().uid != new.meta().uid) {
                    self.expectations.forget(&key);
                }
                self.queue.add(key);
            }
            Change::Deleted(owner) => {
                let key = Key::of(owner.meta());
                self.expectations.forget(&key);
                self.queue.add(key);
            }
        }
    }

    /// The owner a controllerRef points at, if it is one of ours and still the same object.
    fn resolve(
        &self,
        namespace: &str,
        reference: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Option<Arc<K>> {
        if reference.kind != K::KIND {
            return None;
        }
        let owner = self.owners.get(&Key::new(namespace, &reference.name))?;
        (owner.meta().uid.as_deref() == Some(reference.uid.as_str())).then_some(owner)
    }

    /// Owners in the pod's namespace whose selector matches it.
    fn owners_selecting(&self, pod: &Pod) -> Vec<Key> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        self.owners
            .in_namespace(namespace)
            .into_iter()
            .filter(|owner| {
                owner
                    .selector()
                    .is_some_and(|s| !s.is_empty() && s.matches(pod.metadata.labels.as_ref()))
            })
            .map(|owner| Key::of(owner.meta()))
            .collect()
    }

    fn on_pod(&self, change: Change<Pod>) {
        match change {
            Change::Applied { old: None, new } => self.pod_added(&new),
            Change::Applied {
                old: Some(old),
                new,
            } => self.pod_updated(&old, &new),
            Change::Deleted(pod) => self.pod_deleted(&pod),
        }
    }

    fn pod_added(&self, pod: &Pod) {
        if pod.metadata.deletion_timestamp.is_some() {
            // Seen for the first time already terminating (e.g. after a relist).
            return self.pod_deleted(pod);
        }
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(reference) = podutil::controller_of(&pod.metadata) {
            if let Some(owner) = self.resolve(namespace, reference) {
                let key = Key::of(owner.meta());
                self.expectations.creation_observed(&key);
                self.queue.add(key);
            }
            return;
        }
        for key in self.owners_selecting(pod) {
            self.queue.add(key);
        }
    }

    fn pod_updated(&self, old: &Pod, new: &Pod) {
        if old.metadata.resource_version == new.metadata.resource_version {
            return;
        }
        let labels_changed = old.metadata.labels != new.metadata.labels;
        if new.metadata.deletion_timestamp.is_some() {
            // Graceful deletion started: the pod no longer counts, as if deleted.
            self.pod_deleted(new);
            if labels_changed {
                self.pod_deleted(old);
            }
            return;
        }
        let namespace = new.metadata.namespace.as_deref().unwrap_or_default();
        let old_ref = podutil::controller_of(&old.metadata);
        let new_ref = podutil::controller_of(&new.metadata);
        let ref_changed = old_ref != new_ref;
        if ref_changed && let Some(owner) = old_ref.and_then(|r| self.resolve(namespace, r)) {
            self.queue.add(Key::of(owner.meta()));
        }
        if let Some(reference) = new_ref {
            if let Some(owner) = self.resolve(namespace, reference) {
                let key = Key::of(owner.meta());
                let min_ready = owner.min_ready_seconds();
                if min_ready > 0 && !podutil::is_ready(old) && podutil::is_ready(new) {
                    // Becomes available after minReadySeconds: look again then.
                    self.queue
                        .add_after(key.clone(), Duration::from_secs(min_ready as u64 + 1));
                }
                self.queue.add(key);
            }
            return;
        }
        if labels_changed || ref_changed {
            for key in self.owners_selecting(new) {
                self.queue.add(key);
            }
        }
    }

    fn pod_deleted(&self, pod: &Pod) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let Some(owner) =
            podutil::controller_of(&pod.metadata).and_then(|r| self.resolve(namespace, r))
        else {
            return;
        };
        let key = Key::of(owner.meta());
        self.expectations
            .deletion_observed(&key, &podutil::pod_key(pod));
        self.queue.add(key);
    }

    /// Pods of every owner controlled by the same controller as `owner` (a Deployment's
    /// ReplicaSets), which rank pods by co-location when scaling down.
    fn related_pods(&self, owner: &K) -> Vec<Pod> {
        let Some(controller) = podutil::controller_of(owner.meta()) else {
            return Vec::new();
        };
        let namespace = owner.meta().namespace.as_deref().unwrap_or_default();
        let siblings: Vec<Arc<K>> = self
            .owners
            .in_namespace(namespace)
            .into_iter()
            .filter(|o| podutil::controller_of(o.meta()).is_some_and(|c| c.uid == controller.uid))
            .collect();
        let mut seen = std::collections::HashSet::new();
        let mut related = Vec::new();
        for pod in self.pods.in_namespace(namespace) {
            let selected = siblings.iter().any(|o| {
                o.selector()
                    .is_some_and(|s| s.matches(pod.metadata.labels.as_ref()))
            });
            if selected && seen.insert(pod.metadata.uid.clone()) {
                related.push(Pod::clone(&pod));
            }
        }
        related
    }

    async fn sync(&self, key: &Key) -> Result<(), SyncError> {
        let Some(owner) = self.owners.get(key) else {
            self.expectations.forget(key);
            return Ok(());
        };
        let needs_sync = self.expectations.satisfied(key);
        let Some(selector) = owner.selector() else {
            return Err(SyncError::Invalid(format!("{key}: invalid selector")));
        };
        let active: Vec<Arc<Pod>> = self
            .pods
            .in_namespace(&key.namespace)
            .into_iter()
            .filter(|p| podutil::is_active(p))
            .collect();
        let claimed = claim::claim(
            &self.client,
            owner.as_ref(),
            (K::API_VERSION, K::KIND),
            &selector,
            active,
        )
        .await?;
        let mut failure = None;
        let mut counted = claimed.clone();
        if needs_sync && owner.meta().deletion_timestamp.is_none() {
            let related = self.related_pods(&owner);
            let managed = manage::manage(
                &self.client,
                owner.as_ref(),
                key,
                &claimed,
                &related,
                &self.expectations,
                &self.events,
            )
            .await;
            // Pods just deleted are terminating: not counted, as the next sync would not.
            counted.retain(|p| !managed.deleted.contains(&podutil::pod_key(p)));
            failure = managed.error;
        }
        let failure_message = failure
            .as_ref()
            .map(|(e, deficit)| (manage::message(e), *deficit));
        let status = status::calculate(
            owner.as_ref(),
            &counted,
            failure_message.as_ref().map(|(m, d)| (m.as_str(), *d)),
        );
        let status = self.update_status(&owner, status).await?;
        let replicas = owner.replicas();
        let min_ready = owner.min_ready_seconds();
        if failure.is_none()
            && min_ready > 0
            && status.ready_replicas == replicas
            && status.available_replicas != replicas
        {
            self.queue
                .add_after(key.clone(), Duration::from_secs(min_ready as u64));
        }
        match failure {
            Some((error, _)) => Err(error),
            None => Ok(()),
        }
    }

    /// Writes `status` unless the owner already shows it for its generation.
    async fn update_status(
        &self,
        owner: &K,
        mut status: ReplicaStatus,
    ) -> Result<ReplicaStatus, SyncError> {
        let meta = owner.meta();
        let generation = meta.generation.unwrap_or(0);
        let current = owner.replica_status();
        status.observed_generation = generation;
        if current == status {
            return Ok(status);
        }
        let conditions = if status.conditions.is_empty() {
            serde_json::Value::Null
        } else {
            json!(status.conditions)
        };
        let patch = json!({"status": {
            "replicas": status.replicas,
            "fullyLabeledReplicas": status.fully_labeled_replicas,
            "readyReplicas": status.ready_replicas,
            "availableReplicas": status.available_replicas,
            "observedGeneration": status.observed_generation,
            "conditions": conditions,
        }});
        let api: Api<K> = Api::namespaced(
            self.client.clone(),
            meta.namespace.as_deref().unwrap_or_default(),
        );
        let name = meta.name.clone().unwrap_or_default();
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(status),
            Err(error) if claim::not_found(&error) => Ok(status),
            Err(error) => Err(error.into()),
        }
    }
}

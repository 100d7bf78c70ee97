//! The deployment controller: a Deployment owns ReplicaSets named `<name>-<pod-template-hash>`
//! and moves pods from the old ones to the new one (RollingUpdate within maxSurge and
//! maxUnavailable, or Recreate), records revisions for `kubectl rollout`, scales proportionally
//! during a rollout, and reports Available and Progressing (progressDeadlineSeconds).

mod progress;
mod rollout;
pub mod util;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::Api;

use crate::context::Context;
use crate::events::EventSink;
use crate::informer::{self, Cache, Change};
use crate::queue::{Key, WorkQueue};
use crate::replicaset::SyncError;
use crate::replicaset::podutil;
use crate::replicaset::selector::Selector;

/// Upstream's --concurrent-deployment-syncs.
const WORKERS: usize = 5;

/// Starts the deployment controller.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    run(context).boxed()
}

pub(crate) struct Controller {
    client: kube::Client,
    deployments: Arc<Cache<Deployment>>,
    replica_sets: Arc<Cache<ReplicaSet>>,
    pods: Arc<Cache<Pod>>,
    queue: WorkQueue,
    events: EventSink,
}

/// Runs the controller until dropped.
pub async fn run(context: Context) {
    let client = context.client.clone();
    let (events, publish) = EventSink::new(client.clone(), "deployment-controller");
    let this = Arc::new(Controller {
        client: client.clone(),
        deployments: Arc::default(),
        replica_sets: Arc::default(),
        pods: Arc::default(),
        queue: WorkQueue::new(),
        events,
    });
    let deployments = {
        let this = Arc::clone(&this);
        informer::run(
            Api::<Deployment>::all(client.clone()),
            Arc::clone(&this.deployments),
            move |c| this.on_deployment(c),
        )
    };
    let replica_sets = {
        let this = Arc::clone(&this);
        informer::run(
            Api::<ReplicaSet>::all(client.clone()),
            Arc::clone(&this.replica_sets),
            move |c| this.on_replica_set(c),
        )
    };
    let pods = {
        let this = Arc::clone(&this);
        informer::run(Api::<Pod>::all(client), Arc::clone(&this.pods), move |c| {
            this.on_pod(c)
        })
    };
    let workers = async {
        this.deployments.wait_synced().await;
        this.replica_sets.wait_synced().await;
        this.pods.wait_synced().await;
        join_all((0..WORKERS).map(|_| this.worker())).await;
    };
    tokio::join!(deployments, replica_sets, pods, workers, publish);
}

impl Controller {
    async fn worker(&self) {
        loop {
            let key = self.queue.next().await;
            match self.sync(&key).await {
                Ok(requeue) => {
                    self.queue.forget(&key);
                    if let Some(after) = requeue {
                        self.queue.add_after(key.clone(), after);
                    }
                }
                Err(error) => {
                    tracing::info!(deployment = %key, %error, "sync failed; retrying");
                    self.queue.add_rate_limited(key.clone());
                }
            }
            self.queue.done(&key);
        }
    }

    fn on_deployment(&self, change: Change<Deployment>) {
        let d = match change {
            Change::Applied { new, .. } => new,
            Change::Deleted(d) => d,
        };
        self.queue.add(Key::of(&d.metadata));
    }

    fn resolve(
        &self,
        namespace: &str,
        reference: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Option<Arc<Deployment>> {
        if reference.kind != "Deployment" {
            return None;
        }
        let d = self
            .deployments
            .get(&Key::new(namespace, &reference.name))?;
        (d.metadata.uid.as_deref() == Some(reference.uid.as_str())).then_some(d)
    }

    /// Deployments whose selector matches an orphaned ReplicaSet's labels.
    fn selecting(&self, rs: &ReplicaSet) -> Vec<Key> {
        let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
        self.deployments
            .in_namespace(namespace)
            .into_iter()
            .filter(|d| {
                selector_of(d)
                    .is_some_and(|s| !s.is_empty() && s.matches(rs.metadata.labels.as_ref()))
            })
            .map(|d| Key::of(&d.metadata))
            .collect()
    }

    fn on_replica_set(&self, change: Change<ReplicaSet>) {
        match change {
            Change::Applied { old, new } => {
                let namespace = new.metadata.namespace.as_deref().unwrap_or_default();
                let new_ref = podutil::controller_of(&new.metadata);
                let old_ref = old
                    .as_ref()
                    .and_then(|o| podutil::controller_of(&o.metadata));
                if let Some(old) = &old {
                    if old.metadata.resource_version == new.metadata.resource_version {
                        return;
                    }
                    if old_ref != new_ref
                        && let Some(d) = old_ref.and_then(|r| self.resolve(namespace, r))
                    {
                        self.queue.add(Key::of(&d.metadata));
                    }
                }
                if let Some(reference) = new_ref {
                    if let Some(d) = self.resolve(namespace, reference) {
                        self.queue.add(Key::of(&d.metadata));
                    }
                    return;
                }
                let labels_changed = old
                    .as_ref()
                    .is_none_or(|o| o.metadata.labels != new.metadata.labels);
                if labels_changed || old_ref != new_ref {
                    for key in self.selecting(&new) {
                        self.queue.add(key);
                    }
                }
            }
            Change::Deleted(rs) => {
                let namespace = rs.metadata.namespace.as_deref().unwrap_or_default();
                if let Some(d) =
                    podutil::controller_of(&rs.metadata).and_then(|r| self.resolve(namespace, r))
                {
                    self.queue.add(Key::of(&d.metadata));
                }
            }
        }
    }

    /// A Recreate rollout waits for the old pods to be gone: their deletion wakes it.
    fn on_pod(&self, change: Change<Pod>) {
        let Change::Deleted(pod) = change else {
            return;
        };
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let Some(rs_ref) = podutil::controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet")
        else {
            return;
        };
        let Some(rs) = self.replica_sets.get(&Key::new(namespace, &rs_ref.name)) else {
            return;
        };
        if let Some(d) =
            podutil::controller_of(&rs.metadata).and_then(|r| self.resolve(namespace, r))
            && util::is_recreate(&d)
        {
            self.queue.add(Key::of(&d.metadata));
        }
    }

    /// The ReplicaSets the Deployment owns after adopting and releasing.
    async fn claim_replica_sets(
        &self,
        d: &Deployment,
        selector: &Selector,
    ) -> Result<Vec<ReplicaSet>, SyncError> {
        let namespace = d.metadata.namespace.as_deref().unwrap_or_default();
        let candidates = self.replica_sets.in_namespace(namespace);
        let claimed = crate::replicaset::claim::claim(
            &self.client,
            d,
            ("apps/v1", "Deployment"),
            selector,
            candidates,
        )
        .await?;
        Ok(claimed
            .into_iter()
            .map(|rs| ReplicaSet::clone(&rs))
            .collect())
    }

    /// The Deployment's pods by the UID of their ReplicaSet.
    fn pod_map(
        &self,
        d: &Deployment,
        selector: &Selector,
        rss: &[ReplicaSet],
    ) -> HashMap<String, Vec<Arc<Pod>>> {
        let mut map: HashMap<String, Vec<Arc<Pod>>> = rss
            .iter()
            .filter_map(|rs| rs.metadata.uid.clone())
            .map(|uid| (uid, Vec::new()))
            .collect();
        let namespace = d.metadata.namespace.as_deref().unwrap_or_default();
        for pod in self.pods.in_namespace(namespace) {
            if !selector.matches(pod.metadata.labels.as_ref()) {
                continue;
            }
            if let Some(owner) = podutil::controller_of(&pod.metadata)
                && let Some(list) = map.get_mut(&owner.uid)
            {
                list.push(pod);
            }
        }
        map
    }

    async fn sync(&self, key: &Key) -> Result<Option<Duration>, SyncError> {
        let Some(d) = self.deployments.get(key) else {
            return Ok(None);
        };
        let mut run = rollout::Run::new(self, Deployment::clone(&d));
        run.sync().await
    }
}

/// A Deployment's selector.
pub(crate) fn selector_of(d: &Deployment) -> Option<Selector> {
    Selector::from_label_selector(&d.spec.as_ref()?.selector)
}

/// A Deployment's object reference for events.
pub(crate) fn reference(d: &Deployment) -> k8s_openapi::api::core::v1::ObjectReference {
    d.object_ref(&())
}

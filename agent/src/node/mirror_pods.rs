//! Mirror pods, as the kubelet keeps them: each static pod has a copy in the API server (same
//! namespace and name, annotation `kubernetes.io/config.mirror` holding the static pod's config
//! hash, owned by the Node) so that kubectl sees it, with the static pod's status pushed onto
//! it. A mirror pod deleted, or outdated by a changed manifest, is made again; one whose static
//! pod is gone is deleted. Only the static pod runs: the API pod source skips mirror pods.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use crate::pods::PodWorkers;
use crate::pods::status_sync::{DesiredSet, status_patch};
use crate::source::{CONFIG_HASH_ANNOTATION, MIRROR_ANNOTATION, SourceName};

/// How often the manager looks again without being woken.
const RESYNC: Duration = Duration::from_secs(10);
/// How long a mirror pod the API server refused is left before it is asked for again.
const RETRY_REFUSED: Duration = Duration::from_secs(10);

/// `namespace/name`.
type Key = String;

/// The mirror pods of one node.
pub struct MirrorPods {
    client: kube::Client,
    node_name: String,
    workers: Arc<PodWorkers>,
    desired: watch::Receiver<DesiredSet>,
    node_uid: Option<String>,
    /// The mirror pods the API server holds for this node.
    mirrors: BTreeMap<Key, Pod>,
    /// Mirror pods refused lately, not asked for again before then.
    refused: HashMap<Key, Instant>,
}

fn key_of(pod: &Pod) -> Key {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn annotation<'a>(pod: &'a Pod, name: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(name))
        .map(String::as_str)
}

impl MirrorPods {
    /// The manager of `node_name`'s mirror pods, for the static pods in `desired`.
    pub fn new(
        client: kube::Client,
        node_name: String,
        workers: Arc<PodWorkers>,
        desired: watch::Receiver<DesiredSet>,
    ) -> Self {
        MirrorPods {
            client,
            node_name,
            workers,
            desired,
            node_uid: None,
            mirrors: BTreeMap::new(),
            refused: HashMap::new(),
        }
    }

    /// Runs until the desired set's sender is gone.
    pub async fn run(mut self) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let config =
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.node_name));
        let mut stream = watcher::watcher(pods, config).default_backoff().boxed();
        let ctx = Arc::clone(self.workers.context());
        let mut listing: Option<BTreeMap<Key, Pod>> = None;
        let mut listed = false;
        loop {
            tokio::select! {
                event = stream.next() => match event {
                    Some(Ok(event)) => listed |= self.apply(&mut listing, event),
                    Some(Err(error)) => tracing::debug!(%error, "watching mirror pods failed; retrying"),
                    None => return,
                },
                changed = self.desired.changed() => if changed.is_err() { return },
                _ = ctx.store.changed() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
            if listed {
                self.reconcile().await;
            }
        }
    }

    /// Takes in a watch event; true once the first listing is complete.
    fn apply(&mut self, listing: &mut Option<BTreeMap<Key, Pod>>, event: Event<Pod>) -> bool {
        let mirror = |pod: &Pod| annotation(pod, MIRROR_ANNOTATION).is_some();
        match event {
            Event::Init => {
                *listing = Some(BTreeMap::new());
                false
            }
            Event::InitApply(pod) => {
                if let Some(list) = listing.as_mut().filter(|_| mirror(&pod)) {
                    list.insert(key_of(&pod), pod);
                }
                false
            }
            Event::InitDone => {
                self.mirrors = listing.take().unwrap_or_default();
                true
            }
            Event::Apply(pod) => {
                if mirror(&pod) {
                    self.mirrors.insert(key_of(&pod), pod);
                }
                true
            }
            Event::Delete(pod) => {
                let key = key_of(&pod);
                if self
                    .mirrors
                    .get(&key)
                    .is_some_and(|m| m.metadata.uid == pod.metadata.uid)
                {
                    self.mirrors.remove(&key);
                }
                true
            }
        }
    }

    async fn reconcile(&mut self) {
        let desired = self.desired.borrow().clone();
        let statics: BTreeMap<Key, Arc<Pod>> = desired
            .values()
            .filter(|d| d.source == SourceName::File)
            .map(|d| (key_of(&d.pod), Arc::clone(&d.pod)))
            .collect();
        for (key, pod) in &statics {
            let hash = annotation(pod, CONFIG_HASH_ANNOTATION).unwrap_or_default();
            match self.mirrors.get(key).cloned() {
                Some(mirror)
                    if annotation(&mirror, MIRROR_ANNOTATION) == Some(hash)
                        && mirror.metadata.deletion_timestamp.is_none() =>
                {
                    self.push_status(pod, &mirror).await;
                }
                // Outdated, or being deleted: it goes now and is made again once it is gone.
                Some(mirror) => self.delete(key, &mirror).await,
                None => self.create(key, pod).await,
            }
        }
        let orphans: Vec<(Key, Pod)> = self
            .mirrors
            .iter()
            .filter(|(key, _)| !statics.contains_key(*key))
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        for (key, mirror) in orphans {
            self.delete(&key, &mirror).await;
        }
    }

    async fn node_uid(&mut self) -> Option<String> {
        if self.node_uid.is_none() {
            let nodes: Api<Node> = Api::all(self.client.clone());
            self.node_uid = nodes
                .get_opt(&self.node_name)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.metadata.uid);
        }
        self.node_uid.clone()
    }

    async fn create(&mut self, key: &str, pod: &Pod) {
        if self
            .refused
            .get(key)
            .is_some_and(|at| at.elapsed() < RETRY_REFUSED)
        {
            return;
        }
        // The Node owns its mirror pods; before it is registered there is nothing to own them.
        let Some(node_uid) = self.node_uid().await else {
            return;
        };
        let mut mirror = pod.clone();
        let hash = annotation(pod, CONFIG_HASH_ANNOTATION)
            .unwrap_or_default()
            .to_string();
        let meta = &mut mirror.metadata;
        meta.uid = None;
        meta.resource_version = None;
        meta.creation_timestamp = None;
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(MIRROR_ANNOTATION.into(), hash);
        meta.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: self.node_name.clone(),
            uid: node_uid,
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        mirror.status = None;
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match pods.create(&PostParams::default(), &mirror).await {
            Ok(created) => {
                tracing::info!(pod = %key, "mirror pod created");
                self.refused.remove(key);
                self.mirrors.insert(key.to_string(), created);
            }
            // Made meanwhile (the watch tells): nothing to do.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => {
                tracing::warn!(pod = %key, %error, "mirror pod not created; retrying in {RETRY_REFUSED:?}");
                self.refused.insert(key.to_string(), Instant::now());
            }
        }
    }

    async fn delete(&mut self, key: &str, mirror: &Pod) {
        let namespace = mirror.metadata.namespace.as_deref().unwrap_or("default");
        let name = mirror.metadata.name.as_deref().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: mirror.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(name, &params).await {
            Ok(_) => tracing::info!(pod = %key, "mirror pod deleted"),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(error) => {
                tracing::warn!(pod = %key, %error, "mirror pod not deleted; retrying");
                return;
            }
        }
        self.mirrors.remove(key);
    }

    /// Pushes the static pod's latest status onto its mirror pod when they differ.
    async fn push_status(&mut self, pod: &Pod, mirror: &Pod) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        let Some(record) = self.workers.context().store.get(uid) else {
            return;
        };
        let Some(patch) = status_patch(mirror.spec.as_ref(), mirror.status.as_ref(), record.status)
        else {
            return;
        };
        let namespace = mirror.metadata.namespace.as_deref().unwrap_or("default");
        let name = mirror.metadata.name.as_deref().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => {
                self.mirrors.insert(key_of(&updated), updated);
            }
            Err(error) => {
                tracing::debug!(pod = %key_of(mirror), %error, "mirror pod status not pushed; retrying")
            }
        }
    }
}

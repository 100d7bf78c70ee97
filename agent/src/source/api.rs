//! The API server source: the pods bound to this node (`spec.nodeName=<node>`), watched through
//! kube's watcher, sent as full snapshots like the manifest directory's. A pod deleted from the
//! API, or bound elsewhere, drops out of the snapshot, which stops it; a pod marked for deletion
//! stays in it with its `deletionTimestamp`, which the pod workers act on.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{SourceName, SourceUpdate};

/// Pods bound to this node, from the API server.
#[derive(Clone)]
pub struct ApiSource {
    client: kube::Client,
    node_name: String,
}

impl std::fmt::Debug for ApiSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSource")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// The field selector of the pods bound to `node_name`.
pub fn node_selector(node_name: &str) -> String {
    format!("spec.nodeName={node_name}")
}

/// A snapshot of the pods the watcher knows, by UID (pods without a UID are skipped: the API
/// server always sets one).
/// Whether `pod` is a mirror pod (annotation `kubernetes.io/config.mirror`).
pub fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(super::MIRROR_ANNOTATION))
}

fn snapshot(pods: &BTreeMap<String, Pod>) -> SourceUpdate {
    SourceUpdate {
        source: SourceName::Api,
        // The API server defaulted them already; the agent's defaults fill in what an older
        // or foreign API server may leave out.
        // Mirror pods are the API's copies of this node's static pods, not pods to run.
        pods: pods
            .values()
            .filter(|pod| !is_mirror(pod))
            .cloned()
            .map(|mut pod| {
                super::apply_defaults(&mut pod);
                pod
            })
            .collect(),
        errors: Vec::new(),
        warnings: Vec::new(),
    }
}

fn uid(pod: &Pod) -> Option<String> {
    pod.metadata.uid.clone().filter(|u| !u.is_empty())
}

/// What one watcher event does to the known pods; true when a snapshot is due.
fn apply_event(
    known: &mut BTreeMap<String, Pod>,
    listing: &mut Option<BTreeMap<String, Pod>>,
    event: Event<Pod>,
) -> bool {
    match event {
        Event::Init => {
            *listing = Some(BTreeMap::new());
            false
        }
        Event::InitApply(pod) => {
            if let (Some(list), Some(uid)) = (listing.as_mut(), uid(&pod)) {
                list.insert(uid, pod);
            }
            false
        }
        Event::InitDone => {
            *known = listing.take().unwrap_or_default();
            true
        }
        Event::Apply(pod) => match uid(&pod) {
            Some(uid) => {
                known.insert(uid, pod);
                true
            }
            None => false,
        },
        Event::Delete(pod) => uid(&pod).is_some_and(|uid| known.remove(&uid).is_some()),
    }
}

impl ApiSource {
    /// A source of the pods bound to `node_name`.
    pub fn new(client: kube::Client, node_name: impl Into<String>) -> Self {
        ApiSource {
            client,
            node_name: node_name.into(),
        }
    }

    /// Starts the source on the current tokio runtime; it sends to `tx` until `tx`'s receiver
    /// is dropped.
    pub fn spawn(self, tx: mpsc::Sender<SourceUpdate>) -> JoinHandle<()> {
        tokio::spawn(self.run(tx))
    }

    /// Lists and watches (relisting with back-off after errors), sending a snapshot after each
    /// complete listing and each change. The first snapshot comes after the first listing, so
    /// that the merger does not take "not listed yet" for "gone".
    pub async fn run(self, tx: mpsc::Sender<SourceUpdate>) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&node_selector(&self.node_name));
        let mut stream = watcher::watcher(pods, config).default_backoff().boxed();
        let mut known = BTreeMap::new();
        let mut listing = None;
        let mut listed = false;
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                _ = tx.closed() => return,
            };
            let Some(event) = event else {
                tracing::warn!("the API pod watch ended");
                return;
            };
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(node = %self.node_name, %error, "watching pods bound to the node failed; retrying");
                    continue;
                }
            };
            if matches!(event, Event::InitDone) && !listed {
                listed = true;
                tracing::info!(node = %self.node_name, "pods bound to the node listed");
            }
            if apply_event(&mut known, &mut listing, event)
                && listed
                && tx.send(snapshot(&known)).await.is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, uid: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.metadata.uid = Some(uid.into());
        pod
    }

    #[test]
    fn a_relist_replaces_the_known_pods() {
        let mut known = BTreeMap::new();
        let mut listing = None;
        assert!(!apply_event(&mut known, &mut listing, Event::Init));
        assert!(!apply_event(
            &mut known,
            &mut listing,
            Event::InitApply(pod("a", "u1"))
        ));
        assert!(apply_event(&mut known, &mut listing, Event::InitDone));
        assert_eq!(snapshot(&known).pods.len(), 1);
        assert!(apply_event(
            &mut known,
            &mut listing,
            Event::Apply(pod("b", "u2"))
        ));
        assert!(apply_event(
            &mut known,
            &mut listing,
            Event::Delete(pod("a", "u1"))
        ));
        assert!(!apply_event(
            &mut known,
            &mut listing,
            Event::Delete(pod("a", "u1"))
        ));
        // A new listing without b: b is gone.
        apply_event(&mut known, &mut listing, Event::Init);
        apply_event(&mut known, &mut listing, Event::InitApply(pod("c", "u3")));
        assert!(apply_event(&mut known, &mut listing, Event::InitDone));
        let names: Vec<_> = snapshot(&known)
            .pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        assert_eq!(names, ["c"]);
        assert_eq!(snapshot(&known).source, SourceName::Api);
    }

    #[test]
    fn the_selector_names_the_node() {
        assert_eq!(node_selector("n1"), "spec.nodeName=n1");
    }
}

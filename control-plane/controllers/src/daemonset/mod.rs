//! The DaemonSet controller (`daemonset`): one pod per eligible node, pinned there by node
//! affinity on `metadata.name` for the scheduler to bind; the automatic daemon tolerations;
//! RollingUpdate (maxUnavailable / maxSurge) and OnDelete; ControllerRevision history; status.

mod eligibility;
mod history;
mod rollout;
mod sync;

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::runtime::reflector::{self, Store};

use crate::apps_shared::BACKOFF;
use crate::apps_shared::expectations::Expectations;
use crate::apps_shared::pods::controller_of;
use crate::apps_shared::selector;
use crate::context::Context;
use crate::events::EventSink;
use crate::informer::feed;
use crate::queue::{Key, WorkQueue};

/// The kind in controllerRefs.
const KIND: &str = "DaemonSet";

/// The caches and queue a sync reads.
pub(crate) struct Shared {
    client: kube::Client,
    sets: Store<DaemonSet>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    expectations: Expectations,
    events: EventSink,
}

/// Starts the controller; runs until dropped.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context.client))
}

async fn run(client: kube::Client) {
    let (sets, sets_writer) = reflector::store::<DaemonSet>();
    let (pods, pods_writer) = reflector::store::<Pod>();
    let (nodes, nodes_writer) = reflector::store::<Node>();
    let (revisions, revisions_writer) = reflector::store::<ControllerRevision>();
    let queue = Arc::new(WorkQueue::with_backoff(BACKOFF));
    let (events, publish) = EventSink::new(client.clone(), "daemonset-controller");
    let shared = Arc::new(Shared {
        client: client.clone(),
        sets: sets.clone(),
        pods: pods.clone(),
        nodes: nodes.clone(),
        revisions: revisions.clone(),
        expectations: Expectations::default(),
        events,
    });
    let set_feed = feed(
        Api::<DaemonSet>::all(client.clone()),
        sets_writer,
        Arc::clone(&queue),
        |set| key_of(&set.metadata).into_iter().collect(),
    );
    let pod_feed = feed(
        Api::<Pod>::all(client.clone()),
        pods_writer,
        Arc::clone(&queue),
        {
            let sets = sets.clone();
            move |pod| owners_of_pod(&sets, pod)
        },
    );
    // Any node change may change where pods should run: every DaemonSet looks again (upstream
    // filters for changes that matter; the sync is cheap when nothing does).
    let node_feed = feed(
        Api::<Node>::all(client.clone()),
        nodes_writer,
        Arc::clone(&queue),
        {
            let sets = sets.clone();
            move |_node| {
                sets.state()
                    .iter()
                    .filter_map(|s| key_of(&s.metadata))
                    .collect()
            }
        },
    );
    let revision_feed = feed(
        Api::<ControllerRevision>::all(client.clone()),
        revisions_writer,
        Arc::clone(&queue),
        |revision| {
            controller_of(&revision.metadata)
                .filter(|r| r.kind == KIND)
                .map(|r| {
                    Key::new(
                        revision.metadata.namespace.as_deref().unwrap_or(""),
                        &r.name,
                    )
                })
                .into_iter()
                .collect()
        },
    );
    let work = async {
        for ready in [
            sets.wait_until_ready().await,
            pods.wait_until_ready().await,
            nodes.wait_until_ready().await,
            revisions.wait_until_ready().await,
        ] {
            if ready.is_err() {
                return;
            }
        }
        queue
            .work(|key| {
                let shared = Arc::clone(&shared);
                async move { sync::sync(&shared, &key).await }
            })
            .await;
    };
    tokio::join!(set_feed, pod_feed, node_feed, revision_feed, work, publish);
}

fn key_of(meta: &kube::api::ObjectMeta) -> Option<Key> {
    Some(Key::new(meta.namespace.as_deref()?, meta.name.as_deref()?))
}

/// The DaemonSet controlling the pod, or, for an orphan, every one whose selector matches it
/// (they may adopt it).
fn owners_of_pod(sets: &Store<DaemonSet>, pod: &Pod) -> Vec<Key> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    if let Some(owner) = controller_of(&pod.metadata) {
        if owner.kind == KIND {
            return vec![Key::new(&namespace, &owner.name)];
        }
        return Vec::new();
    }
    sets.state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|s| {
            s.spec.as_ref().is_some_and(|spec| {
                !selector::is_empty(&spec.selector)
                    && selector::matches(&spec.selector, pod.metadata.labels.as_ref())
            })
        })
        .filter_map(|s| key_of(&s.metadata))
        .collect()
}

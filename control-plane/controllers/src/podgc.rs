//! `pod-garbage-collector`: over watch caches of pods and nodes, as upstream's PodGC deletes
//! (with grace 0): terminated pods beyond `--terminated-pod-gc-threshold` (evicted first, then
//! oldest first), pods bound to nodes that no longer exist after a 40 s quarantine (marked
//! Failed with a DisruptionTarget condition first), and unscheduled pods that are terminating.
//! A pass runs when the caches change (debounced) and when a quarantine ends.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::context::Context;

/// How long a node must be missing before its pods are collected (upstream's quarantineTime).
const QUARANTINE: Duration = Duration::from_secs(40);
/// Changes arriving together are handled in one pass.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// The controller's start function.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context))
}

/// Keeps `store` filled from a watch of `api`, telling `changed` of every event.
async fn feed<K>(api: Api<K>, writer: reflector::store::Writer<K>, changed: Arc<Notify>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let mut events = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        if event.is_ok() {
            changed.notify_one();
        }
    }
}

async fn run(context: Context) {
    let client = context.client.clone();
    let threshold = context.options.terminated_pod_gc_threshold;
    let changed = Arc::new(Notify::new());
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(feed(
        Api::all(client.clone()),
        pod_writer,
        Arc::clone(&changed),
    ));
    tasks.spawn(feed(
        Api::all(client.clone()),
        node_writer,
        Arc::clone(&changed),
    ));
    if pods.wait_until_ready().await.is_err() || nodes.wait_until_ready().await.is_err() {
        return;
    }
    let mut missing: HashMap<String, Instant> = HashMap::new();
    loop {
        let next = pass(&client, &pods, &nodes, threshold, &mut missing).await;
        let wake = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// One pass over the caches; when the next quarantine ends, if one is running.
async fn pass(
    client: &kube::Client,
    pods: &Store<Pod>,
    nodes: &Store<Node>,
    threshold: usize,
    missing: &mut HashMap<String, Instant>,
) -> Option<Instant> {
    let pods = pods.state();
    let known: HashSet<String> = nodes
        .state()
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    if threshold > 0 {
        let mut terminated: Vec<&Arc<Pod>> = pods.iter().filter(|p| terminal(p)).collect();
        if terminated.len() > threshold {
            let excess = terminated.len() - threshold;
            terminated.sort_by_key(|p| {
                (
                    !evicted(p),
                    p.metadata.creation_timestamp.clone().map(|t| t.0),
                )
            });
            for pod in terminated.into_iter().take(excess) {
                delete(client, pod, "the terminated-pod threshold is exceeded").await;
            }
        }
    }
    missing.retain(|node, _| !known.contains(node));
    let now = Instant::now();
    let mut next: Option<Instant> = None;
    let mut verified: HashMap<String, bool> = HashMap::new();
    for pod in pods.iter() {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        if node.is_empty() {
            if pod.metadata.deletion_timestamp.is_some() {
                delete(client, pod, "it is terminating and unscheduled").await;
            }
            continue;
        }
        if known.contains(&node) {
            continue;
        }
        let since = *missing.entry(node.clone()).or_insert(now);
        let ends = since + QUARANTINE;
        if ends > now {
            next = Some(next.map_or(ends, |n| n.min(ends)));
            continue;
        }
        let gone = match verified.get(&node) {
            Some(gone) => *gone,
            None => {
                let gone = node_gone(client, &node).await;
                verified.insert(node.clone(), gone);
                gone
            }
        };
        if gone {
            mark_failed(client, pod).await;
            delete(client, pod, "its node no longer exists").await;
        }
    }
    next
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn evicted(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

/// Whether the node is really gone (the cache may lag behind a node just registered).
async fn node_gone(client: &kube::Client, node: &str) -> bool {
    let nodes: Api<Node> = Api::all(client.clone());
    matches!(nodes.get_opt(node).await, Ok(None))
}

/// Marks a pod that has not finished Failed, with upstream's DisruptionTarget condition.
async fn mark_failed(client: &kube::Client, pod: &Pod) {
    if terminal(pod) {
        return;
    }
    let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
        return;
    };
    let mut conditions: Vec<serde_json::Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_ != "DisruptionTarget")
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    conditions.push(json!({
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "DeletionByPodGC",
        "message": "PodGC: node no longer exists",
        "lastTransitionTime": jiff::Timestamp::now().to_string(),
    }));
    let patch = json!({"status": {"phase": "Failed", "conditions": conditions}});
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    if let Err(error) = pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(pod = %name, %error, "pod GC could not mark the pod Failed");
    }
}

/// Deletes the pod with grace 0 and a UID precondition.
async fn delete(client: &kube::Client, pod: &Pod, why: &str) {
    let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
        return;
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: pod
            .metadata
            .uid
            .clone()
            .map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
        ..DeleteParams::default()
    };
    match pods.delete(name, &params).await {
        Ok(_) => tracing::info!(%namespace, pod = %name, why, "pod GC deleted a pod"),
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
        Err(error) => tracing::warn!(%namespace, pod = %name, %error, "pod GC could not delete"),
    }
}

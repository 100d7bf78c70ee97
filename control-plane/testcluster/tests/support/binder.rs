//! A stand-in for the scheduler in controller tests, which run with `scheduler: false` so that
//! they test the controllers alone: binds every unbound pod through `pods/binding` — to the
//! node a DaemonSet pod's required `matchFields metadata.name In [node]` term names, else to
//! the nodes round-robin in name order. Nothing else of scheduling (resources, taints,
//! affinity) is looked at. A pod already bound (or gone) answers with an error, which is
//! ignored. [`TestBinder::paused`] holds new pods back (they stay Pending) until cleared.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::task::JoinHandle;

/// The binder's task; stops when dropped.
pub struct TestBinder {
    task: JoinHandle<()>,
    /// While true, new pods are left unbound.
    pub paused: Arc<AtomicBool>,
}

impl Drop for TestBinder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts binding the unbound pods of every namespace.
pub fn start(client: kube::Client) -> TestBinder {
    let paused = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(run(client, Arc::clone(&paused)));
    TestBinder { task, paused }
}

fn pinned_node(pod: &Pod) -> Option<String> {
    let terms = &pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

async fn run(client: kube::Client, paused: Arc<AtomicBool>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let next = AtomicUsize::new(0);
    let config = watcher::Config::default().fields("spec.nodeName=");
    let mut events = watcher::watcher(pods, config).boxed();
    let mut waiting: Vec<Pod> = Vec::new();
    // Pods held back while paused are bound on a tick once the pause ends.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        let pod = tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => Some(pod),
                Some(Ok(_)) => None,
                Some(Err(error)) => {
                    tracing::warn!(%error, "test binder: watch failed");
                    None
                }
                None => return,
            },
            _ = tick.tick() => None,
        };
        waiting.extend(pod);
        if paused.load(Ordering::SeqCst) {
            continue;
        }
        for pod in std::mem::take(&mut waiting) {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Some(node) = choose(&client, &pod, &next).await {
                bind(&client, &pod, &node).await;
            }
        }
    }
}

async fn choose(client: &kube::Client, pod: &Pod, next: &AtomicUsize) -> Option<String> {
    if let Some(node) = pinned_node(pod) {
        return Some(node);
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&Default::default()).await.ok()?;
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort();
    let i = next.fetch_add(1, Ordering::SeqCst);
    Some(names[i % names.len()].clone())
}

async fn bind(client: &kube::Client, pod: &Pod, node: &str) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let bound: Result<serde_json::Value, _> = api
        .create_subresource("binding", &name, &PostParams::default(), &binding)
        .await;
    match bound {
        Ok(_) => tracing::debug!(pod = %name, %node, "test binder: bound"),
        Err(error) => tracing::debug!(pod = %name, %error, "test binder: not bound"),
    }
}

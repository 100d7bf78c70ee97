//! Shared by the workload controller tests: a stand-in binder for pods while these tests run
//! without the scheduler, and small helpers.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use capstan_testcluster::{ClusterOptions, TestCluster};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use tokio::task::JoinHandle;

/// A stand-in for the scheduler: watches Pending pods without a nodeName and binds each through
/// `pods/binding` to `node-0`, `node-1`, `node-2` in turn. The tests run with `scheduler:
/// false`, so that they pass before and after the real scheduler lands; with it, the binder's
/// Conflict on an already bound pod is ignored. `paused` stops binding (pods stay Pending).
pub struct RoundRobinBinder {
    task: JoinHandle<()>,
    /// While true, new pods are left unbound.
    pub paused: Arc<AtomicBool>,
}

impl Drop for RoundRobinBinder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the binder over `nodes` nodes.
pub fn round_robin_binder(client: kube::Client, nodes: usize) -> RoundRobinBinder {
    let paused = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&paused);
    let task = tokio::spawn(async move {
        let pods: Api<Pod> = Api::all(client.clone());
        let next = AtomicUsize::new(0);
        let config = watcher::Config::default().fields("spec.nodeName=");
        let mut events = watcher::watcher(pods, config).boxed();
        let mut waiting: Vec<Pod> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            let pod = tokio::select! {
                event = events.next() => match event {
                    Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => Some(pod),
                    Some(_) => None,
                    None => return,
                },
                _ = tick.tick() => None,
            };
            waiting.extend(pod);
            if flag.load(Ordering::SeqCst) {
                continue;
            }
            for pod in waiting.drain(..) {
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let node = format!("node-{}", next.fetch_add(1, Ordering::SeqCst) % nodes);
                bind(&client, &pod, &node).await;
            }
        }
    });
    RoundRobinBinder { task, paused }
}

async fn bind(client: &kube::Client, pod: &Pod, node: &str) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let binding = serde_json::json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    if let Err(error) = api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        tracing::debug!(pod = %name, %error, "binding failed");
    }
}

/// Three hollow nodes, no scheduler, the given controllers. `RUST_LOG` shows their logs.
pub async fn cluster(controllers: &[&str]) -> TestCluster {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    TestCluster::with(ClusterOptions {
        nodes: 3,
        scheduler: false,
        controllers: controllers.iter().map(|c| c.to_string()).collect(),
        ..ClusterOptions::default()
    })
    .await
}

/// Running, Ready and not terminating.
pub fn available(pod: &Pod) -> bool {
    active(pod)
        && pod.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Not terminating and not terminal.
pub fn active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// A label's value.
pub fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// The pods in `namespace` whose `key` label is `value`.
pub async fn pods_labelled(api: &Api<Pod>, key: &str, value: &str) -> Vec<Pod> {
    match api
        .list(&kube::api::ListParams::default().labels(&format!("{key}={value}")))
        .await
    {
        Ok(list) => list.items,
        Err(error) => panic!("list pods: {error}"),
    }
}

/// Watches the pods of `selector` in `default` and calls `check` with every pod present after
/// each event (terminating ones included): invariants are checked at every step.
pub fn watch_pods(
    client: kube::Client,
    selector: &str,
    mut check: impl FnMut(&std::collections::BTreeMap<String, Pod>) + Send + 'static,
) -> AbortOnDrop {
    let config = watcher::Config::default().labels(selector);
    let task = tokio::spawn(async move {
        let api: Api<Pod> = Api::namespaced(client, "default");
        let mut events = watcher::watcher(api, config).boxed();
        let mut pods = std::collections::BTreeMap::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(pod) | Event::InitApply(pod)) => {
                    pods.insert(pod.metadata.name.clone().unwrap_or_default(), pod);
                }
                Ok(Event::Delete(pod)) => {
                    pods.remove(&pod.metadata.name.clone().unwrap_or_default());
                }
                _ => continue,
            }
            check(&pods);
        }
    });
    AbortOnDrop(task)
}

/// Aborts its task when dropped.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

//! A stand-in for the scheduler in workload-controller tests (the real scheduler is built in
//! parallel): binds every unbound pod through `pods/binding` — to the node a DaemonSet pod's
//! required `matchFields metadata.name In [node]` term names, else round-robin over the nodes.
//! Nothing else of scheduling (resources, taints, affinity) is looked at.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use tokio::task::JoinHandle;

/// The binder's task; stops when dropped.
pub struct TestBinder(JoinHandle<()>);

impl Drop for TestBinder {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts binding the unbound pods of every namespace.
pub fn start(client: kube::Client) -> TestBinder {
    TestBinder(tokio::spawn(run(client)))
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

async fn run(client: kube::Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let next = AtomicUsize::new(0);
    let config = watcher::Config::default().fields("spec.nodeName=");
    let mut events = watcher::watcher(pods, config).boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            Ok(_) => continue,
            Err(error) => {
                tracing::warn!(%error, "test binder: watch failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let node = match pinned_node(&pod) {
            Some(node) => node,
            None => {
                let Ok(list) = nodes.list(&Default::default()).await else {
                    continue;
                };
                let mut names: Vec<String> = list
                    .items
                    .into_iter()
                    .filter_map(|n| n.metadata.name)
                    .collect();
                names.sort();
                if names.is_empty() {
                    continue;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                names[i % names.len()].clone()
            }
        };
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
        tracing::debug!(pod = %name, %node, ok = bound.is_ok(), "test binder: bound");
        if let Err(error) = bound {
            tracing::warn!(pod = %name, %error, "test binder: not bound");
        }
    }
}

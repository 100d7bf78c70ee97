//! A stand-in for the scheduler in controller tests: binds every Pending pod without a node to
//! the hollow nodes round-robin through pods/binding. It is not the scheduler (no filters, no
//! scores); tests use it with `scheduler: false` so that they pass whether or not the real
//! scheduler is built in.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::task::JoinHandle;

/// Runs the binder until the handle is dropped or aborted; `nodes` are the node names.
pub fn spawn_test_binder(client: kube::Client, nodes: Vec<String>) -> AbortOnDrop {
    let handle = tokio::spawn(async move {
        let pods: Api<Pod> = Api::all(client.clone());
        let config = watcher::Config::default().fields("spec.nodeName=");
        let next = AtomicUsize::new(0);
        let mut events = watcher::watcher(pods, config).applied_objects().boxed();
        while let Some(event) = events.next().await {
            let Ok(pod) = event else { continue };
            if pod.metadata.deletion_timestamp.is_some() || nodes.is_empty() {
                continue;
            }
            let node = &nodes[next.fetch_add(1, Ordering::Relaxed) % nodes.len()];
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                target: ObjectReference {
                    kind: Some("Node".into()),
                    name: Some(node.clone()),
                    ..ObjectReference::default()
                },
            };
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            // A pod already bound (or gone) answers with an error: nothing to do.
            let _ = api
                .create_subresource::<Binding, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await;
        }
    });
    AbortOnDrop(handle)
}

/// Aborts the binder when dropped.
pub struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

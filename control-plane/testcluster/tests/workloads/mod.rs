//! Shared by the workload controller tests: the cluster they run in (no scheduler: they bind
//! with `support/binder.rs`) and small helpers.

#![allow(dead_code)]

use capstan_testcluster::{ClusterOptions, TestCluster};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use tokio::task::JoinHandle;

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

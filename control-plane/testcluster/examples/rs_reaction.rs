//! Controller reaction latency: how long after a pod of a ReplicaSet is deleted its replacement
//! is created (delete request sent → the new pod's ADDED watch event), over 50 deletions, as
//! p50 / p99. The pods are pinned to `node-0` by the template, so the scheduler is not needed;
//! deleted pods go terminating and the hollow node finishes them, as a kubelet would.
//!
//! `cargo run --release -p capstan-testcluster --example rs_reaction` (or without `--release`)

use std::collections::HashSet;
use std::time::{Duration, Instant};

use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::watcher::{self, Event};

const REPLICAS: usize = 10;
const DELETIONS: usize = 50;

fn active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
}

#[tokio::main]
async fn main() {
    let cluster = TestCluster::with(ClusterOptions {
        nodes: 1,
        scheduler: false,
        controllers: vec!["replicaset".into()],
        ..ClusterOptions::default()
    })
    .await;
    cluster
        .apply(&format!(
            r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: lat
spec:
  replicas: {REPLICAS}
  selector:
    matchLabels:
      app: lat
  template:
    metadata:
      labels:
        app: lat
    spec:
      nodeName: node-0
      containers:
      - name: c
        image: busybox
"#
        ))
        .await;
    // In process, as the controllers reach the API server: no HTTP hop in the figure.
    let client = capstan_testcluster::in_process_client(
        &cluster.server,
        capstan_apiserver::RequestUser::admin(),
    );
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let params = ListParams::default().labels("app=lat");
    eventually(Duration::from_secs(30), "all replicas", || async {
        let list = pods.list(&params).await.ok()?;
        (list.items.iter().filter(|p| active(p)).count() == REPLICAS).then_some(())
    })
    .await;

    let (added, mut added_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watched = pods.clone();
    let watch = tokio::spawn(async move {
        let config = watcher::Config::default().labels("app=lat");
        let mut events = watcher::watcher(watched, config).boxed();
        let mut seen = HashSet::new();
        while let Some(event) = events.next().await {
            if let Ok(Event::Apply(pod) | Event::InitApply(pod)) = event {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if seen.insert(name.clone()) {
                    let _ = added.send((name, Instant::now()));
                }
            }
        }
    });
    // Drain the pods already there.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while added_rx.try_recv().is_ok() {}

    let mut latencies = Vec::with_capacity(DELETIONS);
    for _ in 0..DELETIONS {
        let list = match pods.list(&params).await {
            Ok(list) => list,
            Err(error) => panic!("list: {error}"),
        };
        let Some(victim) = list.items.iter().find(|p| active(p)) else {
            panic!("no pod to delete");
        };
        let name = victim.metadata.name.clone().unwrap_or_default();
        // From the delete request: the in-process controller may create the replacement
        // before the HTTP response to the delete reaches this client.
        let deleted = Instant::now();
        // A delete racing the node's status update is a Conflict: try again, as kubectl does.
        let mut tries = 0;
        while let Err(error) = pods.delete(&name, &DeleteParams::default()).await {
            tries += 1;
            if tries > 5 {
                panic!("delete {name}: {error}");
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), added_rx.recv()).await {
            Ok(Some((_, at))) => latencies.push(at.saturating_duration_since(deleted)),
            _ => panic!("no replacement for {name}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch.abort();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "ReplicaSet reaction (pod deleted -> replacement created) over {DELETIONS} deletions: \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pick(0.50).as_secs_f64() * 1000.0,
        pick(0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
    );
}

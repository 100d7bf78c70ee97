//! The pod garbage collector: terminated pods beyond the threshold go, evicted ones first and
//! then the oldest; running pods stay. Pods are not bound (no scheduler, no nodes): their
//! phase is set through the status subresource, as a kubelet would.

use std::time::Duration;

use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

async fn pod(pods: &Api<Pod>, name: &str, phase: &str, reason: Option<&str>) {
    let value = json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let object: Pod = match serde_json::from_value(value) {
        Ok(pod) => pod,
        Err(error) => panic!("pod: {error}"),
    };
    if let Err(error) = pods.create(&PostParams::default(), &object).await {
        panic!("create {name}: {error}");
    }
    let mut status = json!({"phase": phase});
    if let Some(reason) = reason {
        status["reason"] = json!(reason);
    }
    let patch = json!({"status": status});
    if let Err(error) = pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        panic!("status of {name}: {error}");
    }
}

#[tokio::test]
async fn terminated_pods_above_the_threshold_go_evicted_then_oldest_first() {
    let mut options = ClusterOptions {
        nodes: 0,
        scheduler: false,
        controllers: vec!["pod-garbage-collector".into()],
        ..ClusterOptions::default()
    };
    options.controller_options.terminated_pod_gc_threshold = 2;
    let cluster = TestCluster::with(options).await;
    let pods: Api<Pod> = cluster.api("default");
    pod(&pods, "oldest", "Succeeded", None).await;
    // creationTimestamp has a resolution of a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    pod(&pods, "failed", "Failed", None).await;
    pod(&pods, "running", "Running", None).await;
    pod(&pods, "done", "Succeeded", None).await;
    pod(&pods, "evicted", "Failed", Some("Evicted")).await;
    let left = eventually(
        Duration::from_secs(15),
        "two terminated pods left",
        || async {
            let mut names: Vec<String> = pods
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name)
                .collect();
            names.sort();
            (names.len() == 3).then_some(names)
        },
    )
    .await;
    assert_eq!(left, vec!["done", "failed", "running"]);
    // No more than the excess is taken.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = match pods.list(&Default::default()).await {
        Ok(list) => list.items.len(),
        Err(error) => panic!("list: {error}"),
    };
    assert_eq!(after, 3);
}

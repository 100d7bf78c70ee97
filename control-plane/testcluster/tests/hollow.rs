//! Hollow nodes register with capacity and a Lease, and report the pods bound to them Running;
//! a killed one stops renewing its Lease.

use std::time::Duration;

use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};

fn pod(name: &str, node: &str) -> Pod {
    let value = serde_json::json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    });
    match serde_json::from_value(value) {
        Ok(pod) => pod,
        Err(error) => panic!("pod: {error}"),
    }
}

#[tokio::test]
async fn hollow_nodes_register_and_run_bound_pods() {
    let cluster = TestCluster::with(ClusterOptions {
        nodes: 2,
        scheduler: false,
        controllers: vec![],
        ..ClusterOptions::default()
    })
    .await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let node = match nodes.get("node-1").await {
        Ok(node) => node,
        Err(error) => panic!("node-1: {error}"),
    };
    let status = node.status.unwrap_or_default();
    let capacity = status.capacity.unwrap_or_default();
    assert_eq!(capacity.get("cpu").map(|q| q.0.as_str()), Some("4"));
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status);
    assert_eq!(ready.as_deref(), Some("True"));

    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), "kube-node-lease");
    eventually(Duration::from_secs(10), "node-1's lease", || async {
        leases.get_opt("node-1").await.ok().flatten()
    })
    .await;

    let pods: Api<Pod> = cluster.api("default");
    if let Err(error) = pods
        .create(&PostParams::default(), &pod("p", "node-1"))
        .await
    {
        panic!("create: {error}");
    }
    let running = eventually(Duration::from_secs(10), "pod p Running", || async {
        let pod = pods.get("p").await.ok()?;
        let status = pod.status?;
        (status.phase.as_deref() == Some("Running")).then_some(status)
    })
    .await;
    assert!(running.pod_ip.is_some_and(|ip| ip.starts_with("10.")));

    let out = cluster.kubectl_ok(&["get", "pods", "-o", "wide"]).await;
    assert!(out.contains("Running") && out.contains("node-1"), "{out}");
    // Deletion is finished by the node: the pod goes away.
    let out = cluster
        .kubectl_ok(&["delete", "pod", "p", "--wait=true", "--timeout=20s"])
        .await;
    assert!(out.contains("deleted"), "{out}");
    assert!(matches!(pods.get_opt("p").await, Ok(None)));
}

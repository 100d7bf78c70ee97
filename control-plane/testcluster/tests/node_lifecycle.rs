//! Node lifecycle and taint eviction: a hollow node that stops renewing its Lease goes
//! Unknown and gets the `unreachable` taints; its pods are marked not ready and deleted once
//! their tolerationSeconds have passed (and not before); revived, it is Ready and untainted.
//! Pods are bound with `spec.nodeName` (scheduler off), since where they run is the point.

use std::time::{Duration, Instant};

use capstan_controllers::ControllerOptions;
use capstan_hollow::HollowOptions;
use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, PostParams};

const GRACE: Duration = Duration::from_secs(3);

fn pod(name: &str, node: &str, seconds: Option<i64>) -> Pod {
    let toleration = |key: &str| {
        serde_json::json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                           "tolerationSeconds": seconds})
    };
    let value = serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "busybox"}],
            "tolerations": [toleration("node.kubernetes.io/unreachable"),
                            toleration("node.kubernetes.io/not-ready")],
        },
    });
    match serde_json::from_value(value) {
        Ok(pod) => pod,
        Err(error) => panic!("pod: {error}"),
    }
}

fn condition(node: &Node, kind: &str) -> Option<(String, Option<String>, Option<String>)> {
    let c = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn taint_keys(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|t| {
            t.iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect()
        })
        .unwrap_or_default()
}

fn pod_ready(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

#[tokio::test]
async fn silent_node_goes_unknown_is_tainted_and_its_pods_evicted_after_toleration() {
    let mut controller_options = ControllerOptions::new("test");
    controller_options.node_monitor_grace_period = GRACE;
    controller_options.node_monitor_period = Duration::from_millis(500);
    let cluster = TestCluster::with(ClusterOptions {
        nodes: 2,
        scheduler: false,
        controllers: vec!["nodelifecycle".into(), "taint-eviction-controller".into()],
        controller_options,
        hollow: HollowOptions {
            lease_renew_interval: Duration::from_millis(500),
            lease_duration_seconds: 3,
        },
        ..ClusterOptions::default()
    })
    .await;
    let pods: Api<Pod> = cluster.api("default");
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    for (name, node, seconds) in [
        ("short", "node-1", Some(2)),
        ("zero", "node-1", Some(0)),
        ("forever", "node-1", None),
        ("elsewhere", "node-0", Some(2)),
    ] {
        if let Err(error) = pods
            .create(&PostParams::default(), &pod(name, node, seconds))
            .await
        {
            panic!("create {name}: {error}");
        }
    }
    for name in ["short", "zero", "forever", "elsewhere"] {
        eventually(
            Duration::from_secs(10),
            "pods Running and Ready",
            || async {
                let pod = pods.get(name).await.ok()?;
                (pod_ready(&pod).as_deref() == Some("True")).then_some(())
            },
        )
        .await;
    }
    // Live nodes stay Ready and untainted past the grace period.
    tokio::time::sleep(GRACE + Duration::from_secs(1)).await;
    for name in ["node-0", "node-1"] {
        let node = match nodes.get(name).await {
            Ok(node) => node,
            Err(error) => panic!("{name}: {error}"),
        };
        assert_eq!(
            condition(&node, "Ready").map(|c| c.0).as_deref(),
            Some("True")
        );
        assert!(taint_keys(&node).is_empty(), "{:?}", taint_keys(&node));
    }

    let killed = Instant::now();
    cluster.nodes.kill("node-1");
    let node = eventually(
        GRACE + Duration::from_secs(5),
        "node-1 Unknown and tainted",
        || async {
            let node = nodes.get("node-1").await.ok()?;
            let unknown = condition(&node, "Ready").is_some_and(|c| c.0 == "Unknown");
            let tainted =
                taint_keys(&node).contains(&"node.kubernetes.io/unreachable:NoExecute".to_string());
            (unknown && tainted).then_some(node)
        },
    )
    .await;
    let tainted_seen = Instant::now();
    // Silence counts from the last renewal seen (at most one renew interval before the kill).
    assert!(
        killed.elapsed() >= GRACE - Duration::from_millis(600),
        "{:?}",
        killed.elapsed()
    );
    for kind in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(
            condition(&node, kind),
            Some((
                "Unknown".to_string(),
                Some("NodeStatusUnknown".to_string()),
                Some("Kubelet stopped posting node status.".to_string())
            )),
            "{kind}"
        );
    }
    let keys = taint_keys(&node);
    assert!(
        keys.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string()),
        "{keys:?}"
    );
    let out = cluster.kubectl_ok(&["get", "node", "node-1"]).await;
    assert!(out.contains("NotReady"), "{out}");

    // tolerationSeconds 0: deleted at once.
    let zero_deleted = eventually(Duration::from_secs(5), "pod zero deleted", || async {
        let pod = pods.get("zero").await.ok()?;
        pod.metadata.deletion_timestamp.map(|_| Instant::now())
    })
    .await;
    assert!(zero_deleted - tainted_seen < Duration::from_millis(1500));
    // Marked not ready at once, deleted only after its 2 s toleration.
    let deleted_at = eventually(Duration::from_secs(10), "pod short deleted", || async {
        let pod = pods.get("short").await.ok()?;
        if pod.metadata.deletion_timestamp.is_some() {
            return Some(Instant::now());
        }
        assert_eq!(pod_ready(&pod).as_deref().unwrap_or("False"), "False");
        None
    })
    .await;
    let waited = deleted_at - tainted_seen;
    assert!(
        waited >= Duration::from_millis(1500),
        "deleted after {waited:?}"
    );
    let short = match pods.get("short").await {
        Ok(pod) => pod,
        Err(error) => panic!("short: {error}"),
    };
    let disruption = short
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "DisruptionTarget");
    assert_eq!(
        disruption.and_then(|c| c.reason).as_deref(),
        Some("DeletionByTaintManager")
    );
    let events: Api<Event> = cluster.api("default");
    let list = match events.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(error) => panic!("events: {error}"),
    };
    let has = |reason: &str, message: &str| {
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some(reason) && e.message.as_deref() == Some(message))
    };
    assert!(has(
        "TaintManagerEviction",
        "Marking for deletion Pod default/short"
    ));
    assert!(has(
        "NodeNotReady",
        "Node node-1 status is now: NodeNotReady"
    ));
    assert!(has("NodeNotReady", "Node is not ready"));
    // Tolerated for good, or on a live node: left alone.
    for name in ["forever", "elsewhere"] {
        let pod = match pods.get(name).await {
            Ok(pod) => pod,
            Err(error) => panic!("{name}: {error}"),
        };
        assert!(pod.metadata.deletion_timestamp.is_none(), "{name} deleted");
    }
    let forever = pods.get("forever").await.ok();
    assert_eq!(
        forever.as_ref().and_then(pod_ready).as_deref(),
        Some("False")
    );

    cluster.nodes.revive("node-1");
    eventually(
        Duration::from_secs(10),
        "node-1 Ready and untainted",
        || async {
            let node = nodes.get("node-1").await.ok()?;
            let ready = condition(&node, "Ready").is_some_and(|c| c.0 == "True");
            (ready && taint_keys(&node).is_empty()).then_some(())
        },
    )
    .await;
    // It stays so: the controller does not flap it back.
    tokio::time::sleep(GRACE + Duration::from_secs(1)).await;
    let node = nodes.get("node-1").await.ok();
    assert_eq!(
        node.as_ref()
            .and_then(|n| condition(n, "Ready"))
            .map(|c| c.0)
            .as_deref(),
        Some("True")
    );
}

#[tokio::test]
async fn cordoned_node_gets_the_unschedulable_taint_until_uncordoned() {
    let cluster = TestCluster::with(ClusterOptions {
        nodes: 1,
        scheduler: false,
        controllers: vec!["nodelifecycle".into()],
        ..ClusterOptions::default()
    })
    .await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let has = |want: bool| {
        let nodes = nodes.clone();
        async move {
            let node = nodes.get("node-0").await.ok()?;
            let tainted = taint_keys(&node)
                .contains(&"node.kubernetes.io/unschedulable:NoSchedule".to_string());
            (tainted == want).then_some(())
        }
    };
    cluster.kubectl_ok(&["cordon", "node-0"]).await;
    eventually(Duration::from_secs(5), "unschedulable taint", || has(true)).await;
    cluster.kubectl_ok(&["uncordon", "node-0"]).await;
    eventually(Duration::from_secs(5), "unschedulable taint gone", || {
        has(false)
    })
    .await;
}

//! The DaemonSet controller against the real API server and hollow nodes. The scheduler is off:
//! daemon pods are pinned by `matchFields metadata.name In [node]` (as upstream, no nodeName),
//! and `support/binder.rs`'s test binder binds them to that node.

#[path = "support/binder.rs"]
mod binder;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use capstan_hollow::NodeSpec;
use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Pod, Taint};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

async fn cluster(nodes: usize) -> (TestCluster, binder::TestBinder) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cluster = TestCluster::with(ClusterOptions {
        nodes,
        scheduler: false,
        controllers: vec!["daemonset".into()],
        ..ClusterOptions::default()
    })
    .await;
    let binder = binder::start(cluster.client.clone());
    (cluster, binder)
}

fn manifest(name: &str, strategy: &str, image: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  updateStrategy: {strategy}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{hollow.capstan.dev/ready-after: "0.5"}}
    spec:
      containers: [{{name: c, image: {image}}}]
"#
    )
}

/// Live pods of `app` by the node they are bound to.
async fn pods_by_node(pods: &Api<Pod>, app: &str) -> BTreeMap<String, Vec<Pod>> {
    let list = match pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
    {
        Ok(list) => list.items,
        Err(error) => panic!("list pods: {error}"),
    };
    let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in list {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        by_node.entry(node).or_default().push(pod);
    }
    by_node
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn hash(pod: &Pod) -> String {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("controller-revision-hash"))
        .cloned()
        .unwrap_or_default()
}

/// A pod's name, phase and readiness, for failure messages.
type PodState = (String, String, bool);

/// Waits until every node in `nodes` runs exactly one Ready pod of `app`, and no other node
/// runs one.
async fn wait_one_ready_per_node(pods: &Api<Pod>, app: &str, nodes: &[&str]) {
    let want: BTreeSet<String> = nodes.iter().map(|n| n.to_string()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let by_node = pods_by_node(pods, app).await;
        let have: BTreeSet<String> = by_node.keys().cloned().collect();
        if have == want && by_node.values().all(|p| p.len() == 1 && is_ready(&p[0])) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let seen: Vec<(String, Vec<PodState>)> = by_node
                .iter()
                .map(|(node, pods)| {
                    let pods = pods
                        .iter()
                        .map(|p| {
                            let phase = p.status.as_ref().and_then(|s| s.phase.clone());
                            let name = p.metadata.name.clone().unwrap_or_default();
                            (name, phase.unwrap_or_default(), is_ready(p))
                        })
                        .collect();
                    (node.clone(), pods)
                })
                .collect();
            panic!("wanted one Ready pod on each of {want:?}; have {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn daemonset_runs_one_pod_per_eligible_node_and_follows_new_nodes() {
    let (mut cluster, _binder) = cluster(3).await;
    cluster
        .apply(&manifest("agent", "{type: RollingUpdate}", "busybox:1"))
        .await;
    let pods: Api<Pod> = cluster.api("default");
    wait_one_ready_per_node(&pods, "agent", &["node-0", "node-1", "node-2"]).await;

    // Pods are pinned by affinity on the node's name and carry the daemon tolerations.
    let by_node = pods_by_node(&pods, "agent").await;
    let pod = &by_node["node-1"][0];
    let spec = pod.spec.clone().unwrap_or_default();
    let term = serde_json::to_value(&spec.affinity).unwrap_or_default();
    assert_eq!(
        term.pointer("/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0"),
        Some(&json!({"key": "metadata.name", "operator": "In", "values": ["node-1"]})),
        "{term}"
    );
    let tolerations: BTreeSet<(String, String)> = spec
        .tolerations
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.effect.unwrap_or_default()))
        .collect();
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        assert!(
            tolerations.contains(&(key.into(), effect.into())),
            "{key}: {tolerations:?}"
        );
    }
    assert!(
        !tolerations
            .iter()
            .any(|(k, _)| k == "node.kubernetes.io/network-unavailable"),
        "only host-network pods tolerate network-unavailable"
    );
    let owner = pod.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owner.len(), 1);
    assert_eq!(
        (owner[0].kind.as_str(), owner[0].controller),
        ("DaemonSet", Some(true))
    );
    assert!(
        pod.metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("agent-"))
    );

    // The revision is `<ds>-<hash>`, the hash labels the pods.
    let revisions: Api<ControllerRevision> = cluster.api("default");
    let revision = match revisions.get(&format!("agent-{}", hash(pod))).await {
        Ok(revision) => revision,
        Err(error) => panic!("revision agent-{}: {error}", hash(pod)),
    };
    assert_eq!(revision.revision, 1);

    // A new node gets a pod; one tainted without a toleration gets none; one cordoned (its
    // unschedulable taint is among the daemon tolerations) gets one.
    let taint = |key: &str| Taint {
        key: key.into(),
        value: Some("x".into()),
        effect: "NoSchedule".into(),
        time_added: None,
    };
    let tainted = NodeSpec {
        name: "tainted".into(),
        taints: vec![taint("dedicated")],
        ..NodeSpec::default()
    };
    let cordoned = NodeSpec {
        name: "cordoned".into(),
        taints: vec![Taint {
            value: None,
            ..taint("node.kubernetes.io/unschedulable")
        }],
        unschedulable: true,
        ..NodeSpec::default()
    };
    for spec in [
        tainted,
        NodeSpec {
            name: "node-3".into(),
            ..NodeSpec::default()
        },
        cordoned,
    ] {
        if let Err(error) = cluster.nodes.add(spec).await {
            panic!("add node: {error}");
        }
    }
    wait_one_ready_per_node(
        &pods,
        "agent",
        &["cordoned", "node-0", "node-1", "node-2", "node-3"],
    )
    .await;
    let sets: Api<DaemonSet> = cluster.api("default");
    let status = eventually(Duration::from_secs(10), "status of 5 nodes", || async {
        let status = sets.get("agent").await.ok()?.status?;
        (status.number_available == Some(5)).then_some(status)
    })
    .await;
    assert_eq!(status.desired_number_scheduled, 5);
    assert_eq!(status.current_number_scheduled, 5);
    assert_eq!(status.number_ready, 5);
    assert_eq!(status.number_misscheduled, 0);
    assert_eq!(status.updated_number_scheduled, Some(5));
    assert_eq!(status.number_unavailable, Some(0));
    assert!(!pods_by_node(&pods, "agent").await.contains_key("tainted"));

    let out = cluster
        .kubectl_ok(&["rollout", "status", "daemonset/agent", "--timeout=20s"])
        .await;
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
    cluster.stop();
}

/// Polls the pods of `app` until all run `image` and are Ready, checking at every step that
/// the number of nodes with a Ready pod never drops below `min_ready` and there are never more
/// than `max_total` live pods.
async fn watch_rollout(
    pods: &Api<Pod>,
    app: &str,
    image: &str,
    min_ready: usize,
    max_total: usize,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let by_node = pods_by_node(pods, app).await;
        let ready_nodes = by_node
            .iter()
            .filter(|(node, pods)| !node.is_empty() && pods.iter().any(is_ready))
            .count();
        let total: usize = by_node
            .values()
            .flatten()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        assert!(
            ready_nodes >= min_ready,
            "only {ready_nodes} nodes Ready: {:?}",
            by_node.keys()
        );
        assert!(total <= max_total, "{total} live pods");
        let done = by_node.values().flatten().all(|p| {
            is_ready(p)
                && p.spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.image.as_deref())
                    == Some(image)
        }) && total == 3;
        if done {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollout did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn patch(sets: &Api<DaemonSet>, value: serde_json::Value) {
    if let Err(error) = sets
        .patch("slow", &PatchParams::default(), &Patch::Strategic(value))
        .await
    {
        panic!("patch: {error}");
    }
}

#[tokio::test]
async fn daemonset_rolling_update_keeps_max_unavailable_and_max_surge() {
    let (mut cluster, _binder) = cluster(3).await;
    let pods: Api<Pod> = cluster.api("default");
    let sets: Api<DaemonSet> = cluster.api("default");
    cluster
        .apply(&manifest(
            "slow",
            "{type: RollingUpdate, rollingUpdate: {maxUnavailable: 1}}",
            "busybox:1",
        ))
        .await;
    wait_one_ready_per_node(&pods, "slow", &["node-0", "node-1", "node-2"]).await;
    let image = |image: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    patch(&sets, image("busybox:2")).await;
    // maxUnavailable 1 of 3: at least 2 nodes Ready throughout, never more than 3 pods.
    watch_rollout(&pods, "slow", "busybox:2", 2, 3).await;
    let out = cluster
        .kubectl_ok(&["rollout", "status", "daemonset/slow", "--timeout=20s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");

    // maxSurge 1, maxUnavailable 0: all 3 nodes Ready throughout, at most 4 pods.
    patch(&sets, json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}})).await;
    patch(&sets, image("busybox:3")).await;
    watch_rollout(&pods, "slow", "busybox:3", 3, 4).await;

    let revisions: Api<ControllerRevision> = cluster.api("default");
    let list = match revisions
        .list(&ListParams::default().labels("app=slow"))
        .await
    {
        Ok(list) => list.items,
        Err(error) => panic!("revisions: {error}"),
    };
    let mut numbers: Vec<i64> = list.iter().map(|r| r.revision).collect();
    numbers.sort();
    // One revision per template; the strategy change made none.
    assert_eq!(numbers, vec![1, 2, 3]);
    cluster.stop();
}

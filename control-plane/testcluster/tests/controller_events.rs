//! The events the StatefulSet, DaemonSet and disruption controllers record, with upstream's
//! reasons and texts, as `kubectl describe` and the Event API show them. No scheduler: the
//! controllers' creates and deletes happen whether or not the pods are bound.

use std::time::Duration;

use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn cluster(nodes: usize, controllers: &[&str]) -> TestCluster {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    TestCluster::with(ClusterOptions {
        nodes,
        scheduler: false,
        controllers: controllers.iter().map(|c| c.to_string()).collect(),
        ..ClusterOptions::default()
    })
    .await
}

/// (type, reason, message) of the events about `kind`/`name` in default.
async fn events_of(cluster: &TestCluster, kind: &str, name: &str) -> Vec<(String, String, String)> {
    let events: Api<Event> = cluster.api("default");
    let Ok(list) = events.list(&ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some(kind)
                && e.involved_object.name.as_deref() == Some(name)
        })
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits for an event about `kind`/`name` with `reason` and `message`, and returns its type.
async fn wait_event(
    cluster: &TestCluster,
    kind: &str,
    name: &str,
    reason: &str,
    message: &str,
) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = events_of(cluster, kind, name).await;
        if let Some((t, _, _)) = events.iter().find(|(_, r, m)| r == reason && m == message) {
            return t.clone();
        }
        if tokio::time::Instant::now() > deadline {
            let all = cluster.kubectl(&["get", "events", "-o", "wide"]).await;
            panic!(
                "no {reason}: {message} in {events:?}; all: {}{}",
                all.stdout, all.stderr
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Parallel pods and their claims are created with upstream's `SuccessfulCreate` texts,
/// scaling down deletes with `SuccessfulDelete`, and `kubectl describe` lists them.
#[tokio::test]
async fn statefulset_records_creates_claims_and_deletes() {
    let cluster = cluster(1, &["statefulset"]).await;
    cluster
        .apply(
            r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 2
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: nginx}]}
  volumeClaimTemplates:
  - metadata: {name: www}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"#,
        )
        .await;
    for ordinal in 0..2 {
        let kind = wait_event(
            &cluster,
            "StatefulSet",
            "web",
            "SuccessfulCreate",
            &format!("create Pod web-{ordinal} in StatefulSet web successful"),
        )
        .await;
        assert_eq!(kind, "Normal");
        wait_event(
            &cluster,
            "StatefulSet",
            "web",
            "SuccessfulCreate",
            &format!("create Claim www-web-{ordinal} Pod web-{ordinal} in StatefulSet web success"),
        )
        .await;
    }
    cluster
        .kubectl_ok(&["scale", "statefulset", "web", "--replicas=1"])
        .await;
    wait_event(
        &cluster,
        "StatefulSet",
        "web",
        "SuccessfulDelete",
        "delete Pod web-1 in StatefulSet web successful",
    )
    .await;
    let described = cluster
        .kubectl_ok(&["describe", "statefulset", "web"])
        .await;
    assert!(
        described.contains("SuccessfulDelete")
            && described.contains("delete Pod web-1 in StatefulSet web successful"),
        "{described}"
    );
}

/// Daemon pods are created with `Created pod: <name>`; a Failed one is reported with
/// `FailedDaemonPod` and deleted, and a pod whose node stopped matching is deleted with
/// `Deleted pod: <name>`.
#[tokio::test]
async fn daemonset_records_creates_failed_pods_and_deletes() {
    let cluster = cluster(2, &["daemonset"]).await;
    let nodes = Api::<Node>::all(cluster.client.clone());
    for node in ["node-0", "node-1"] {
        let patch = json!({"metadata": {"labels": {"ds": "on"}}});
        if let Err(error) = nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            panic!("label {node}: {error}");
        }
    }
    cluster
        .apply(
            r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {ds: "on"}
      containers: [{name: c, image: busybox}]
"#,
        )
        .await;
    let pods: Api<Pod> = cluster.api("default");
    let on_node = |node: &'static str| {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=agent"))
                .await
                .ok()?;
            list.items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .find(|p| serde_json::to_string(&p.spec).is_ok_and(|s| s.contains(node)))
                .and_then(|p| p.metadata.name)
        }
    };
    let first = eventually(WAIT, "a pod for node-0", || on_node("node-0")).await;
    let second = eventually(WAIT, "a pod for node-1", || on_node("node-1")).await;
    for pod in [&first, &second] {
        let kind = wait_event(
            &cluster,
            "DaemonSet",
            "agent",
            "SuccessfulCreate",
            &format!("Created pod: {pod}"),
        )
        .await;
        assert_eq!(kind, "Normal");
    }

    let failed = json!({"status": {"phase": "Failed"}});
    if let Err(error) = pods
        .patch_status(&first, &PatchParams::default(), &Patch::Merge(&failed))
        .await
    {
        panic!("fail {first}: {error}");
    }
    let kind = wait_event(
        &cluster,
        "DaemonSet",
        "agent",
        "FailedDaemonPod",
        &format!("Found failed daemon pod default/{first} on node node-0, will try to kill it"),
    )
    .await;
    assert_eq!(kind, "Warning");
    wait_event(
        &cluster,
        "DaemonSet",
        "agent",
        "SuccessfulDelete",
        &format!("Deleted pod: {first}"),
    )
    .await;

    let unlabel = json!({"metadata": {"labels": {"ds": null}}});
    if let Err(error) = nodes
        .patch("node-1", &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
    {
        panic!("unlabel node-1: {error}");
    }
    wait_event(
        &cluster,
        "DaemonSet",
        "agent",
        "SuccessfulDelete",
        &format!("Deleted pod: {second}"),
    )
    .await;
}

/// A budget selecting no pods gets `NoPods`, one with a percentage over a pod without a
/// controller gets `UnmanagedPods`, and one whose pod names a missing controller gets
/// `CalculateExpectedPodCountFailed` (and the SyncFailed condition).
#[tokio::test]
async fn disruption_records_no_pods_unmanaged_and_count_failures() {
    let cluster = cluster(1, &["disruption"]).await;
    cluster
        .apply(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: empty}\n\
             spec: {minAvailable: 1, selector: {matchLabels: {app: none}}}\n",
        )
        .await;
    let kind = wait_event(
        &cluster,
        "PodDisruptionBudget",
        "empty",
        "NoPods",
        "No matching pods found",
    )
    .await;
    assert_eq!(kind, "Normal");

    cluster
        .apply(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: lone, labels: {app: lone}}\n\
             spec: {nodeName: node-0, containers: [{name: c, image: busybox}]}\n",
        )
        .await;
    cluster
        .apply(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: lone}\n\
             spec: {minAvailable: \"50%\", selector: {matchLabels: {app: lone}}}\n",
        )
        .await;
    let kind = wait_event(
        &cluster,
        "PodDisruptionBudget",
        "lone",
        "UnmanagedPods",
        "Pods selected by this PodDisruptionBudget (selector: &LabelSelector{MatchLabels:map[string]string{app: lone,},MatchExpressions:[]LabelSelectorRequirement{},}) were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
    )
    .await;
    assert_eq!(kind, "Warning");

    cluster
        .apply(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: orphan\n  labels: {app: orphan}\n  \
             ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: gone, \
             uid: 00000000-0000-0000-0000-000000000000, controller: true}]\n\
             spec: {nodeName: node-0, containers: [{name: c, image: busybox}]}\n",
        )
        .await;
    cluster
        .apply(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: orphan}\n\
             spec: {maxUnavailable: 1, selector: {matchLabels: {app: orphan}}}\n",
        )
        .await;
    let kind = wait_event(
        &cluster,
        "PodDisruptionBudget",
        "orphan",
        "CalculateExpectedPodCountFailed",
        "Failed to calculate the number of expected pods: found no controllers for pod \"orphan\"",
    )
    .await;
    assert_eq!(kind, "Warning");
}

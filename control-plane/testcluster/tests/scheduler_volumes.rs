//! The scheduler's volume filters against the real API server and hollow nodes: VolumeBinding
//! (missing, deleting and unbound immediate claims; local volumes' node affinity;
//! WaitForFirstConsumer claims bound to a matching volume or annotated for provisioning),
//! VolumeRestrictions (ReadWriteOncePod, with preemption) and the retries driven by claim,
//! volume and node events. Messages are upstream's, read from the pod's FailedScheduling event.
//! The controllers are off: nothing here needs them.

use std::time::Duration;

use capstan_hollow::NodeSpec;
use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const NOT_HELPFUL: &str =
    "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";

async fn cluster() -> TestCluster {
    TestCluster::with(ClusterOptions {
        nodes: 3,
        controllers: vec![],
        ..ClusterOptions::default()
    })
    .await
}

/// A pod using the claims `claims` (volume `v<i>` per claim), with `extra` spec fields.
fn pod(name: &str, claims: &[&str], extra: &str) -> String {
    let volumes: Vec<String> = claims
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{{name: v{i}, persistentVolumeClaim: {{claimName: {c}}}}}"))
        .collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: busybox}}]\n  volumes: [{}]\n{extra}",
        volumes.join(", ")
    )
}

/// A claim of `size` with `extra` spec fields (class, volumeName, access modes: ReadWriteOnce
/// unless `extra` names them).
fn claim(name: &str, size: &str, extra: &str) -> String {
    let modes = if extra.contains("accessModes") {
        ""
    } else {
        "  accessModes: [ReadWriteOnce]\n"
    };
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  resources: {{requests: {{storage: {size}}}}}\n{modes}{extra}"
    )
}

/// A hostPath volume of `size` with `extra` spec fields (class, nodeAffinity, claimRef).
fn volume(name: &str, size: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  capacity: {{storage: {size}}}\n  accessModes: [ReadWriteOnce]\n  hostPath: {{path: /tmp/{name}}}\n{extra}"
    )
}

fn hostname_affinity(node: &str) -> String {
    format!(
        "  nodeAffinity: {{required: {{nodeSelectorTerms: [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{node}]}}]}}]}}}}\n"
    )
}

/// The notes of the pod's FailedScheduling events.
async fn failures(cluster: &TestCluster, pod: &str) -> Vec<String> {
    let events: Api<Event> = cluster.api("default");
    let Ok(list) = events.list(&ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("FailedScheduling")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
        })
        .filter_map(|e| e.note)
        .collect()
}

/// Waits for a FailedScheduling event about `pod` with exactly `message`.
async fn failed_with(cluster: &TestCluster, pod: &str, message: &str) {
    eventually(WAIT, &format!("{pod}: {message}"), || async {
        failures(cluster, pod)
            .await
            .iter()
            .any(|n| n == message)
            .then_some(())
    })
    .await;
}

async fn node_of(pods: &Api<Pod>, name: &str) -> String {
    eventually(WAIT, &format!("{name} bound"), || async {
        pods.get(name).await.ok()?.spec?.node_name
    })
    .await
}

async fn is_pending(pods: &Api<Pod>, name: &str) -> bool {
    match pods.get(name).await {
        Ok(pod) => pod.spec.and_then(|s| s.node_name).is_none(),
        Err(error) => panic!("{name}: {error}"),
    }
}

/// A missing claim, then an unbound one without a class, then one being deleted; binding the
/// claim by hand to a local volume (an event, no timer) lets the pod on that volume's node.
#[tokio::test]
async fn missing_unbound_and_deleting_claims_then_a_local_volume() {
    let cluster = cluster().await;
    let pods: Api<Pod> = cluster.api("default");
    cluster.apply(&pod("app", &["data"], "")).await;
    failed_with(
        &cluster,
        "app",
        &format!(
            "0/3 nodes are available: persistentvolumeclaim \"data\" not found. {NOT_HELPFUL}"
        ),
    )
    .await;

    cluster.apply(&claim("data", "1Gi", "")).await;
    failed_with(
        &cluster,
        "app",
        &format!(
            "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. {NOT_HELPFUL}"
        ),
    )
    .await;
    assert!(is_pending(&pods, "app").await);

    cluster
        .apply(&volume("local-1", "1Gi", &hostname_affinity("node-1")))
        .await;
    let claims: Api<PersistentVolumeClaim> = cluster.api("default");
    if let Err(error) = claims
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"volumeName": "local-1"}})),
        )
        .await
    {
        panic!("bind data: {error}");
    }
    assert_eq!(node_of(&pods, "app").await, "node-1");

    // A claim on its way out keeps new pods away.
    cluster
        .apply(&claim("held", "1Gi", "").replace(
            "metadata: {name: held}",
            "metadata: {name: held, finalizers: [capstan.dev/test-hold]}",
        ))
        .await;
    if let Err(error) = claims.delete("held", &DeleteParams::default()).await {
        panic!("delete held: {error}");
    }
    cluster.apply(&pod("late", &["held"], "")).await;
    failed_with(
        &cluster,
        "late",
        &format!(
            "0/3 nodes are available: persistentvolumeclaim \"held\" is being deleted. {NOT_HELPFUL}"
        ),
    )
    .await;
    if let Err(error) = claims
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
    {
        panic!("release held: {error}");
    }
}

/// A bound volume whose node affinity matches no node fails every node with upstream's
/// reason; a node added with the label takes the pod.
#[tokio::test]
async fn volume_node_affinity_conflict_until_a_matching_node_comes() {
    let mut cluster = cluster().await;
    let pods: Api<Pod> = cluster.api("default");
    cluster
        .apply(&volume(
            "ssd-0",
            "1Gi",
            "  nodeAffinity: {required: {nodeSelectorTerms: [{matchExpressions: [{key: disk, operator: In, values: [ssd]}]}]}}\n",
        ))
        .await;
    cluster
        .apply(&claim("fast", "1Gi", "  volumeName: ssd-0\n"))
        .await;
    cluster.apply(&pod("db", &["fast"], "")).await;
    failed_with(
        &cluster,
        "db",
        &format!(
            "0/3 nodes are available: 3 node(s) had volume node affinity conflict. {NOT_HELPFUL}"
        ),
    )
    .await;
    let node = NodeSpec {
        name: "ssd-node".into(),
        labels: [("disk".to_string(), "ssd".to_string())].into(),
        ..NodeSpec::default()
    };
    if let Err(error) = cluster.nodes.add(node).await {
        panic!("{error}");
    }
    assert_eq!(node_of(&pods, "db").await, "ssd-node");
}

/// WaitForFirstConsumer: a claim is bound at PreBind to the smallest available local volume
/// that fits (its node, the only one with volumes, chosen for the pod); a claim no volume fits, of a class that cannot
/// provision, finds none; a claim of a provisioning class is annotated with the chosen node
/// and the pod bound there once the provisioner (the test) has bound the claim.
#[tokio::test]
async fn wait_for_first_consumer_static_binding_and_provisioning() {
    let cluster = cluster().await;
    let pods: Api<Pod> = cluster.api("default");
    let claims: Api<PersistentVolumeClaim> = cluster.api("default");
    let volumes: Api<PersistentVolume> = Api::all(cluster.client.clone());
    cluster
        .apply(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: local}\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: WaitForFirstConsumer\n---\napiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast}\nprovisioner: example.com/fast\nvolumeBindingMode: WaitForFirstConsumer\n",
        )
        .await;
    let class = "  storageClassName: local\n";
    cluster
        .apply(&volume(
            "big-2",
            "10Gi",
            &format!("{class}{}", hostname_affinity("node-2")),
        ))
        .await;
    cluster
        .apply(&volume(
            "small-2",
            "2Gi",
            &format!("{class}{}", hostname_affinity("node-2")),
        ))
        .await;
    cluster
        .apply(&claim(
            "local-data",
            "1Gi",
            &format!("{class}  accessModes: [ReadWriteOnce]\n"),
        ))
        .await;
    cluster.apply(&pod("local-app", &["local-data"], "")).await;
    assert_eq!(node_of(&pods, "local-app").await, "node-2");
    let bound = match claims.get("local-data").await {
        Ok(claim) => claim,
        Err(error) => panic!("{error}"),
    };
    assert_eq!(
        bound.spec.and_then(|s| s.volume_name).as_deref(),
        Some("small-2")
    );
    let pv = match volumes.get("small-2").await {
        Ok(pv) => pv,
        Err(error) => panic!("{error}"),
    };
    let reference = pv.spec.and_then(|s| s.claim_ref).unwrap_or_default();
    assert_eq!(
        (reference.namespace.as_deref(), reference.name.as_deref()),
        (Some("default"), Some("local-data"))
    );

    cluster
        .apply(&claim(
            "huge",
            "50Gi",
            &format!("{class}  accessModes: [ReadWriteOnce]\n"),
        ))
        .await;
    cluster.apply(&pod("huge-app", &["huge"], "")).await;
    failed_with(
        &cluster,
        "huge-app",
        &format!(
            "0/3 nodes are available: 3 node(s) didn't find available persistent volumes to bind. {NOT_HELPFUL}"
        ),
    )
    .await;

    cluster
        .apply(&claim(
            "dynamic",
            "1Gi",
            "  storageClassName: fast\n  accessModes: [ReadWriteOnce]\n",
        ))
        .await;
    cluster.apply(&pod("dynamic-app", &["dynamic"], "")).await;
    let selected = eventually(WAIT, "selected-node annotation", || async {
        claims
            .get("dynamic")
            .await
            .ok()?
            .metadata
            .annotations?
            .get("volume.kubernetes.io/selected-node")
            .cloned()
    })
    .await;
    // PreBind waits for the claim to be bound before the pod is.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(is_pending(&pods, "dynamic-app").await);
    cluster
        .apply(&volume(
            "pvc-dynamic",
            "1Gi",
            "  storageClassName: fast\n  claimRef: {namespace: default, name: dynamic}\n",
        ))
        .await;
    if let Err(error) = claims
        .patch(
            "dynamic",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"volumeName": "pvc-dynamic"}})),
        )
        .await
    {
        panic!("provision: {error}");
    }
    assert_eq!(node_of(&pods, "dynamic-app").await, selected);
}

/// A ReadWriteOncePod claim in use keeps a second pod of equal priority off every node; then a
/// higher-priority pod preempts the user (on the user's node: the only one with a victim) and
/// is bound once it is gone.
#[tokio::test]
async fn read_write_once_pod_conflict_and_preemption() {
    let cluster = cluster().await;
    let pods: Api<Pod> = cluster.api("default");
    cluster
        .apply(
            "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n",
        )
        .await;
    cluster
        .apply(&volume("once-pv", "1Gi", "").replace("[ReadWriteOnce]", "[ReadWriteOncePod]"))
        .await;
    cluster
        .apply(&claim(
            "once",
            "1Gi",
            "  volumeName: once-pv\n  accessModes: [ReadWriteOncePod]\n",
        ))
        .await;
    cluster.apply(&pod("first", &["once"], "")).await;
    let first_node = node_of(&pods, "first").await;
    cluster.apply(&pod("second", &["once"], "")).await;
    failed_with(
        &cluster,
        "second",
        "0/3 nodes are available: 3 node has pod using PersistentVolumeClaim with the same name \
         and ReadWriteOncePod access mode. preemption: 0/3 nodes are available: 3 No preemption \
         victims found for incoming pod.",
    )
    .await;
    // Left pending, it could take the claim on another node the moment the user is gone.
    if let Err(error) = pods.delete("second", &DeleteParams::default()).await {
        panic!("delete second: {error}");
    }
    cluster
        .apply(&pod("urgent", &["once"], "  priorityClassName: high\n"))
        .await;
    node_of(&pods, "urgent").await;
    assert!(matches!(pods.get_opt("first").await, Ok(None)));
    let events: Api<Event> = cluster.api("default");
    let preempted: Vec<String> = match events.list(&ListParams::default()).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some("Preempted")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("first")
            })
            .filter_map(|e| e.note)
            .collect(),
        Err(error) => panic!("{error}"),
    };
    assert!(
        preempted.len() == 1 && preempted[0].ends_with(&format!(" on node {first_node}")),
        "{preempted:?}"
    );
}

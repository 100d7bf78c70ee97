//! The scheduler against the real API server and hollow nodes: spreading by LeastAllocated
//! without overcommitting under a burst, upstream's failure message in the pod's condition and
//! in `kubectl describe`, retries driven by a node being added, `schedulerName`, taints and
//! tolerations, node and pod (anti-)affinity, and preemption's choice of victim.
//! The controllers are off: nothing here needs them.

use std::collections::BTreeMap;
use std::time::Duration;

use capstan_hollow::NodeSpec;
use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

async fn cluster(nodes: usize, node: NodeSpec) -> TestCluster {
    TestCluster::with(ClusterOptions {
        nodes,
        node,
        controllers: vec![],
        ..ClusterOptions::default()
    })
    .await
}

fn pod(name: &str, cpu: &str, extra: Value) -> Pod {
    let mut value = json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
                  "resources": {"requests": {"cpu": cpu}}}]},
    });
    merge(&mut value, extra);
    match serde_json::from_value(value) {
        Ok(pod) => pod,
        Err(error) => panic!("pod {name}: {error}"),
    }
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (k, v) in extra {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, extra) => *base = extra,
    }
}

async fn create(pods: &Api<Pod>, pod: Pod) {
    if let Err(error) = pods.create(&PostParams::default(), &pod).await {
        panic!("create {:?}: {error}", pod.metadata.name);
    }
}

async fn node_of(pods: &Api<Pod>, name: &str) -> String {
    eventually(WAIT, &format!("{name} bound"), || async {
        pods.get(name).await.ok()?.spec?.node_name
    })
    .await
}

/// The message of the pod's PodScheduled=False condition, once it has one.
async fn unschedulable_message(pods: &Api<Pod>, name: &str) -> String {
    eventually(WAIT, &format!("{name} unschedulable"), || async {
        let pod = pods.get(name).await.ok()?;
        let condition = pod
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
        assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
        condition.message
    })
    .await
}

fn spec(name: &str, cpu: &str) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        cpu: cpu.into(),
        ..NodeSpec::default()
    }
}

/// A burst of 13 one-CPU pods on three 4-CPU nodes: LeastAllocated spreads them four per
/// node, never five (assumed pods count at once), and the thirteenth gets upstream's message.
#[tokio::test]
async fn burst_spreads_without_overcommit_and_the_rest_is_unschedulable() {
    let cluster = cluster(3, NodeSpec::default()).await;
    let pods: Api<Pod> = cluster.api("default");
    // Two first, one after the other: they must land on different nodes.
    create(&pods, pod("first", "1", json!({}))).await;
    let first = node_of(&pods, "first").await;
    create(&pods, pod("second", "1", json!({}))).await;
    let second = node_of(&pods, "second").await;
    assert_ne!(
        first, second,
        "LeastAllocated puts the second pod on an empty node"
    );

    let mut creates = Vec::new();
    for i in 0..11 {
        let pods = pods.clone();
        creates.push(tokio::spawn(async move {
            create(&pods, pod(&format!("burst-{i}"), "1", json!({}))).await
        }));
    }
    for create in creates {
        if let Err(error) = create.await {
            panic!("{error}");
        }
    }
    let message = eventually(WAIT, "12 bound and one unschedulable", || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let bound = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        if bound != 12 {
            return None;
        }
        let pending = list
            .items
            .iter()
            .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())?;
        let name = pending.metadata.name.clone()?;
        Some(unschedulable_message(&pods, &name).await)
    })
    .await;
    assert_eq!(
        message,
        "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: \
         3 No preemption victims found for incoming pod."
    );
    let list = match pods.list(&ListParams::default()).await {
        Ok(list) => list,
        Err(error) => panic!("{error}"),
    };
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &list.items {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *per_node.entry(node).or_default() += 1;
        }
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [4, 4, 4],
        "{per_node:?}"
    );
}

/// Upstream's example message, exactly, in the condition and in `kubectl describe pod`; the
/// pod is scheduled when a fitting node is added, with no timer (well within the back-off
/// cap and the 5-minute flush), and `describe` shows the `Scheduled` event.
#[tokio::test]
async fn failure_message_describe_and_retry_on_node_add() {
    let mut cluster = cluster(0, NodeSpec::default()).await;
    let not_ready = || k8s_openapi::api::core::v1::Taint {
        key: "node.kubernetes.io/not-ready".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    for (name, cpu, taints) in [
        ("small", "1", vec![]),
        ("tainted-0", "8", vec![not_ready()]),
        ("tainted-1", "8", vec![not_ready()]),
    ] {
        let node = NodeSpec {
            taints,
            ..spec(name, cpu)
        };
        if let Err(error) = cluster.nodes.add(node).await {
            panic!("{error}");
        }
    }
    let pods: Api<Pod> = cluster.api("default");
    create(&pods, pod("big", "2", json!({}))).await;
    let expected = "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint \
                    {node.kubernetes.io/not-ready: }. preemption: 0/3 nodes are available: 3 \
                    Preemption is not helpful for scheduling.";
    let message = eventually(WAIT, "the full message", || async {
        let message = unschedulable_message(&pods, "big").await;
        // Until all three nodes have posted their status the count differs.
        (message == expected).then_some(message)
    })
    .await;
    assert_eq!(message, expected);
    let described = eventually(WAIT, "FailedScheduling in describe", || async {
        let out = cluster.kubectl(&["describe", "pod", "big"]).await;
        (out.stdout.contains("FailedScheduling") && out.stdout.contains(expected))
            .then_some(out.stdout)
    })
    .await;
    assert!(described.contains("Warning"), "{described}");
    assert!(described.contains("default-scheduler"), "{described}");

    if let Err(error) = cluster.nodes.add(spec("large", "4")).await {
        panic!("{error}");
    }
    let started = std::time::Instant::now();
    assert_eq!(node_of(&pods, "big").await, "large");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    let described = eventually(WAIT, "Scheduled in describe", || async {
        let out = cluster.kubectl(&["describe", "pod", "big"]).await;
        out.stdout
            .contains("Successfully assigned default/big to large")
            .then_some(out.stdout)
    })
    .await;
    assert!(described.contains("Scheduled"), "{described}");
}

/// Pods naming another scheduler are left alone; the default scheduler's are bound.
#[tokio::test]
async fn other_scheduler_names_are_left_alone() {
    let cluster = cluster(1, NodeSpec::default()).await;
    let pods: Api<Pod> = cluster.api("default");
    create(
        &pods,
        pod(
            "other",
            "100m",
            json!({"spec": {"schedulerName": "my-scheduler"}}),
        ),
    )
    .await;
    create(&pods, pod("mine", "100m", json!({}))).await;
    node_of(&pods, "mine").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let other = match pods.get("other").await {
        Ok(pod) => pod,
        Err(error) => panic!("{error}"),
    };
    assert!(other.spec.and_then(|s| s.node_name).is_none());
    let conditions = other.status.and_then(|s| s.conditions).unwrap_or_default();
    assert!(
        conditions.iter().all(|c| c.type_ != "PodScheduled"),
        "{conditions:?}"
    );
}

/// NoSchedule taints keep untolerating pods off; a toleration and a required node affinity
/// put a pod on the tainted node; a nodeSelector nobody matches gives upstream's reason.
#[tokio::test]
async fn taints_tolerations_and_node_affinity() {
    let mut cluster = cluster(0, NodeSpec::default()).await;
    let gpu = NodeSpec {
        labels: BTreeMap::from([("pool".to_string(), "gpu".to_string())]),
        taints: vec![k8s_openapi::api::core::v1::Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        }],
        ..spec("gpu-0", "4")
    };
    for node in [gpu, spec("plain-0", "4")] {
        if let Err(error) = cluster.nodes.add(node).await {
            panic!("{error}");
        }
    }
    let pods: Api<Pod> = cluster.api("default");
    for i in 0..3 {
        create(&pods, pod(&format!("plain-{i}"), "100m", json!({}))).await;
    }
    create(
        &pods,
        pod(
            "gpu-job",
            "100m",
            json!({"spec": {
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]}}},
            }}),
        ),
    )
    .await;
    for i in 0..3 {
        assert_eq!(node_of(&pods, &format!("plain-{i}")).await, "plain-0");
    }
    assert_eq!(node_of(&pods, "gpu-job").await, "gpu-0");
    create(
        &pods,
        pod(
            "nowhere",
            "100m",
            json!({"spec": {"nodeSelector": {"pool": "tpu"}}}),
        ),
    )
    .await;
    assert_eq!(
        unschedulable_message(&pods, "nowhere").await,
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) \
         had untolerated taint {dedicated: gpu}. preemption: 0/2 nodes are available: 2 \
         Preemption is not helpful for scheduling."
    );
}

/// Required anti-affinity on the hostname puts one replica per node; a fourth cannot go
/// anywhere; an existing pod's anti-affinity keeps a matching newcomer away (symmetry); a pod
/// with required affinity waits for its peer and then joins its node.
#[tokio::test]
async fn pod_affinity_and_anti_affinity() {
    let cluster = cluster(3, NodeSpec::default()).await;
    let pods: Api<Pod> = cluster.api("default");
    let anti = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"app": "web"}},
            "topologyKey": "kubernetes.io/hostname"}]}}}});
    let mut nodes = Vec::new();
    for i in 0..3 {
        create(&pods, pod(&format!("web-{i}"), "100m", anti.clone())).await;
        nodes.push(node_of(&pods, &format!("web-{i}")).await);
    }
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    // The existing pods' terms are checked first, as upstream.
    create(&pods, pod("web-3", "100m", anti)).await;
    assert_eq!(
        unschedulable_message(&pods, "web-3").await,
        "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    // A pod whose own anti-affinity selects the running replicas (which select nothing).
    create(
        &pods,
        pod(
            "loner",
            "100m",
            json!({"spec": {"affinity": {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"app": "web"}},
                    "topologyKey": "kubernetes.io/hostname"}]}}}}),
        ),
    )
    .await;
    assert_eq!(
        unschedulable_message(&pods, "loner").await,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: \
         0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    // A pod labelled app=web without terms of its own is kept off by the others' terms.
    create(
        &pods,
        pod(
            "plain-web",
            "100m",
            json!({"metadata": {"labels": {"app": "web"}}}),
        ),
    )
    .await;
    assert_eq!(
        unschedulable_message(&pods, "plain-web").await,
        "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    // Required affinity to a pod that does not exist yet: unresolvable until it is placed,
    // then the sidekick follows it to its node (retried on the pod's assignment).
    create(
        &pods,
        pod(
            "sidekick",
            "100m",
            json!({"spec": {"affinity": {"podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"app": "anchor"}},
                    "topologyKey": "kubernetes.io/hostname"}]}}}}),
        ),
    )
    .await;
    assert_eq!(
        unschedulable_message(&pods, "sidekick").await,
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. preemption: 0/3 \
         nodes are available: 3 Preemption is not helpful for scheduling."
    );
    create(&pods, pod("anchor", "100m", json!({}))).await;
    let anchor = node_of(&pods, "anchor").await;
    assert_eq!(node_of(&pods, "sidekick").await, anchor);
}

/// Preemption evicts the lowest-priority pod, on the node where the victims rank lowest, sets
/// the preemptor's nominatedNodeName, and the preemptor is bound there once the victim is gone.
#[tokio::test]
async fn preemption_picks_the_upstream_victim() {
    let cluster = cluster(2, spec("unused", "1")).await;
    for (name, value) in [("low", 100), ("mid", 200), ("high", 1000)] {
        cluster
            .apply(&format!(
                "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: {name}\nvalue: {value}\n"
            ))
            .await;
    }
    let pods: Api<Pod> = cluster.api("default");
    create(
        &pods,
        pod(
            "mid-pod",
            "1",
            json!({"spec": {"priorityClassName": "mid", "nodeName": "node-0"}}),
        ),
    )
    .await;
    create(
        &pods,
        pod(
            "low-pod",
            "1",
            json!({"spec": {"priorityClassName": "low", "nodeName": "node-1"}}),
        ),
    )
    .await;
    create(
        &pods,
        pod(
            "high-pod",
            "1",
            json!({"spec": {"priorityClassName": "high"}}),
        ),
    )
    .await;
    let nominated = eventually(WAIT, "nominatedNodeName", || async {
        let pod = pods.get("high-pod").await.ok()?;
        let status = pod.status?;
        status
            .nominated_node_name
            .or_else(|| pod.spec.and_then(|s| s.node_name))
    })
    .await;
    assert_eq!(nominated, "node-1");
    assert_eq!(node_of(&pods, "high-pod").await, "node-1");
    assert!(matches!(pods.get_opt("low-pod").await, Ok(None)));
    let mid = match pods.get("mid-pod").await {
        Ok(pod) => pod,
        Err(error) => panic!("{error}"),
    };
    assert!(mid.metadata.deletion_timestamp.is_none());
    let out = cluster
        .kubectl_ok(&["get", "events", "--field-selector", "reason=Preempted"])
        .await;
    assert!(out.contains("low-pod"), "{out}");
}

//! The disruption controller and the eviction subresource against the real API server, with
//! hollow nodes and pods bound directly with `spec.nodeName` (no scheduler; the ReplicaSet
//! whose scale a percentage needs is written by the test, with no controller behind it).

use std::time::Duration;

use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(15);

async fn cluster() -> TestCluster {
    TestCluster::with(ClusterOptions {
        nodes: 1,
        scheduler: false,
        controllers: vec!["disruption".into()],
        ..ClusterOptions::default()
    })
    .await
}

async fn create_pod(cluster: &TestCluster, name: &str, owner: Option<Value>) {
    let mut value = json!({
        "metadata": {"name": name, "labels": {"app": "db"}},
        "spec": {"nodeName": "node-0", "containers": [{"name": "c", "image": "postgres"}]},
    });
    if let Some(owner) = owner {
        value["metadata"]["ownerReferences"] = json!([owner]);
    }
    let pod: Pod = match serde_json::from_value(value) {
        Ok(pod) => pod,
        Err(error) => panic!("pod: {error}"),
    };
    let pods: Api<Pod> = cluster.api("default");
    if let Err(error) = pods.create(&PostParams::default(), &pod).await {
        panic!("create {name}: {error}");
    }
}

async fn wait_ready(cluster: &TestCluster, names: &[&str]) {
    let pods: Api<Pod> = cluster.api("default");
    for name in names {
        eventually(WAIT, &format!("{name} Ready"), || async {
            let pod = pods.get(name).await.ok()?;
            let ready = pod
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(())
        })
        .await;
    }
}

/// POSTs an Eviction for `pod` over plain HTTP (kube's client retries 429 itself), giving
/// the status code and body.
async fn evict(cluster: &TestCluster, pod: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = cluster.url.trim_start_matches("http://").to_string();
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                      "metadata": {"name": pod, "namespace": "default"}})
    .to_string();
    let request = format!(
        "POST /api/v1/namespaces/default/pods/{pod}/eviction HTTP/1.1\r\nHost: {address}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = match tokio::net::TcpStream::connect(&address).await {
        Ok(stream) => stream,
        Err(error) => panic!("connect: {error}"),
    };
    if let Err(error) = stream.write_all(request.as_bytes()).await {
        panic!("send: {error}");
    }
    let mut response = Vec::new();
    if let Err(error) = stream.read_to_end(&mut response).await {
        panic!("read: {error}");
    }
    let text = String::from_utf8_lossy(&response).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json_start = text.find('{').unwrap_or(text.len());
    let json_end = text.rfind('}').map_or(text.len(), |i| i + 1);
    let body =
        serde_json::from_str(&text[json_start..json_end.max(json_start)]).unwrap_or(Value::Null);
    (code, body)
}

/// The budget's status as JSON once `check` holds.
async fn status_when(
    cluster: &TestCluster,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let budgets: Api<PodDisruptionBudget> = cluster.api("default");
    eventually(WAIT, what, || async {
        let pdb = budgets.get(name).await.ok()?;
        let status = serde_json::to_value(pdb.status?).ok()?;
        check(&status).then_some(status)
    })
    .await
}

fn condition(status: &Value) -> (String, String) {
    let found = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "DisruptionAllowed")
        .cloned()
        .unwrap_or_default();
    (
        found["status"].as_str().unwrap_or("").into(),
        found["reason"].as_str().unwrap_or("").into(),
    )
}

/// minAvailable 2 over 3 ready pods allows one disruption: the first eviction is accepted
/// (201), the second refused with 429 and upstream's message
/// and cause; the status follows, disruptedPods is cleaned once the pod is gone, and
/// `kubectl drain` is refused too.
#[tokio::test]
async fn min_available_budget_allows_one_eviction() {
    let cluster = cluster().await;
    for name in ["db-0", "db-1", "db-2"] {
        create_pod(&cluster, name, None).await;
    }
    wait_ready(&cluster, &["db-0", "db-1", "db-2"]).await;
    cluster
        .apply(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: db}\n\
             spec: {minAvailable: 2, selector: {matchLabels: {app: db}}}\n",
        )
        .await;
    let status = status_when(&cluster, "db", "one disruption allowed", |s| {
        s["disruptionsAllowed"] == 1
    })
    .await;
    assert_eq!(status["currentHealthy"], 3);
    assert_eq!(status["desiredHealthy"], 2);
    assert_eq!(status["expectedPods"], 3);
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(condition(&status), ("True".into(), "SufficientPods".into()));

    let pods: Api<Pod> = cluster.api("default");
    let (code, body) = evict(&cluster, "db-0").await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = evict(&cluster, "db-1").await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(
        body["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(body["reason"], "TooManyRequests");
    let causes = body["details"]["causes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        causes.iter().any(|c| c["reason"] == "DisruptionBudget"
            && c["message"].as_str().is_some_and(
                |m| m.starts_with("The disruption budget db needs 2 healthy pods and has ")
            )),
        "{body}"
    );

    let status = status_when(&cluster, "db", "the budget exhausted", |s| {
        s["disruptionsAllowed"] == 0 && s["currentHealthy"] == 2
    })
    .await;
    assert_eq!(
        condition(&status),
        ("False".into(), "InsufficientPods".into())
    );
    // Once db-0 is gone it leaves disruptedPods.
    status_when(&cluster, "db", "disruptedPods cleaned", |s| {
        s.get("disruptedPods")
            .is_none_or(|d| d.get("db-0").is_none())
    })
    .await;
    assert!(matches!(pods.get_opt("db-0").await, Ok(None)));

    let out = cluster
        .kubectl(&[
            "drain",
            "node-0",
            "--ignore-daemonsets",
            "--pod-selector=app=db",
            "--force",
            "--timeout=3s",
        ])
        .await;
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(!out.success, "{text}");
    assert!(
        text.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{text}"
    );
    assert!(pods.get_opt("db-1").await.ok().flatten().is_some());
}

/// maxUnavailable 50% is scaled from the owning ReplicaSet's spec.replicas (4, of which 3
/// pods exist): desiredHealthy 2, one disruption; a pod whose controller is missing makes
/// the sync fail safe with SyncFailed and no disruptions.
#[tokio::test]
async fn percentages_use_the_controllers_scale() {
    let cluster = cluster().await;
    cluster
        .apply(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: db}\n\
             spec:\n  replicas: 4\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: c, image: postgres}]}\n",
        )
        .await;
    let rs = cluster
        .kubectl_ok(&["get", "rs", "db", "-o", "jsonpath={.metadata.uid}"])
        .await;
    let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "db",
                       "uid": rs.trim(), "controller": true});
    for name in ["db-0", "db-1", "db-2"] {
        create_pod(&cluster, name, Some(owner.clone())).await;
    }
    wait_ready(&cluster, &["db-0", "db-1", "db-2"]).await;
    cluster
        .apply(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: db}\n\
             spec: {maxUnavailable: \"50%\", selector: {matchLabels: {app: db}}}\n",
        )
        .await;
    let status = status_when(&cluster, "db", "the scaled budget", |s| {
        s["expectedPods"] == 4
    })
    .await;
    assert_eq!(status["desiredHealthy"], 2);
    assert_eq!(status["currentHealthy"], 3);
    assert_eq!(status["disruptionsAllowed"], 1);

    let orphan = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "gone",
                        "uid": "00000000-0000-0000-0000-000000000000", "controller": true});
    create_pod(&cluster, "db-3", Some(orphan)).await;
    let status = status_when(&cluster, "db", "the sync failing safe", |s| {
        condition(s).1 == "SyncFailed"
    })
    .await;
    assert_eq!(status["disruptionsAllowed"], 0);
    let message = status["conditions"][0]["message"].as_str().unwrap_or("");
    assert_eq!(message, "found no controllers for pod \"db-3\"");
}

async fn create_unready_pod(cluster: &TestCluster, name: &str) {
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: db}}\n  \
             annotations: {{hollow.capstan.dev/ready: \"false\"}}\n\
             spec: {{nodeName: node-0, containers: [{{name: c, image: postgres}}]}}\n"
        ))
        .await;
}

async fn wait_running(cluster: &TestCluster, name: &str) {
    let pods: Api<Pod> = cluster.api("default");
    eventually(WAIT, &format!("{name} Running"), || async {
        let phase = pods.get(name).await.ok()?.status?.phase?;
        (phase == "Running").then_some(())
    })
    .await;
}

/// `unhealthyPodEvictionPolicy`: a Running pod that is not Ready may be evicted without taking
/// a disruption while the budget has its healthy pods (IfHealthyBudget, the default), or
/// always (AlwaysAllow); Ready pods are still guarded.
#[tokio::test]
async fn unhealthy_pod_eviction_policy() {
    let cluster = cluster().await;
    for name in ["db-0", "db-1"] {
        create_pod(&cluster, name, None).await;
    }
    for name in ["db-2", "db-3", "db-4"] {
        create_unready_pod(&cluster, name).await;
    }
    wait_ready(&cluster, &["db-0", "db-1"]).await;
    for name in ["db-2", "db-3", "db-4"] {
        wait_running(&cluster, name).await;
    }
    // Two healthy of three wanted: the budget is not healthy.
    cluster
        .apply(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: db}\n\
             spec: {minAvailable: 3, selector: {matchLabels: {app: db}}}\n",
        )
        .await;
    status_when(&cluster, "db", "the unhealthy budget", |s| {
        s["currentHealthy"] == 2 && s["desiredHealthy"] == 3 && s["observedGeneration"] == 1
    })
    .await;
    let (code, body) = evict(&cluster, "db-2").await;
    assert_eq!(
        code, 429,
        "IfHealthyBudget with an unhealthy budget: {body}"
    );
    assert_eq!(
        body["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );

    cluster
        .apply(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: db}\n\
             spec: {minAvailable: 3, unhealthyPodEvictionPolicy: AlwaysAllow, selector: {matchLabels: {app: db}}}\n",
        )
        .await;
    status_when(&cluster, "db", "generation 2 observed", |s| {
        s["observedGeneration"] == 2
    })
    .await;
    let (code, body) = evict(&cluster, "db-2").await;
    assert_eq!(code, 201, "AlwaysAllow lets the unready pod go: {body}");
    let (code, body) = evict(&cluster, "db-0").await;
    assert_eq!(code, 429, "a Ready pod is still guarded: {body}");

    // Two healthy of two wanted: a healthy budget lets unready pods go by default, and the
    // eviction takes no disruption (nor lands in disruptedPods).
    cluster
        .apply(
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: db}\n\
             spec: {minAvailable: 2, unhealthyPodEvictionPolicy: IfHealthyBudget, selector: {matchLabels: {app: db}}}\n",
        )
        .await;
    status_when(&cluster, "db", "the healthy budget", |s| {
        s["observedGeneration"] == 3 && s["currentHealthy"] == 2 && s["desiredHealthy"] == 2
    })
    .await;
    let (code, body) = evict(&cluster, "db-3").await;
    assert_eq!(code, 201, "IfHealthyBudget with a healthy budget: {body}");
    let budgets: Api<PodDisruptionBudget> = cluster.api("default");
    let pdb = match budgets.get("db").await {
        Ok(pdb) => pdb,
        Err(error) => panic!("get db: {error}"),
    };
    let disrupted = pdb
        .status
        .and_then(|s| s.disrupted_pods)
        .unwrap_or_default();
    assert!(!disrupted.contains_key("db-3"), "{disrupted:?}");
    let (code, body) = evict(&cluster, "db-1").await;
    assert_eq!(code, 429, "{body}");
}

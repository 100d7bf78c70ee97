//! kube-rs (kube 5, k8s-openapi 0.29) typed clients on the subresources: a Deployment's
//! Scale, a Pod's eviction against a PodDisruptionBudget, logs' clear error, and the
//! events.k8s.io view of a core Event.

mod common;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::events::v1::Event as NewEvent;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn client(url: &str) -> kube::Client {
    let Ok(uri) = url.parse() else { panic!("url") };
    let mut config = kube::Config::new(uri);
    // The client's own retries of 429s would outlast the test.
    config.default_retry = false;
    match kube::Client::try_from(config) {
        Ok(client) => client,
        Err(error) => panic!("client: {error}"),
    }
}

fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    match serde_json::from_value(value) {
        Ok(typed) => typed,
        Err(error) => panic!("typed: {error}"),
    }
}

#[tokio::test]
async fn scale_eviction_logs_and_events_through_kube_rs() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let client = client(&url).await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = from(json!({"metadata": {"name": "web"}, "spec": {"replicas": 1,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}));
    if let Err(error) = deployments
        .create(&PostParams::default(), &deployment)
        .await
    {
        panic!("create: {error}");
    }
    let scale = match deployments.get_scale("web").await {
        Ok(scale) => scale,
        Err(error) => panic!("get_scale: {error}"),
    };
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(
        scale.status.and_then(|s| s.selector).as_deref(),
        Some("app=web")
    );
    let patch = Patch::Merge(json!({"spec": {"replicas": 4}}));
    let scaled = deployments
        .patch_scale("web", &PatchParams::default(), &patch)
        .await;
    let Ok(scaled) = scaled else {
        panic!("patch_scale: {scaled:?}")
    };
    assert_eq!(scaled.spec.and_then(|s| s.replicas), Some(4));
    let replicas = deployments
        .get("web")
        .await
        .ok()
        .and_then(|d| d.spec)
        .and_then(|s| s.replicas);
    assert_eq!(replicas, Some(4));

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = from(
        json!({"metadata": {"name": "p", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    );
    if let Err(error) = pods.create(&PostParams::default(), &pod).await {
        panic!("create pod: {error}");
    }
    // Running and Ready: healthy for the budget (an unready pod may go while it is healthy).
    let running = Patch::Merge(
        json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    if let Err(error) = pods
        .patch_status("p", &PatchParams::default(), &running)
        .await
    {
        panic!("status: {error}");
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let pdb: PodDisruptionBudget = from(
        json!({"metadata": {"name": "b"}, "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}}}),
    );
    if let Err(error) = pdbs.create(&PostParams::default(), &pdb).await {
        panic!("create pdb: {error}");
    }
    let budget = Patch::Merge(
        json!({"status": {"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}}),
    );
    if let Err(error) = pdbs
        .patch_status("b", &PatchParams::default(), &budget)
        .await
    {
        panic!("pdb status: {error}");
    }
    match pods.evict("p", &EvictParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 429);
            assert_eq!(status.reason, "TooManyRequests");
        }
        other => panic!("expected a 429, got {other:?}"),
    }
    match pods.logs("p", &LogParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 400);
            assert_eq!(status.message, "pod p does not have a host assigned");
        }
        other => panic!("expected a 400, got {other:?}"),
    }

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let event: Event = from(
        json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Evicted", "message": "gone", "type": "Warning"}),
    );
    if let Err(error) = events.create(&PostParams::default(), &event).await {
        panic!("create event: {error}");
    }
    let new_events: Api<NewEvent> = Api::namespaced(client, "default");
    let listed = new_events.list(&ListParams::default()).await;
    let Ok(listed) = listed else {
        panic!("list: {listed:?}")
    };
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].note.as_deref(), Some("gone"));
    assert_eq!(
        listed.items[0]
            .regarding
            .as_ref()
            .and_then(|r| r.name.as_deref()),
        Some("p")
    );
}

/// The python `kubernetes` client (PyPI, installed by hack/deps.sh test into a venv).
const PYTHON_CLIENT: &str = "/var/cache/capstan-py/bin/python";

#[tokio::test(flavor = "multi_thread")]
async fn the_python_client_uses_the_subresources() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/surface_check.py");
    let output = tokio::process::Command::new(PYTHON_CLIENT)
        .arg(&script)
        .arg(&url)
        .kill_on_drop(true)
        .output()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(error) => panic!("{PYTHON_CLIENT}: {error} (hack/deps.sh test installs it)"),
    };
    assert!(
        output.status.success(),
        "the python client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    assert_eq!(seen["scale"], json!([3, "app=py"]));
    assert_eq!(
        seen["invalid"],
        json!([422, "spec.template.metadata.labels"])
    );
    assert_eq!(seen["node"], "n1");
    assert_eq!(
        seen["eviction"],
        json!([
            429,
            "Cannot evict pod as it would violate the pod's disruption budget."
        ])
    );
    assert_eq!(seen["log"][0], 400);
    assert!(
        seen["log"][1].as_str().is_some_and(|m| m
            .starts_with("the API server has no kubelet client credentials to reach node \"n1\"")),
        "{seen}"
    );
    assert_eq!(seen["events"], json!([["hello", "p"]]));
    assert_eq!(seen["service"], json!([true, true]));
}

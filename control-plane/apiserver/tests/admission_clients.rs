//! Admission seen by the other real clients: kube-rs (typed LimitRange, Pod and
//! ResourceQuota, the refusal as a typed `Status`) and the python kubernetes client.

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::{LimitRange, Namespace, Pod, ResourceQuota};
use kube::api::{Api, PostParams};
use serde_json::json;

async fn client(url: &str) -> kube::Client {
    let Ok(uri) = url.parse() else { panic!("url") };
    match kube::Client::try_from(kube::Config::new(uri)) {
        Ok(client) => client,
        Err(error) => panic!("client: {error}"),
    }
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    match serde_json::from_value(value) {
        Ok(object) => object,
        Err(error) => panic!("typed: {error}"),
    }
}

#[tokio::test]
async fn kube_rs_sees_defaults_quota_status_and_refusals() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let client = client(&url).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pp = PostParams::default();
    let created = namespaces
        .create(&pp, &typed(json!({"metadata": {"name": "kr"}})))
        .await;
    assert!(created.is_ok(), "{created:?}");
    let ranges: Api<LimitRange> = Api::namespaced(client.clone(), "kr");
    let range = json!({"metadata": {"name": "lr"}, "spec": {"limits": [
        {"type": "Container", "max": {"cpu": "1"}, "defaultRequest": {"cpu": "250m"}}]}});
    let created = ranges.create(&pp, &typed(range)).await;
    let Ok(created) = created else {
        panic!("limit range: {created:?}")
    };
    let item = &created.spec.map(|s| s.limits).unwrap_or_default()[0];
    assert_eq!(
        item.default
            .as_ref()
            .and_then(|d| d.get("cpu"))
            .map(|q| q.0.as_str()),
        Some("1"),
        "the default limit is the max"
    );

    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "kr");
    let quota = json!({"metadata": {"name": "cpu"}, "spec": {"hard": {"limits.cpu": "1500m"}}});
    assert!(quotas.create(&pp, &typed(quota)).await.is_ok());

    let pods: Api<Pod> = Api::namespaced(client.clone(), "kr");
    let pod = |name: &str| -> Pod {
        typed(
            json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        )
    };
    let made = pods.create(&pp, &pod("a")).await;
    let Ok(made) = made else {
        panic!("pod: {made:?}")
    };
    let resources = made
        .spec
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.resources)
        .unwrap_or_default();
    let cpu = |list: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >| { list.and_then(|l| l.get("cpu")).map(|q| q.0.clone()) };
    assert_eq!(cpu(resources.requests.as_ref()).as_deref(), Some("250m"));
    assert_eq!(cpu(resources.limits.as_ref()).as_deref(), Some("1"));

    match pods.create(&pp, &pod("b")).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
            assert_eq!(
                status.message,
                "pods \"b\" is forbidden: exceeded quota: cpu, requested: limits.cpu=1, used: limits.cpu=1, limited: limits.cpu=1500m"
            );
        }
        other => panic!("expected a quota refusal, got {other:?}"),
    }
    let mut used = None;
    for _ in 0..100 {
        let quota = quotas.get("cpu").await;
        used = quota
            .ok()
            .and_then(|q| q.status)
            .and_then(|s| s.used)
            .and_then(|u| u.get("limits.cpu").map(|q| q.0.clone()));
        if used.as_deref() == Some("1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(used.as_deref(), Some("1"));
}

/// The python `kubernetes` client (PyPI, installed by hack/deps.sh test into a venv).
const PYTHON_CLIENT: &str = "/var/cache/capstan-py/bin/python";

#[tokio::test]
async fn the_python_client_sees_defaults_quota_and_pod_security() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/admission_check.py");
    let out = tokio::process::Command::new(PYTHON_CLIENT)
        .arg(&script)
        .arg(&url)
        .kill_on_drop(true)
        .output()
        .await;
    let Ok(out) = out else {
        panic!("{PYTHON_CLIENT} (hack/deps.sh test installs it)")
    };
    assert!(
        out.status.success(),
        "the python client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(seen) => seen,
        Err(error) => panic!("{error}: {}", String::from_utf8_lossy(&out.stdout)),
    };
    assert_eq!(
        seen["defaults"],
        json!([{"cpu": "50m", "memory": "64Mi"}, {"memory": "64Mi"}])
    );
    assert_eq!(
        seen["quota"],
        json!([
            403,
            "Forbidden",
            "pods \"second\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1"
        ])
    );
    assert_eq!(seen["used"], json!({"pods": "1"}));
    assert_eq!(
        seen["podsecurity"],
        json!([
            403,
            "Forbidden",
            "pods \"host\" is forbidden: violates PodSecurity \"baseline:latest\": hostPort (container \"c\" uses hostPort 80)"
        ])
    );
}

//! ResourceQuota: usage counted up on create and down on delete, creates past the limit
//! refused with kube's message (kubectl 1.33 and 1.27 print it), compute quotas demanding
//! requests and limits, the kinds counted, scopes, and creates racing for the last slot.

mod admission_support;
mod common;

use std::time::Duration;

use admission_support::{KUBECTL_127, KUBECTL_133, fails, ok, parse};
use capstan_apiserver::ApiServer;
use serde_json::{Value, json};

fn pod(name: &str, resources: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}})
}

fn pod_yaml(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {resources}\n"
    )
}

/// Polls the quota until `status.used` is `want`.
async fn used_becomes(server: &ApiServer, namespace: &str, quota: &str, want: Value) {
    let uri = format!("/api/v1/namespaces/{namespace}/resourcequotas/{quota}");
    let mut last = Value::Null;
    for _ in 0..100 {
        let (_, q) = common::json(server, "GET", &uri, &Value::Null).await;
        last = q["status"].clone();
        if last["used"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("quota {quota} status is {last}, want used {want}");
}

async fn create(server: &ApiServer, namespace: &str, plural: &str, body: &Value) -> (u16, Value) {
    let uri = format!("/api/v1/namespaces/{namespace}/{plural}");
    common::json(server, "POST", &uri, body).await
}

async fn namespace(server: &ApiServer, name: &str) {
    let ns = json!({"metadata": {"name": name}});
    let (code, body) = common::json(server, "POST", "/api/v1/namespaces", &ns).await;
    assert_eq!(code, 201, "{body}");
}

async fn session(k: &str) {
    let (server, _) = common::server().await;
    let url = common::listen(server.clone()).await;
    let s = url.as_str();
    ok(k, s, &["create", "namespace", "q"], None).await;
    ok(
        k,
        s,
        &[
            "-n",
            "q",
            "create",
            "quota",
            "q",
            "--hard=pods=2,requests.cpu=2,limits.cpu=4",
        ],
        None,
    )
    .await;
    used_becomes(
        &server,
        "q",
        "q",
        json!({"limits.cpu": "0", "pods": "0", "requests.cpu": "0"}),
    )
    .await;
    let described = ok(k, s, &["-n", "q", "describe", "quota", "q"], None)
        .await
        .stdout;
    assert!(described.contains("requests.cpu  0     2"), "{described}");

    let err = fails(
        k,
        s,
        &["-n", "q", "create", "-f", "-"],
        Some(&pod_yaml("bare", "{requests: {cpu: 100m}}")),
    )
    .await;
    assert!(
        err.contains("Error from server (Forbidden): error when creating \"STDIN\": pods \"bare\" is forbidden: failed quota: q: must specify limits.cpu for: c"),
        "{err}"
    );
    ok(
        k,
        s,
        &["-n", "q", "create", "-f", "-"],
        Some(&pod_yaml(
            "a",
            "{requests: {cpu: \"1\"}, limits: {cpu: \"1\"}}",
        )),
    )
    .await;
    used_becomes(
        &server,
        "q",
        "q",
        json!({"limits.cpu": "1", "pods": "1", "requests.cpu": "1"}),
    )
    .await;
    let err = fails(
        k,
        s,
        &["-n", "q", "create", "-f", "-"],
        Some(&pod_yaml(
            "x",
            "{requests: {cpu: \"2\"}, limits: {cpu: \"2\"}}",
        )),
    )
    .await;
    assert!(
        err.contains("pods \"x\" is forbidden: exceeded quota: q, requested: requests.cpu=2, used: requests.cpu=1, limited: requests.cpu=2"),
        "{err}"
    );
    ok(k, s, &["-n", "q", "delete", "pod", "a"], None).await;
    used_becomes(
        &server,
        "q",
        "q",
        json!({"limits.cpu": "0", "pods": "0", "requests.cpu": "0"}),
    )
    .await;
    ok(
        k,
        s,
        &["-n", "q", "create", "-f", "-"],
        Some(&pod_yaml(
            "x",
            "{requests: {cpu: \"2\"}, limits: {cpu: \"2\"}}",
        )),
    )
    .await;
    let status = parse(
        &ok(k, s, &["-n", "q", "get", "quota", "q", "-o", "json"], None)
            .await
            .stdout,
    );
    assert_eq!(status["status"]["used"]["requests.cpu"], "2");
    assert_eq!(status["status"]["hard"]["limits.cpu"], "4");
}

#[tokio::test]
async fn quota_with_kubectl_1_33() {
    session(KUBECTL_133).await;
}

#[tokio::test]
async fn quota_with_kubectl_1_27() {
    session(KUBECTL_127).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creates_racing_for_the_last_slot_let_exactly_one_through() {
    let (server, _) = common::server().await;
    namespace(&server, "race").await;
    let quota = json!({"metadata": {"name": "one"}, "spec": {"hard": {"pods": "1"}}});
    let (code, body) = create(&server, "race", "resourcequotas", &quota).await;
    assert_eq!(code, 201, "{body}");
    let mut racers = Vec::new();
    for i in 0..8 {
        let server = server.clone();
        racers.push(tokio::spawn(async move {
            create(&server, "race", "pods", &pod(&format!("p{i}"), json!({}))).await
        }));
    }
    let mut passed = 0;
    for racer in racers {
        let Ok((code, body)) = racer.await else {
            panic!("a racer panicked")
        };
        match code {
            201 => passed += 1,
            403 => assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("is forbidden: exceeded quota: one, requested: pods=1, used: pods=1, limited: pods=1")),
                "{body}"
            ),
            _ => panic!("unexpected {code}: {body}"),
        }
    }
    assert_eq!(passed, 1, "exactly one create takes the last slot");
    used_becomes(&server, "race", "one", json!({"pods": "1"})).await;
}

#[tokio::test]
async fn object_counts_services_and_claims_are_charged() {
    let (server, _) = common::server().await;
    namespace(&server, "kinds").await;
    let hard = json!({
        "configmaps": "1", "count/deployments.apps": "0", "services.nodeports": "1",
        "services.loadbalancers": "0", "persistentvolumeclaims": "2", "requests.storage": "1Gi",
    });
    let quota = json!({"metadata": {"name": "k"}, "spec": {"hard": hard}});
    let (code, body) = create(&server, "kinds", "resourcequotas", &quota).await;
    assert_eq!(code, 201, "{body}");

    let cm = |name: &str| json!({"metadata": {"name": name}});
    assert_eq!(
        create(&server, "kinds", "configmaps", &cm("a")).await.0,
        201
    );
    let (code, body) = create(&server, "kinds", "configmaps", &cm("b")).await;
    assert_eq!(
        (code, body["message"].as_str()),
        (
            403,
            Some(
                "configmaps \"b\" is forbidden: exceeded quota: k, requested: configmaps=1, used: configmaps=1, limited: configmaps=1"
            )
        )
    );
    let deploy = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    let (code, body) = common::json(
        &server,
        "POST",
        "/apis/apps/v1/namespaces/kinds/deployments",
        &deploy,
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("requested: count/deployments.apps=1, used: count/deployments.apps=0, limited: count/deployments.apps=0")), "{body}");

    let svc = |name: &str, ty: &str| json!({"metadata": {"name": name}, "spec": {"type": ty, "ports": [{"port": 80}]}});
    assert_eq!(
        create(&server, "kinds", "services", &svc("np", "NodePort"))
            .await
            .0,
        201
    );
    let (code, body) = create(&server, "kinds", "services", &svc("np2", "NodePort")).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"].as_str().is_some_and(
            |m| m.contains("requested: services.nodeports=1, used: services.nodeports=1")
        ),
        "{body}"
    );
    let (code, body) = create(&server, "kinds", "services", &svc("lb", "LoadBalancer")).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("services.loadbalancers=1")),
        "{body}"
    );

    let claim = |name: &str, size: &str| json!({"metadata": {"name": name}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}});
    assert_eq!(
        create(
            &server,
            "kinds",
            "persistentvolumeclaims",
            &claim("c1", "600Mi")
        )
        .await
        .0,
        201
    );
    let (code, body) = create(
        &server,
        "kinds",
        "persistentvolumeclaims",
        &claim("c2", "600Mi"),
    )
    .await;
    assert_eq!(
        (code, body["message"].as_str()),
        (
            403,
            Some(
                "persistentvolumeclaims \"c2\" is forbidden: exceeded quota: k, requested: requests.storage=600Mi, used: requests.storage=600Mi, limited: requests.storage=1Gi"
            )
        )
    );
    // Growing a claim is charged too. Only a bound claim may grow (upstream's
    // ValidatePersistentVolumeClaimUpdate, which runs before quota admission), so bind it.
    let (code, body) = common::call(
        &server,
        "PATCH",
        "/api/v1/namespaces/kinds/persistentvolumeclaims/c1/status",
        "application/merge-patch+json",
        &json!({"status": {"phase": "Bound"}}).to_string(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let grow = json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}});
    let (code, body) = common::call(
        &server,
        "PATCH",
        "/api/v1/namespaces/kinds/persistentvolumeclaims/c1",
        "application/merge-patch+json",
        &grow.to_string(),
    )
    .await;
    assert_eq!(
        (code, body["message"].as_str()),
        (
            403,
            Some(
                "persistentvolumeclaims \"c1\" is forbidden: exceeded quota: k, requested: requests.storage=1448Mi, used: requests.storage=600Mi, limited: requests.storage=1Gi"
            )
        )
    );
    used_becomes(
        &server,
        "kinds",
        "k",
        json!({
            "configmaps": "1", "count/deployments.apps": "0", "persistentvolumeclaims": "1",
            "requests.storage": "600Mi", "services.loadbalancers": "0", "services.nodeports": "1",
        }),
    )
    .await;
    let (code, _) = common::call(
        &server,
        "DELETE",
        "/api/v1/namespaces/kinds/configmaps/a",
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 200);
    // Deletes are recounted after the fact, as kube's quota controller does.
    used_becomes(
        &server,
        "kinds",
        "k",
        json!({
            "configmaps": "0", "count/deployments.apps": "0", "persistentvolumeclaims": "1",
            "requests.storage": "600Mi", "services.loadbalancers": "0", "services.nodeports": "1",
        }),
    )
    .await;
    assert_eq!(
        create(&server, "kinds", "configmaps", &cm("b")).await.0,
        201,
        "the delete freed the slot"
    );
}

#[tokio::test]
async fn scoped_quotas_count_only_the_pods_they_select() {
    let (server, _) = common::server().await;
    namespace(&server, "sc").await;
    let quota = json!({"metadata": {"name": "be"}, "spec": {"hard": {"pods": "1"}, "scopes": ["BestEffort"]}});
    assert_eq!(create(&server, "sc", "resourcequotas", &quota).await.0, 201);
    assert_eq!(
        create(&server, "sc", "pods", &pod("b1", json!({}))).await.0,
        201
    );
    let (code, body) = create(&server, "sc", "pods", &pod("b2", json!({}))).await;
    assert_eq!(code, 403, "{body}");
    let burstable = pod("g1", json!({"requests": {"cpu": "100m"}}));
    assert_eq!(
        create(&server, "sc", "pods", &burstable).await.0,
        201,
        "not BestEffort: not counted"
    );
    used_becomes(&server, "sc", "be", json!({"pods": "1"})).await;
    // A pod that finished no longer counts: its status update is recounted.
    let done = json!({"status": {"phase": "Succeeded"}});
    let (code, body) = common::call(
        &server,
        "PATCH",
        "/api/v1/namespaces/sc/pods/b1/status",
        "application/merge-patch+json",
        &done.to_string(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    used_becomes(&server, "sc", "be", json!({"pods": "0"})).await;
    assert_eq!(
        create(&server, "sc", "pods", &pod("b2", json!({}))).await.0,
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_creates_fills_the_quota_exactly() {
    let (server, _) = common::server().await;
    namespace(&server, "burst").await;
    let quota = json!({"metadata": {"name": "many"}, "spec": {"hard": {"pods": "150"}}});
    assert_eq!(
        create(&server, "burst", "resourcequotas", &quota).await.0,
        201
    );
    let started = std::time::Instant::now();
    let mut streams = Vec::new();
    for s in 0..8 {
        let server = server.clone();
        streams.push(tokio::spawn(async move {
            let mut passed = 0;
            for i in 0..25 {
                let name = format!("p-{s}-{i}");
                match create(&server, "burst", "pods", &pod(&name, json!({})))
                    .await
                    .0
                {
                    201 => passed += 1,
                    403 => {}
                    code => panic!("{name}: {code}"),
                }
            }
            passed
        }));
    }
    let mut passed = 0;
    for stream in streams {
        passed += stream.await.unwrap_or(0);
    }
    eprintln!(
        "200 pod creates in 8 streams against a quota: {:?}",
        started.elapsed()
    );
    assert_eq!(passed, 150, "the quota admits exactly its hard limit");
    used_becomes(&server, "burst", "many", json!({"pods": "150"})).await;
}

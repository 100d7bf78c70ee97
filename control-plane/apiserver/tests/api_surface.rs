//! The API surface beyond the core set: every kind in discovery as kubectl lists it, the
//! subresources (scale, binding, eviction, ephemeral containers, approval, the node-streaming
//! ones), with kubectl 1.33 and 1.27 where a kubectl command drives them.

mod common;

use std::time::Duration;

use serde_json::{Value, json};

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// Runs kubectl against `server` with a throwaway home; returns (success, stdout, stderr).
async fn kubectl(binary: &str, server: &str, args: &[&str]) -> (bool, String, String) {
    let output = capstan_testkit::kubectl::run(binary, server, args, None).await;
    (output.success, output.stdout, output.stderr)
}

async fn ok(binary: &str, server: &str, args: &[&str]) -> String {
    let (success, out, err) = kubectl(binary, server, args).await;
    assert!(success, "kubectl {args:?} failed: {out}{err}");
    out
}

async fn fails(binary: &str, server: &str, args: &[&str]) -> String {
    let (success, out, err) = kubectl(binary, server, args).await;
    assert!(!success, "kubectl {args:?} should fail: {out}");
    err
}

/// Upstream's `kubectl api-resources` rows (v1.33): name, short names, apiVersion,
/// namespaced, kind.
const UPSTREAM: &[(&str, &str, &str, bool, &str)] = &[
    ("configmaps", "cm", "v1", true, "ConfigMap"),
    ("endpoints", "ep", "v1", true, "Endpoints"),
    ("events", "ev", "v1", true, "Event"),
    ("limitranges", "limits", "v1", true, "LimitRange"),
    ("namespaces", "ns", "v1", false, "Namespace"),
    ("nodes", "no", "v1", false, "Node"),
    (
        "persistentvolumeclaims",
        "pvc",
        "v1",
        true,
        "PersistentVolumeClaim",
    ),
    ("persistentvolumes", "pv", "v1", false, "PersistentVolume"),
    ("pods", "po", "v1", true, "Pod"),
    ("podtemplates", "", "v1", true, "PodTemplate"),
    (
        "replicationcontrollers",
        "rc",
        "v1",
        true,
        "ReplicationController",
    ),
    ("resourcequotas", "quota", "v1", true, "ResourceQuota"),
    ("secrets", "", "v1", true, "Secret"),
    ("serviceaccounts", "sa", "v1", true, "ServiceAccount"),
    ("services", "svc", "v1", true, "Service"),
    (
        "mutatingwebhookconfigurations",
        "",
        "admissionregistration.k8s.io/v1",
        false,
        "MutatingWebhookConfiguration",
    ),
    (
        "validatingadmissionpolicies",
        "",
        "admissionregistration.k8s.io/v1",
        false,
        "ValidatingAdmissionPolicy",
    ),
    (
        "validatingadmissionpolicybindings",
        "",
        "admissionregistration.k8s.io/v1",
        false,
        "ValidatingAdmissionPolicyBinding",
    ),
    (
        "validatingwebhookconfigurations",
        "",
        "admissionregistration.k8s.io/v1",
        false,
        "ValidatingWebhookConfiguration",
    ),
    (
        "controllerrevisions",
        "",
        "apps/v1",
        true,
        "ControllerRevision",
    ),
    ("daemonsets", "ds", "apps/v1", true, "DaemonSet"),
    ("deployments", "deploy", "apps/v1", true, "Deployment"),
    ("replicasets", "rs", "apps/v1", true, "ReplicaSet"),
    ("statefulsets", "sts", "apps/v1", true, "StatefulSet"),
    (
        "horizontalpodautoscalers",
        "hpa",
        "autoscaling/v2",
        true,
        "HorizontalPodAutoscaler",
    ),
    ("cronjobs", "cj", "batch/v1", true, "CronJob"),
    ("jobs", "", "batch/v1", true, "Job"),
    (
        "certificatesigningrequests",
        "csr",
        "certificates.k8s.io/v1",
        false,
        "CertificateSigningRequest",
    ),
    ("leases", "", "coordination.k8s.io/v1", true, "Lease"),
    (
        "endpointslices",
        "",
        "discovery.k8s.io/v1",
        true,
        "EndpointSlice",
    ),
    ("events", "ev", "events.k8s.io/v1", true, "Event"),
    (
        "ingressclasses",
        "",
        "networking.k8s.io/v1",
        false,
        "IngressClass",
    ),
    ("ingresses", "ing", "networking.k8s.io/v1", true, "Ingress"),
    (
        "ipaddresses",
        "ip",
        "networking.k8s.io/v1",
        false,
        "IPAddress",
    ),
    (
        "networkpolicies",
        "netpol",
        "networking.k8s.io/v1",
        true,
        "NetworkPolicy",
    ),
    (
        "servicecidrs",
        "",
        "networking.k8s.io/v1",
        false,
        "ServiceCIDR",
    ),
    (
        "runtimeclasses",
        "",
        "node.k8s.io/v1",
        false,
        "RuntimeClass",
    ),
    (
        "poddisruptionbudgets",
        "pdb",
        "policy/v1",
        true,
        "PodDisruptionBudget",
    ),
    (
        "priorityclasses",
        "pc",
        "scheduling.k8s.io/v1",
        false,
        "PriorityClass",
    ),
    ("csidrivers", "", "storage.k8s.io/v1", false, "CSIDriver"),
    ("csinodes", "", "storage.k8s.io/v1", false, "CSINode"),
    (
        "csistoragecapacities",
        "",
        "storage.k8s.io/v1",
        true,
        "CSIStorageCapacity",
    ),
    (
        "storageclasses",
        "sc",
        "storage.k8s.io/v1",
        false,
        "StorageClass",
    ),
    (
        "volumeattachments",
        "",
        "storage.k8s.io/v1",
        false,
        "VolumeAttachment",
    ),
];

async fn api_resources(k: &str) {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let out = ok(k, &url, &["api-resources", "--no-headers"]).await;
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    for (name, short, version, namespaced, kind) in UPSTREAM {
        let mut expected: Vec<String> = vec![name.to_string()];
        if !short.is_empty() {
            expected.push(short.to_string());
        }
        expected.extend([
            version.to_string(),
            namespaced.to_string(),
            kind.to_string(),
        ]);
        assert!(
            rows.iter().any(|r| *r == expected),
            "{expected:?} not in\n{out}"
        );
    }
    let wide = ok(k, &url, &["api-resources", "-o", "wide", "--no-headers"]).await;
    let pods = wide.lines().find(|l| l.starts_with("pods ")).unwrap_or("");
    assert!(
        pods.contains("create,delete,deletecollection,get,list,patch,update,watch")
            && pods.contains("all"),
        "{wide}"
    );
    let webhooks = wide
        .lines()
        .find(|l| l.starts_with("validatingwebhookconfigurations "))
        .unwrap_or("");
    assert!(webhooks.contains("api-extensions"), "{wide}");
    let workloads = ok(
        k,
        &url,
        &["api-resources", "--categories=all", "-o", "name"],
    )
    .await;
    for name in [
        "cronjobs.batch",
        "replicationcontrollers",
        "horizontalpodautoscalers.autoscaling",
    ] {
        assert!(workloads.lines().any(|l| l == name), "{workloads}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_resources_match_upstream_1_33() {
    api_resources(KUBECTL_133).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn api_resources_match_upstream_1_27() {
    api_resources(KUBECTL_127).await;
}

#[tokio::test]
async fn discovery_lists_subresources_with_their_kinds() {
    let (server, _) = common::server().await;
    let (_, core) = common::json(&server, "GET", "/api/v1", &Value::Null).await;
    let names: Vec<&str> = core["resources"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    for sub in [
        "pods/binding",
        "pods/eviction",
        "pods/log",
        "pods/exec",
        "pods/ephemeralcontainers",
        "namespaces/finalize",
        "nodes/proxy",
        "replicationcontrollers/scale",
    ] {
        assert!(names.contains(&sub), "{sub} missing: {names:?}");
    }
    let (_, apps) = common::json(&server, "GET", "/apis/apps/v1", &Value::Null).await;
    let scale = apps["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "deployments/scale"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        (&scale["group"], &scale["version"], &scale["kind"]),
        (&json!("autoscaling"), &json!("v1"), &json!("Scale"))
    );
}

const DEPLOYMENT: &str = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
 "spec":{"replicas":1,"selector":{"matchLabels":{"app":"web"}},
 "template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"nginx"}]}}}}"#;

async fn scale_with(k: &str) {
    let (server, _) = common::server().await;
    let (code, _) = common::call(
        &server,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        "application/json",
        DEPLOYMENT,
    )
    .await;
    assert_eq!(code, 201);
    let url = common::listen(server.clone()).await;
    let out = ok(k, &url, &["scale", "deployment", "web", "--replicas=3"]).await;
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    let (_, deploy) = common::json(
        &server,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/web",
        &Value::Null,
    )
    .await;
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(
        deploy["metadata"]["generation"], 2,
        "scaling is a spec change"
    );
    let (_, scale) = common::json(
        &server,
        "GET",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
        &Value::Null,
    )
    .await;
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=web");
    let (code, bad) = common::json(
        &server,
        "PUT",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
        &json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "web"}, "spec": {"replicas": -1}}),
    )
    .await;
    assert_eq!(code, 422, "{bad}");
    assert_eq!(bad["details"]["causes"][0]["field"], "spec.replicas");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_1_33_scales_a_deployment() {
    scale_with(KUBECTL_133).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_1_27_scales_a_deployment() {
    scale_with(KUBECTL_127).await;
}

/// A CSR body: the request is any PEM CERTIFICATE REQUEST block (nobody signs it here).
fn csr(name: &str) -> Value {
    use base64::Engine;
    let pem = "-----BEGIN CERTIFICATE REQUEST-----\nMIIBAA==\n-----END CERTIFICATE REQUEST-----\n";
    let request = base64::engine::general_purpose::STANDARD.encode(pem);
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": request, "signerName": "kubernetes.io/kube-apiserver-client", "usages": ["client auth"]},
    })
}

async fn approve_with(k: &str) {
    let (server, _) = common::server().await;
    for name in ["alice", "bob"] {
        let (code, body) = common::json(
            &server,
            "POST",
            "/apis/certificates.k8s.io/v1/certificatesigningrequests",
            &csr(name),
        )
        .await;
        assert_eq!(code, 201, "{body}");
        assert_eq!(body["spec"]["username"], "system:admin", "{body}");
    }
    let url = common::listen(server.clone()).await;
    let out = ok(k, &url, &["certificate", "approve", "alice"]).await;
    assert!(out.contains("approved"), "{out}");
    let out = ok(k, &url, &["certificate", "deny", "bob"]).await;
    assert!(out.contains("denied"), "{out}");
    let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    // The spec is the requester's: an update of the main resource keeps it.
    let (code, kept) = common::call(
        &server,
        "PATCH",
        &format!("{path}/alice"),
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"a":"b"}},"spec":{"username":"mallory"}}"#,
    )
    .await;
    assert_eq!(code, 200, "{kept}");
    assert_eq!(kept["spec"]["username"], "system:admin");
    assert_eq!(kept["metadata"]["labels"]["a"], "b");
    let (_, alice) = common::json(&server, "GET", &format!("{path}/alice"), &Value::Null).await;
    assert_eq!(alice["status"]["conditions"][0]["type"], "Approved");
    assert_eq!(alice["status"]["conditions"][0]["reason"], "KubectlApprove");
    let (_, bob) = common::json(&server, "GET", &format!("{path}/bob"), &Value::Null).await;
    assert_eq!(bob["status"]["conditions"][0]["type"], "Denied");
    // Approved and Denied together are refused, as upstream.
    let mut both = alice.clone();
    if let Some(conditions) = both["status"]["conditions"].as_array_mut() {
        conditions.push(json!({"type": "Denied", "status": "True"}));
    }
    let (code, error) =
        common::json(&server, "PUT", &format!("{path}/alice/approval"), &both).await;
    assert_eq!(code, 422, "{error}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("Approved and Denied conditions are mutually exclusive")),
        "{error}"
    );
    let conditions = ok(
        k,
        &url,
        &[
            "get",
            "csr",
            "-o",
            "jsonpath={.items[*].status.conditions[0].type}",
        ],
    )
    .await;
    assert_eq!(conditions, "Approved Denied");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_1_33_approves_and_denies_csrs() {
    approve_with(KUBECTL_133).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_1_27_approves_and_denies_csrs() {
    approve_with(KUBECTL_127).await;
}

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"app":"web"}},
 "spec":{"containers":[{"name":"c","image":"nginx"}]}}"#;

const PODS: &str = "/api/v1/namespaces/default/pods";

async fn make_pod(server: &capstan_apiserver::ApiServer, name: &str) {
    let body = POD.replace("\"web\",\"labels\"", &format!("\"{name}\",\"labels\""));
    let (code, created) = common::call(server, "POST", PODS, "application/json", &body).await;
    assert_eq!(code, 201, "{created}");
}

/// Sets the pod's phase; a Running pod is made Ready too, so that a disruption budget counts
/// it as healthy (an unready one may be evicted while the budget is healthy, as upstream).
async fn set_phase(server: &capstan_apiserver::ApiServer, name: &str, phase: &str) {
    let mut status = json!({"phase": phase});
    if phase == "Running" {
        status["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    }
    let (code, body) = common::call(
        server,
        "PATCH",
        &format!("{PODS}/{name}/status"),
        "application/merge-patch+json",
        &json!({ "status": status }).to_string(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test]
async fn binding_sets_the_node_once() {
    let (server, _) = common::server().await;
    make_pod(&server, "web").await;
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "web"}, "target": {"kind": "Node", "name": "n1"}});
    let (code, body) =
        common::json(&server, "POST", &format!("{PODS}/web/binding"), &binding).await;
    assert_eq!((code, &body["status"]), (201, &json!("Success")), "{body}");
    let (_, pod) = common::json(&server, "GET", &format!("{PODS}/web"), &Value::Null).await;
    assert_eq!(pod["spec"]["nodeName"], "n1");
    assert_eq!(pod["status"]["conditions"][0]["type"], "PodScheduled");
    let mut again = binding.clone();
    again["target"]["name"] = json!("n2");
    let (code, body) = common::json(&server, "POST", &format!("{PODS}/web/binding"), &again).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        body["message"],
        "Operation cannot be fulfilled on pods/binding \"web\": pod web is already assigned to node \"n1\""
    );
    let mut unnamed = binding.clone();
    unnamed["target"] = json!({"kind": "Node"});
    let (code, body) =
        common::json(&server, "POST", &format!("{PODS}/web/binding"), &unnamed).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "target.name");
}

#[tokio::test]
async fn eviction_honours_the_disruption_budget() {
    let (server, _) = common::server().await;
    make_pod(&server, "web").await;
    set_phase(&server, "web", "Running").await;
    let pdbs = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "budget"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}});
    let (code, body) = common::json(&server, "POST", pdbs, &pdb).await;
    assert_eq!(code, 201, "{body}");
    let status = |allowed: i64| json!({"status": {"observedGeneration": 1, "disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}});
    let patch_status = |allowed: i64| {
        let server = server.clone();
        async move {
            let (code, body) = common::call(
                &server,
                "PATCH",
                &format!("{pdbs}/budget/status"),
                "application/merge-patch+json",
                &status(allowed).to_string(),
            )
            .await;
            assert_eq!(code, 200, "{body}");
        }
    };
    patch_status(0).await;
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "web", "namespace": "default"}});
    let (code, body) =
        common::json(&server, "POST", &format!("{PODS}/web/eviction"), &eviction).await;
    assert_eq!(code, 429, "{body}");
    assert_eq!(body["reason"], "TooManyRequests");
    assert_eq!(
        body["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        body["details"]["causes"][0]["message"],
        "The disruption budget budget needs 1 healthy pods and has 1 currently"
    );
    let (code, _) = common::json(&server, "GET", &format!("{PODS}/web"), &Value::Null).await;
    assert_eq!(code, 200, "a refused eviction leaves the pod");

    patch_status(1).await;
    let (code, body) =
        common::json(&server, "POST", &format!("{PODS}/web/eviction"), &eviction).await;
    assert_eq!(code, 201, "{body}");
    let (code, _) = common::json(&server, "GET", &format!("{PODS}/web"), &Value::Null).await;
    assert_eq!(code, 404, "the evicted pod is deleted");
    let (_, budget) = common::json(&server, "GET", &format!("{pdbs}/budget"), &Value::Null).await;
    assert_eq!(budget["status"]["disruptionsAllowed"], 0);
    assert!(
        budget["status"]["disruptedPods"]["web"].is_string(),
        "{budget}"
    );

    // Pending pods are not protected, as upstream.
    make_pod(&server, "pending").await;
    let mut eviction = eviction;
    eviction["metadata"]["name"] = json!("pending");
    let (code, body) = common::json(
        &server,
        "POST",
        &format!("{PODS}/pending/eviction"),
        &eviction,
    )
    .await;
    assert_eq!(code, 201, "{body}");
}

#[tokio::test]
async fn ephemeral_containers_change_only_through_their_subresource() {
    let (server, _) = common::server().await;
    make_pod(&server, "web").await;
    let path = format!("{PODS}/web/ephemeralcontainers");
    let patch = json!({"spec": {"ephemeralContainers": [{"name": "debug", "image": "busybox", "targetContainerName": "c"}]}});
    let (code, body) = common::call(
        &server,
        "PATCH",
        &path,
        "application/strategic-merge-patch+json",
        &patch.to_string(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["ephemeralContainers"][0]["name"], "debug");
    let (code, body) = common::call(
        &server,
        "PATCH",
        &path,
        "application/merge-patch+json",
        &json!({"spec": {"ephemeralContainers": []}}).to_string(),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("may not be removed")),
        "{body}"
    );
    let (code, body) = common::call(&server, "PATCH", &path, "application/merge-patch+json", &json!({"spec": {"ephemeralContainers": [{"name": "debug", "image": "busybox", "targetContainerName": "c"}, {"name": "c", "image": "x"}]}}).to_string()).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["details"]["causes"][0]["reason"],
        "FieldValueDuplicate"
    );
}

async fn streaming_errors_with(k: &str) {
    let (server, _) = common::server().await;
    make_pod(&server, "web").await;
    let url = common::listen(server.clone()).await;
    let err = fails(k, &url, &["logs", "web"]).await;
    assert!(
        err.contains("pod web does not have a host assigned"),
        "{err}"
    );
    let binding = json!({"metadata": {"name": "web"}, "target": {"kind": "Node", "name": "n1"}});
    let (code, _) = common::json(&server, "POST", &format!("{PODS}/web/binding"), &binding).await;
    assert_eq!(code, 201);
    set_phase(&server, "web", "Running").await;
    let err = fails(k, &url, &["logs", "web"]).await;
    assert!(
        err.contains("has no kubelet client credentials to reach node \"n1\""),
        "{err}"
    );
    let err = fails(k, &url, &["exec", "web", "--", "true"]).await;
    assert!(
        err.contains("has no kubelet client credentials to reach node \"n1\""),
        "{err}"
    );
    let err = fails(k, &url, &["logs", "web", "-c", "nope"]).await;
    assert!(
        err.contains("container nope is not valid for pod web"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_1_33_logs_and_exec_say_no_kubelet_endpoint() {
    streaming_errors_with(KUBECTL_133).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_1_27_logs_and_exec_say_no_kubelet_endpoint() {
    streaming_errors_with(KUBECTL_127).await;
}

#[tokio::test]
async fn events_are_one_store_seen_through_both_api_versions() {
    let (server, _) = common::server().await;
    let core = "/api/v1/namespaces/default/events";
    let new = "/apis/events.k8s.io/v1/namespaces/default/events";
    let event = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "old"},
        "involvedObject": {"kind": "Pod", "name": "web"}, "reason": "Started", "message": "started container",
        "type": "Normal", "count": 3, "source": {"component": "kubelet"}});
    let (code, body) = common::json(&server, "POST", core, &event).await;
    assert_eq!(code, 201, "{body}");
    let (code, seen) = common::json(&server, "GET", &format!("{new}/old"), &Value::Null).await;
    assert_eq!(code, 200, "{seen}");
    assert_eq!(seen["apiVersion"], "events.k8s.io/v1");
    assert_eq!(seen["regarding"]["name"], "web");
    assert_eq!(seen["note"], "started container");
    assert_eq!(seen["deprecatedCount"], 3);
    assert_eq!(seen["deprecatedSource"]["component"], "kubelet");
    assert!(seen.get("message").is_none(), "{seen}");

    let fresh = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "fresh"},
        "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "example.com/ctl", "reportingInstance": "ctl-1",
        "action": "Scale", "reason": "Scaled", "type": "Normal", "regarding": {"kind": "Deployment", "name": "web"}, "note": "scaled up"});
    let (code, created) = common::json(&server, "POST", new, &fresh).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["note"], "scaled up");
    let (_, as_core) = common::json(&server, "GET", &format!("{core}/fresh"), &Value::Null).await;
    assert_eq!(as_core["apiVersion"], "v1");
    assert_eq!(as_core["message"], "scaled up");
    assert_eq!(as_core["involvedObject"]["kind"], "Deployment");
    assert_eq!(as_core["reportingComponent"], "example.com/ctl");

    let (code, patched) = common::call(
        &server,
        "PATCH",
        &format!("{new}/fresh"),
        "application/merge-patch+json",
        r#"{"note":"scaled again"}"#,
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["note"], "scaled again");
    let (_, as_core) = common::json(&server, "GET", &format!("{core}/fresh"), &Value::Null).await;
    assert_eq!(as_core["message"], "scaled again");

    let (_, listed) = common::json(&server, "GET", new, &Value::Null).await;
    let notes: Vec<&str> = listed["items"]
        .as_array()
        .map(|i| i.iter().filter_map(|e| e["note"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(notes.len(), 2, "{listed}");
    assert_eq!(listed["kind"], "EventList");

    let mut incomplete = fresh.clone();
    incomplete["metadata"]["name"] = json!("incomplete");
    incomplete
        .as_object_mut()
        .map(|o| o.remove("reportingController"));
    let (code, error) = common::json(&server, "POST", new, &incomplete).await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(
        error["details"]["causes"][0]["field"],
        "reportingController"
    );

    let url = common::listen(server.clone()).await;
    let out = ok(KUBECTL_133, &url, &["get", "events.events.k8s.io"]).await;
    assert!(
        out.contains("deployment/web") && out.contains("scaled again"),
        "{out}"
    );
}

#[tokio::test]
async fn webhook_configurations_warn_that_they_do_nothing() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let Ok(dir) = tempfile::tempdir() else {
        panic!("tempdir")
    };
    let file = dir.path().join("hook.yaml");
    let hook = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata:\n  name: hook\nwebhooks: []\n";
    if std::fs::write(&file, hook).is_err() {
        panic!("write");
    }
    let path = file.to_string_lossy().into_owned();
    let (success, out, err) = kubectl(KUBECTL_133, &url, &["create", "-f", &path]).await;
    assert!(success, "{out}{err}");
    assert!(
        err.contains(
            "Warning: capstan stores admission webhook configurations but does not call webhooks"
        ),
        "{err}"
    );
}

async fn typed_creates_with(k: &str) {
    let (server, _) = common::server().await;
    let url = common::listen(server.clone()).await;
    ok(
        k,
        &url,
        &[
            "create",
            "cronjob",
            "tick",
            "--image=busybox",
            "--schedule=*/5 * * * *",
        ],
    )
    .await;
    ok(
        k,
        &url,
        &[
            "create",
            "poddisruptionbudget",
            "budget",
            "--selector=app=web",
            "--min-available=1",
        ],
    )
    .await;
    ok(
        k,
        &url,
        &[
            "create",
            "ingress",
            "site",
            "--class=nginx",
            "--rule=a.example.com/=web:80",
        ],
    )
    .await;
    let (_, cronjob) = common::json(
        &server,
        "GET",
        "/apis/batch/v1/namespaces/default/cronjobs/tick",
        &Value::Null,
    )
    .await;
    assert_eq!(cronjob["spec"]["schedule"], "*/5 * * * *");
    assert_eq!(
        cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );
    let (_, pdb) = common::json(
        &server,
        "GET",
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/budget",
        &Value::Null,
    )
    .await;
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"]["app"], "web");
    let (_, ingress) = common::json(
        &server,
        "GET",
        "/apis/networking.k8s.io/v1/namespaces/default/ingresses/site",
        &Value::Null,
    )
    .await;
    assert_eq!(ingress["spec"]["rules"][0]["host"], "a.example.com");
    assert_eq!(
        ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"],
        80
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_1_33_typed_creates_of_the_new_kinds() {
    typed_creates_with(KUBECTL_133).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_1_27_typed_creates_of_the_new_kinds() {
    typed_creates_with(KUBECTL_127).await;
}

/// `kubectl drain` evicts through pods/eviction: refused while the budget allows no
/// disruption, done once it allows one.
async fn drain_with(k: &str) {
    let (server, _) = common::server().await;
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    let (code, _) = common::json(&server, "POST", "/api/v1/nodes", &node).await;
    assert_eq!(code, 201);
    make_pod(&server, "web").await;
    let binding = json!({"metadata": {"name": "web"}, "target": {"kind": "Node", "name": "n1"}});
    common::json(&server, "POST", &format!("{PODS}/web/binding"), &binding).await;
    set_phase(&server, "web", "Running").await;
    let pdbs = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";
    let pdb = json!({"metadata": {"name": "budget"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}});
    common::json(&server, "POST", pdbs, &pdb).await;
    let status = |allowed: i64| {
        json!({"status": {"observedGeneration": 1, "disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}}).to_string()
    };
    common::call(
        &server,
        "PATCH",
        &format!("{pdbs}/budget/status"),
        "application/merge-patch+json",
        &status(0),
    )
    .await;
    let url = common::listen(server.clone()).await;
    let (success, out, err) = kubectl(k, &url, &["drain", "n1", "--force", "--timeout=2s"]).await;
    assert!(!success, "{out}");
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
    let (_, node) = common::json(&server, "GET", "/api/v1/nodes/n1", &Value::Null).await;
    assert_eq!(
        node["spec"]["unschedulable"], true,
        "drain cordoned the node"
    );
    common::call(
        &server,
        "PATCH",
        &format!("{pdbs}/budget/status"),
        "application/merge-patch+json",
        &status(1),
    )
    .await;
    // The pod is bound: the eviction is a graceful delete, so finish it as the node would.
    let drained = tokio::spawn({
        let url = url.clone();
        let k = k.to_string();
        async move { kubectl(&k, &url, &["drain", "n1", "--force", "--timeout=20s"]).await }
    });
    for _ in 0..100 {
        let (_, pod) = common::json(&server, "GET", &format!("{PODS}/web"), &Value::Null).await;
        if pod["metadata"]["deletionTimestamp"].is_string() {
            common::call(
                &server,
                "DELETE",
                &format!("{PODS}/web?gracePeriodSeconds=0"),
                "application/json",
                "",
            )
            .await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Ok((success, out, err)) = drained.await else {
        panic!("drain task")
    };
    assert!(success, "{out}{err}");
    assert!(out.contains("evicted") && out.contains("drained"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_1_33_drain_honours_the_budget() {
    drain_with(KUBECTL_133).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_1_27_drain_honours_the_budget() {
    drain_with(KUBECTL_127).await;
}

#[tokio::test]
async fn finalize_and_node_proxy() {
    let (server, _) = common::server().await;
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    common::json(&server, "POST", "/api/v1/namespaces", &ns).await;
    let mut finalized = ns.clone();
    finalized["spec"] = json!({"finalizers": []});
    let (code, body) = common::json(
        &server,
        "PUT",
        "/api/v1/namespaces/team/finalize",
        &finalized,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body["spec"].get("finalizers").is_none(), "{body}");
    let (code, body) = common::json(
        &server,
        "POST",
        "/api/v1/namespaces/team/finalize",
        &finalized,
    )
    .await;
    assert_eq!(code, 405, "{body}");
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    common::json(&server, "POST", "/api/v1/nodes", &node).await;
    let (code, body) = common::json(
        &server,
        "GET",
        "/api/v1/nodes/n1/proxy/metrics",
        &Value::Null,
    )
    .await;
    assert_eq!(code, 400, "a proxy path names the node's proxy: {body}");
    let (code, body) = common::json(&server, "GET", "/api/v1/nodes/n1/proxy", &Value::Null).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("no kubelet client credentials to reach node \"n1\"")),
        "{body}"
    );
    let (code, _) = common::json(&server, "GET", "/api/v1/nodes/n2/proxy", &Value::Null).await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_describe_reads_the_new_kinds() {
    let (server, _) = common::server().await;
    let url = common::listen(server.clone()).await;
    ok(
        KUBECTL_133,
        &url,
        &[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
        ],
    )
    .await;
    ok(
        KUBECTL_133,
        &url,
        &[
            "create",
            "cronjob",
            "tick",
            "--image=busybox",
            "--schedule=*/5 * * * *",
        ],
    )
    .await;
    ok(
        KUBECTL_133,
        &url,
        &[
            "create",
            "poddisruptionbudget",
            "budget",
            "--selector=app=web",
            "--min-available=1",
        ],
    )
    .await;
    ok(
        KUBECTL_133,
        &url,
        &["create", "service", "nodeport", "web", "--tcp=80:8080"],
    )
    .await;
    for (what, expect) in [
        ("deployment/web", "Replicas:"),
        ("cronjob/tick", "Schedule:"),
        ("pdb/budget", "Min available:"),
        ("service/web", "NodePort:"),
    ] {
        let out = ok(KUBECTL_133, &url, &["describe", what]).await;
        assert!(out.contains(expect), "{what}: {out}");
    }
}

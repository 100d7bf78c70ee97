//! LimitRanger through kubectl 1.33 and 1.27: a namespace's LimitRange defaults the resources
//! of new pods and refuses pods and claims out of its bounds, with kube's messages.

mod admission_support;
mod common;

use admission_support::{KUBECTL_127, KUBECTL_133, fails, ok, parse};
use serde_json::json;

const RANGE: &str = "apiVersion: v1
kind: LimitRange
metadata:
  name: lr
spec:
  limits:
  - type: Container
    max:
      cpu: 500m
    default:
      memory: 128Mi
    defaultRequest:
      cpu: 100m
      memory: 64Mi
  - type: Pod
    max:
      memory: 1Gi
  - type: PersistentVolumeClaim
    min:
      storage: 1Gi
";

fn pod(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {resources}\n"
    )
}

async fn session(k: &str) {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let s = url.as_str();
    ok(k, s, &["create", "namespace", "lim"], None).await;
    ok(k, s, &["-n", "lim", "create", "-f", "-"], Some(RANGE)).await;
    let range = parse(
        &ok(
            k,
            s,
            &["-n", "lim", "get", "limits", "lr", "-o", "json"],
            None,
        )
        .await
        .stdout,
    );
    assert_eq!(
        range["spec"]["limits"][0]["default"],
        json!({"cpu": "500m", "memory": "128Mi"}),
        "the default limit falls back to max"
    );

    let described = ok(k, s, &["-n", "lim", "describe", "limits", "lr"], None)
        .await
        .stdout;
    let container_cpu = described
        .lines()
        .find(|l| l.starts_with("Container") && l.contains(" cpu "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>());
    assert_eq!(
        container_cpu,
        Some(vec!["Container", "cpu", "-", "500m", "100m", "500m", "-"]),
        "{described}"
    );
    ok(k, s, &["-n", "lim", "run", "p", "--image=busybox"], None).await;
    let p = parse(
        &ok(k, s, &["-n", "lim", "get", "pod", "p", "-o", "json"], None)
            .await
            .stdout,
    );
    assert_eq!(
        p["spec"]["containers"][0]["resources"],
        json!({"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}})
    );
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container p; cpu, memory limit for container p"
    );

    let err = fails(
        k,
        s,
        &["-n", "lim", "create", "-f", "-"],
        Some(&pod("big", "{limits: {cpu: \"1\"}}")),
    )
    .await;
    assert!(
        err.contains(
            "Error from server (Forbidden): error when creating \"STDIN\": pods \"big\" is forbidden: maximum cpu usage per Container is 500m, but limit is 1"
        ),
        "{err}"
    );
    let err = fails(
        k,
        s,
        &["-n", "lim", "create", "-f", "-"],
        Some(&pod("fat", "{limits: {cpu: 200m, memory: 2Gi}}")),
    )
    .await;
    assert!(
        err.contains(
            "pods \"fat\" is forbidden: maximum memory usage per Pod is 1Gi, but limit is 2Gi"
        ),
        "{err}"
    );
    let claim = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: small\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 100Mi\n";
    let err = fails(k, s, &["-n", "lim", "create", "-f", "-"], Some(claim)).await;
    assert!(
        err.contains("persistentvolumeclaims \"small\" is forbidden: minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 100Mi"),
        "{err}"
    );
    let bad_range = "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: bad\nspec:\n  limits:\n  - type: Container\n    min: {cpu: \"2\"}\n    max: {cpu: \"1\"}\n";
    let err = fails(k, s, &["-n", "lim", "create", "-f", "-"], Some(bad_range)).await;
    assert!(
        err.contains("The LimitRange \"bad\" is invalid: \n* spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1\n")
            && err.contains("* spec.limits[0].default[cpu]: Invalid value: \"2\": min value 2 is greater than default value 1"),
        "{err}"
    );
    let err = fails(
        k,
        s,
        &["-n", "lim", "create", "-f", "-"],
        Some(&pod("odd", "{limits: {cpu: lots}}")),
    )
    .await;
    assert!(
        err.contains("Error from server (BadRequest): error when creating \"STDIN\": Pod in version \"v1\" cannot be handled as a Pod: quantities must match the regular expression"),
        "{err}"
    );
    // Other namespaces are not bounded.
    ok(
        k,
        s,
        &["-n", "default", "create", "-f", "-"],
        Some(&pod("big", "{limits: {cpu: \"1\"}}")),
    )
    .await;
}

#[tokio::test]
async fn limit_ranges_with_kubectl_1_33() {
    session(KUBECTL_133).await;
}

#[tokio::test]
async fn limit_ranges_with_kubectl_1_27() {
    session(KUBECTL_127).await;
}

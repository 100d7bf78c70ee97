//! The Node authorizer and NodeRestriction as a node's user meets them through kubectl 1.33 and
//! 1.27 (a token file gives `system:node:n1` and `system:node:n2` in `system:nodes`): a node
//! reads only the Secrets and ConfigMaps its pods use, asks tokens only for its pods' service
//! account and bound to its pods, touches only its own Lease and Node, changes only its own
//! pods' status and creates only mirror pods; each refusal in upstream's words.

mod common;

use std::time::{Duration, Instant};

use capstan_apiserver::authz::Mode;
use common::plane::{KUBECTL_1_33, Plane, stderr, stdout};
use serde_json::Value;

const KUBECTL_1_27: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

fn plane() -> Plane {
    Plane::start_with(
        "n1tok,system:node:n1,uid-n1,\"system:nodes\"\nn2tok,system:node:n2,uid-n2,\"system:nodes\"\n",
        vec![Mode::Node, Mode::Rbac],
    )
}

fn apply(plane: &Plane, manifest: &str) {
    let path = plane.data_dir.join("manifest.json");
    std::fs::write(&path, manifest).unwrap();
    plane.admin_ok(&["apply", "-f", path.to_str().unwrap()]);
}

/// As node `token` with kubectl 1.33: success and stdout, or stderr.
fn as_node(plane: &Plane, token: &str, args: &[&str]) -> Result<String, String> {
    let out = plane.as_token(KUBECTL_1_33, token, args);
    match out.status.success() {
        true => Ok(stdout(&out)),
        false => Err(stderr(&out)),
    }
}

/// Retries until the node's graph has caught up with the store (it follows a watch).
fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match check() {
            Ok(()) => return,
            Err(last) if Instant::now() > deadline => panic!("{what}: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn refused(result: Result<String, String>, message: &str) {
    match result {
        Ok(out) => panic!("allowed, wanted {message:?}: {out}"),
        // kubectl words the frame by command ("Error from server (Forbidden): error when
        // creating ...", "error: failed to create token: ..."); the server's message is whole.
        Err(err) => assert!(err.contains(message), "wanted {message:?}, got {err}"),
    }
}

fn pod(name: &str, node: &str, annotations: &str, spec_extra: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}", "namespace": "default", "annotations": {{{annotations}}}}},
  "spec": {{"nodeName": "{node}", {spec_extra} "containers": [{{"name": "c", "image": "busybox"}}]}}}}"#
    )
}

#[test]
fn a_node_reaches_only_what_its_pods_use() {
    let plane = plane();
    apply(
        &plane,
        r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "used", "namespace": "default"}},
  {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other", "namespace": "default"}},
  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "default"}},
  {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "runner", "namespace": "default"}}]}"#,
    );
    apply(
        &plane,
        &pod(
            "web",
            "n1",
            "",
            r#""serviceAccountName": "runner", "volumes": [{"name": "s", "secret": {"secretName": "used"}}],
  "initContainers": [{"name": "i", "image": "busybox", "envFrom": [{"configMapRef": {"name": "settings"}}]}],"#,
        ),
    );
    eventually("n1 reads the secret its pod mounts", || {
        as_node(&plane, "n1tok", &["get", "secret", "used"]).map(|_| ())
    });
    as_node(&plane, "n1tok", &["get", "configmap", "settings"]).unwrap();
    refused(
        as_node(&plane, "n1tok", &["get", "secret", "other"]),
        "secrets \"other\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object",
    );
    refused(
        as_node(&plane, "n2tok", &["get", "secret", "used"]),
        "secrets \"used\" is forbidden: User \"system:node:n2\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'n2' and this object",
    );
    refused(
        as_node(&plane, "n1tok", &["get", "secrets"]),
        "secrets is forbidden: User \"system:node:n1\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\": No Object name found",
    );
    // kubectl 1.27 prints the same refusal.
    let old = plane.as_token(KUBECTL_1_27, "n2tok", &["get", "configmap", "settings"]);
    assert!(!old.status.success());
    assert!(
        stderr(&old).contains("no relationship found between node 'n2' and this object"),
        "{}",
        stderr(&old)
    );

    // Tokens: for the pod's account, bound to the pod, from its node only.
    let uid = plane.admin_ok(&["get", "pod", "web", "-o", "jsonpath={.metadata.uid}"]);
    let bound = [
        "create",
        "token",
        "runner",
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        "web",
        "--bound-object-uid",
        uid.trim(),
    ];
    let token = as_node(&plane, "n1tok", &bound).unwrap();
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    refused(
        as_node(&plane, "n1tok", &["create", "token", "runner"]),
        "serviceaccounts \"runner\" is forbidden: node requested token not bound to a pod",
    );
    refused(
        as_node(&plane, "n2tok", &bound),
        "serviceaccounts \"runner\" is forbidden: User \"system:node:n2\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"default\": no relationship found between node 'n2' and this object",
    );

    // Once the pod is gone, so is the way to its secret.
    plane.admin_ok(&["delete", "pod", "web", "--grace-period=0", "--force"]);
    eventually("n1 loses the secret with its pod", || {
        match as_node(&plane, "n1tok", &["get", "secret", "used"]) {
            Ok(out) => Err(format!("still allowed: {out}")),
            Err(err) if err.contains("no relationship found") => Ok(()),
            Err(err) => Err(err),
        }
    });
}

#[test]
fn a_node_writes_only_its_own_node_lease_and_pods() {
    let plane = plane();
    let node = |name: &str, labels: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Node", "metadata": {{"name": "{name}", "labels": {{{labels}}}}}}}"#
        )
    };
    let write = |token: &str, manifest: &str| {
        let path = plane.data_dir.join(format!("{token}.json"));
        std::fs::write(&path, manifest).unwrap();
        as_node(&plane, token, &["create", "-f", path.to_str().unwrap()])
    };
    write("n1tok", &node("n1", r#""kubernetes.io/hostname": "n1""#)).unwrap();
    refused(
        write("n1tok", &node("n2", "")),
        "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\"",
    );
    refused(
        as_node(
            &plane,
            "n1tok",
            &[
                "label",
                "node",
                "n1",
                "node-restriction.kubernetes.io/team=a",
            ],
        ),
        "nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/team",
    );
    as_node(
        &plane,
        "n1tok",
        &["label", "node", "n1", "example.com/rack=r1"],
    )
    .unwrap();

    let lease = |name: &str| {
        format!(
            r#"{{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {{"name": "{name}", "namespace": "kube-node-lease"}}, "spec": {{"holderIdentity": "{name}"}}}}"#
        )
    };
    write("n1tok", &lease("n1")).unwrap();
    refused(
        write("n1tok", &lease("n2")),
        "leases.coordination.k8s.io \"n2\" is forbidden: can only access node lease with the same name as the requesting node",
    );
    refused(
        as_node(
            &plane,
            "n1tok",
            &["get", "lease", "-n", "kube-node-lease", "kube-system"],
        ),
        "leases.coordination.k8s.io \"kube-system\" is forbidden: User \"system:node:n1\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"kube-node-lease\": can only access node lease with the same name as the requesting node",
    );

    // Pods: mirror pods of its own only; status and deletion of its own pods only.
    refused(
        write("n1tok", &pod("plain", "n1", "", "")),
        "pods \"plain\" is forbidden: pod does not have \"kubernetes.io/config.mirror\" annotation, node \"n1\" can only create mirror pods",
    );
    refused(
        write(
            "n1tok",
            &pod("stray", "n2", r#""kubernetes.io/config.mirror": "h""#, ""),
        ),
        "pods \"stray\" is forbidden: node \"n1\" can only create pods with spec.nodeName set to itself",
    );
    write(
        "n1tok",
        &pod("mirror", "n1", r#""kubernetes.io/config.mirror": "h""#, ""),
    )
    .unwrap();
    apply(&plane, &pod("elsewhere", "n2", "", ""));
    // A status PATCH as the kubelet sends it (kubectl would GET pods/status first, which
    // nodes may not, as upstream).
    let patch_status = |token: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-X", "PATCH", "--cacert"])
            .arg(plane.data_dir.join("pki/ca.crt"))
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["-H", "Content-Type: application/merge-patch+json"])
            .args(["-d", r#"{"status": {"phase": "Running"}}"#])
            .arg(format!(
                "https://{}/api/v1/namespaces/default/pods/elsewhere/status",
                plane.address
            ))
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let answer = patch_status("n1tok");
    assert_eq!(answer["code"], 403, "{answer}");
    assert_eq!(
        answer["message"],
        "pods \"elsewhere\" is forbidden: node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
    );
    let answer = patch_status("n2tok");
    assert_eq!(answer["status"]["phase"], "Running", "{answer}");
    refused(
        as_node(&plane, "n1tok", &["delete", "pod", "elsewhere"]),
        "pods \"elsewhere\" is forbidden: node \"n1\" can only delete pods with spec.nodeName set to itself",
    );
    as_node(
        &plane,
        "n1tok",
        &["delete", "pod", "mirror", "--wait=false"],
    )
    .unwrap();
    let phase = plane.admin_ok(&["get", "pod", "elsewhere", "-o", "json"]);
    let phase: Value = serde_json::from_str(&phase).unwrap();
    assert_eq!(phase["status"]["phase"], "Running");
}

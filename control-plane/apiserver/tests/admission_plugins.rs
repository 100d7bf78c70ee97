//! The first admission plugins, driven by kubectl 1.33 against an in-process server: the
//! ServiceAccount plugin (default account, projected token volume and mounts, automount off,
//! missing accounts, mirror pods), Priority (system classes, default class, missing class,
//! values above 1e9), DefaultTolerationSeconds, NamespaceLifecycle (the immortal namespaces),
//! and the default ServiceAccount every namespace gets.

mod common;

use serde_json::{Value, json};

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

struct Kubectl {
    url: String,
    home: tempfile::TempDir,
}

impl Kubectl {
    async fn start() -> Kubectl {
        let (server, _) = common::server().await;
        let url = common::listen(server).await;
        let home = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => panic!("tempdir: {e}"),
        };
        Kubectl { url, home }
    }

    /// Runs kubectl; (success, stdout, stderr).
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let output = capstan_testkit::kubectl::Kubectl::server(KUBECTL_133, &self.url)
            .home(self.home.path())
            .stdin(stdin)
            .run(args)
            .await;
        (output.success, output.stdout, output.stderr)
    }

    async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (success, out, err) = self.run(args, stdin).await;
        assert!(success, "kubectl {args:?} failed: {out}{err}");
        out
    }

    async fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (success, out, err) = self.run(args, stdin).await;
        assert!(!success, "kubectl {args:?} should fail: {out}");
        err
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ok(&all, None).await;
        match serde_json::from_str(&out) {
            Ok(value) => value,
            Err(e) => panic!("kubectl {args:?} printed no JSON ({e}): {out}"),
        }
    }
}

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  initContainers:
  - name: init
    image: busybox:1.36
  containers:
  - name: app
    image: nginx:1.27
  - name: sidecar
    image: busybox:1.36
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    emptyDir: {}
";

#[tokio::test]
async fn a_kubectl_pod_gets_the_service_account_token_volume_priority_and_tolerations() {
    let k = Kubectl::start().await;
    k.ok(&["create", "-f", "-"], Some(POD)).await;
    let pod = k.json(&["get", "pod", "web"]).await;
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["serviceAccount"], "default");

    let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    let name = volumes[1]["name"].as_str().unwrap_or("").to_string();
    assert!(
        name.len() == "kube-api-access-".len() + 5 && name.starts_with("kube-api-access-"),
        "{name}"
    );
    assert!(
        name["kube-api-access-".len()..]
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
    );
    // kube-apiserver 1.33's layout of the volume, field for field.
    assert_eq!(
        volumes[1],
        json!({
            "name": name,
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"items": [{"key": "ca.crt", "path": "ca.crt"}], "name": "kube-root-ca.crt"}},
                    {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}, "path": "namespace"}]}},
                ],
            },
        })
    );
    let mount = json!({
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
        "name": name,
        "readOnly": true,
    });
    assert_eq!(spec["initContainers"][0]["volumeMounts"], json!([mount]));
    assert_eq!(spec["containers"][0]["volumeMounts"], json!([mount]));
    assert_eq!(
        spec["containers"][1]["volumeMounts"],
        json!([{"mountPath": "/data", "name": "data"}, mount])
    );

    assert_eq!(spec["priority"], 0);
    assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
    assert!(spec.get("priorityClassName").is_none(), "{spec}");
    assert_eq!(
        spec["tolerations"],
        json!([
            {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
            {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300},
        ])
    );
}

fn pod_with(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{extra_spec}  containers:\n  - name: c\n    image: busybox:1.36\n"
    )
}

#[tokio::test]
async fn missing_accounts_and_classes_are_refused_in_kube_words() {
    let k = Kubectl::start().await;
    let err = k
        .fails(
            &["create", "-f", "-"],
            Some(&pod_with("p", "  serviceAccountName: nope\n")),
        )
        .await;
    assert!(
        err.contains(
            "Error from server (Forbidden): error when creating \"STDIN\": pods \"p\" is forbidden: error looking up service account default/nope: serviceaccount \"nope\" not found"
        ),
        "{err}"
    );
    let err = k
        .fails(
            &["create", "-f", "-"],
            Some(&pod_with("q", "  priorityClassName: nope\n")),
        )
        .await;
    assert!(
        err.contains("pods \"q\" is forbidden: no PriorityClass with name nope was found"),
        "{err}"
    );
    let err = k
        .fails(
            &["create", "-f", "-"],
            Some(&pod_with("r", "  priority: 7\n")),
        )
        .await;
    assert!(
        err.contains("the integer value of priority (7) must not be provided in pod spec; priority admission controller computed 0 from the given PriorityClass name"),
        "{err}"
    );
    k.fails(&["get", "pods", "p"], None).await;
}

#[tokio::test]
async fn priority_classes_system_default_and_limits() {
    let k = Kubectl::start().await;
    let node = k
        .json(&["get", "priorityclass", "system-node-critical"])
        .await;
    assert_eq!(node["value"], 2_000_001_000);
    assert_eq!(node["preemptionPolicy"], "PreemptLowerPriority");
    let cluster = k
        .json(&["get", "priorityclass", "system-cluster-critical"])
        .await;
    assert_eq!(cluster["value"], 2_000_000_000);

    let err = k
        .fails(
            &["create", "priorityclass", "big", "--value=2000000000"],
            None,
        )
        .await;
    assert!(
        err.contains(
            "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
        ),
        "{err}"
    );
    let err = k
        .fails(
            &["create", "priorityclass", "system-mine", "--value=5"],
            None,
        )
        .await;
    assert!(
        err.contains("priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"),
        "{err}"
    );
    let err = k
        .fails(&["delete", "priorityclass", "system-node-critical"], None)
        .await;
    assert!(
        err.contains("priorityclasses.scheduling.k8s.io \"system-node-critical\" is forbidden: this is a system priority class and cannot be deleted"),
        "{err}"
    );

    k.ok(
        &[
            "create",
            "priorityclass",
            "high",
            "--value=1000",
            "--global-default",
        ],
        None,
    )
    .await;
    let err = k
        .fails(
            &[
                "create",
                "priorityclass",
                "other",
                "--value=5",
                "--global-default",
            ],
            None,
        )
        .await;
    assert!(
        err.contains("PriorityClass high is already marked as default. Only one default can exist"),
        "{err}"
    );
    k.ok(&["create", "-f", "-"], Some(&pod_with("d", ""))).await;
    let pod = k.json(&["get", "pod", "d"]).await;
    assert_eq!(pod["spec"]["priorityClassName"], "high");
    assert_eq!(pod["spec"]["priority"], 1000);
    k.ok(
        &["create", "-f", "-"],
        Some(&pod_with(
            "crit",
            "  priorityClassName: system-cluster-critical\n",
        )),
    )
    .await;
    let pod = k.json(&["get", "pod", "crit"]).await;
    assert_eq!(pod["spec"]["priority"], 2_000_000_000);
}

#[tokio::test]
async fn automount_false_on_the_pod_or_the_account_mounts_nothing() {
    let k = Kubectl::start().await;
    k.ok(
        &["create", "-f", "-"],
        Some(&pod_with(
            "unmounted",
            "  automountServiceAccountToken: false\n",
        )),
    )
    .await;
    let pod = k.json(&["get", "pod", "unmounted"]).await;
    assert!(pod["spec"].get("volumes").is_none(), "{}", pod["spec"]);
    assert!(pod["spec"]["containers"][0].get("volumeMounts").is_none());
    assert_eq!(pod["spec"]["serviceAccountName"], "default");

    let account = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: quiet\nautomountServiceAccountToken: false\nimagePullSecrets:\n- name: regcred\n";
    k.ok(&["create", "-f", "-"], Some(account)).await;
    k.ok(
        &["create", "-f", "-"],
        Some(&pod_with("quiet", "  serviceAccountName: quiet\n")),
    )
    .await;
    let pod = k.json(&["get", "pod", "quiet"]).await;
    assert!(pod["spec"].get("volumes").is_none(), "{}", pod["spec"]);
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}])
    );
    // The pod's own choice wins over the account's.
    k.ok(
        &["create", "-f", "-"],
        Some(&pod_with(
            "loud",
            "  serviceAccountName: quiet\n  automountServiceAccountToken: true\n",
        )),
    )
    .await;
    let pod = k.json(&["get", "pod", "loud"]).await;
    assert_eq!(pod["spec"]["volumes"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn namespaces_get_a_default_account_and_the_immortal_ones_stay() {
    let k = Kubectl::start().await;
    for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let account = k.json(&["-n", namespace, "get", "sa", "default"]).await;
        assert_eq!(account["metadata"]["namespace"], namespace);
    }
    // A pod right after its namespace: the account is already there.
    k.ok(&["create", "namespace", "fresh"], None).await;
    k.ok(
        &["-n", "fresh", "create", "-f", "-"],
        Some(&pod_with("p", "")),
    )
    .await;
    let pod = k.json(&["-n", "fresh", "get", "pod", "p"]).await;
    assert_eq!(pod["spec"]["serviceAccountName"], "default");

    let err = k.fails(&["delete", "namespace", "kube-system"], None).await;
    assert!(
        err.contains("Error from server (Forbidden): namespaces \"kube-system\" is forbidden: this namespace may not be deleted"),
        "{err}"
    );
    for namespace in ["default", "kube-public"] {
        k.fails(&["delete", "namespace", namespace], None).await;
    }
    k.json(&["get", "namespace", "kube-system"]).await;
}

#[tokio::test]
async fn mirror_pods_may_not_reference_accounts_or_secrets() {
    let (server, _) = common::server().await;
    let mirror = |spec: Value| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "static-web-n1", "annotations": {"kubernetes.io/config.mirror": "abc"}},
            "spec": spec,
        })
    };
    let uri = "/api/v1/namespaces/default/pods";
    let containers = json!([{"name": "c", "image": "busybox"}]);
    let (code, body) = common::json(
        &server,
        "POST",
        uri,
        &mirror(json!({"serviceAccountName": "default", "containers": containers})),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body["message"],
        "pods \"static-web-n1\" is forbidden: a mirror pod may not reference service accounts"
    );
    let (code, body) = common::json(
        &server,
        "POST",
        uri,
        &mirror(json!({"containers": [{"name": "c", "image": "busybox", "envFrom": [{"secretRef": {"name": "s"}}]}]})),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body["message"],
        "pods \"static-web-n1\" is forbidden: a mirror pod may not reference secrets"
    );
    let (code, body) = common::json(
        &server,
        "POST",
        uri,
        &mirror(json!({"containers": containers})),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    // Left as the kubelet sent it: no account, no token volume.
    assert!(body["spec"].get("serviceAccountName").is_none(), "{body}");
    assert!(body["spec"].get("volumes").is_none(), "{body}");
}

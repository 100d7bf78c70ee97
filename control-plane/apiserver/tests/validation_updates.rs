//! Update-time validation as kube-apiserver 1.33: what a Pod update may change, immutable
//! workload selectors, StatefulSet and Job specs, and the pod-template defaults workloads
//! get; the printed texts through kubectl 1.33 and 1.27.

mod common;

use serde_json::{Value, json};

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
const PODS: &str = "/api/v1/namespaces/default/pods";
const FORBIDDEN: &str = "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Runs kubectl with its own home; `editor` becomes KUBE_EDITOR. Returns (success, out, err).
async fn kubectl(
    binary: &str,
    server: &str,
    args: &[&str],
    stdin: Option<&str>,
    editor: Option<&str>,
) -> (bool, String, String) {
    let mut kubectl = capstan_testkit::kubectl::Kubectl::server(binary, server).stdin(stdin);
    if let Some(editor) = editor {
        kubectl = kubectl.env("KUBE_EDITOR", editor);
    }
    let output = kubectl.run(args).await;
    (output.success, output.stdout, output.stderr)
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: c\n    image: nginx:1.27\n";
const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: c\n        image: nginx\n";

async fn session(k: &str) {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let s = url.as_str();
    let run = |args: Vec<String>, stdin: Option<&'static str>, editor: Option<String>| {
        let url = url.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl(k, &url, &args, stdin, editor.as_deref()).await
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (ok, out, err) = run(args(&["create", "-f", "-"]), Some(POD), None).await;
    assert!(ok, "{out}{err}");
    let (ok, out, err) = run(args(&["set", "image", "pod/p", "c=nginx:1.28"]), None, None).await;
    assert!(ok, "set image: {out}{err}");
    // kubectl edit: the editor rewrites the image in the file kubectl hands it.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let script = dir.path().join("edit.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nsed -i 's/nginx:1.28/nginx:1.29/' \"$1\"\n",
    )
    .unwrap_or_else(|e| panic!("write: {e}"));
    let editor = format!("sh {}", script.display());
    let (ok, out, err) = run(args(&["edit", "pod", "p"]), None, Some(editor)).await;
    assert!(ok, "edit: {out}{err}");
    let (_, image, _) = kubectl(
        k,
        s,
        &[
            "get",
            "pod",
            "p",
            "-o",
            "jsonpath={.spec.containers[0].image}",
        ],
        None,
        None,
    )
    .await;
    assert_eq!(image, "nginx:1.29");
    let (ok, _, err) = kubectl(
        k,
        s,
        &[
            "patch",
            "pod",
            "p",
            "-p",
            r#"{"spec":{"restartPolicy":"Never"}}"#,
        ],
        None,
        None,
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains(&format!("The Pod \"p\" is invalid: {FORBIDDEN}")),
        "{err}"
    );

    let (ok, out, err) = run(args(&["create", "-f", "-"]), Some(DEPLOY), None).await;
    assert!(ok, "{out}{err}");
    let (ok, _, err) = kubectl(
        k,
        s,
        &[
            "patch",
            "deploy",
            "d",
            "-p",
            r#"{"spec":{"selector":{"matchLabels":{"app":"db"}},"template":{"metadata":{"labels":{"app":"db"}}}}}"#,
        ],
        None,
        None,
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("The Deployment \"d\" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"db\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"),
        "{err}"
    );
    // The pod template got the Pod's defaults, and the Deployment its own.
    let (_, yaml, _) = kubectl(k, s, &["get", "deploy", "d", "-o", "json"], None, None).await;
    let deploy: Value = serde_json::from_str(&yaml).unwrap_or(Value::Null);
    let spec = &deploy["spec"]["template"]["spec"];
    assert_eq!(spec["dnsPolicy"], "ClusterFirst", "{deploy}");
    assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(
        deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        "25%"
    );
}

#[tokio::test]
async fn kubectl_1_33_prints_upstreams_update_errors() {
    session(KUBECTL_133).await;
}

#[tokio::test]
async fn kubectl_1_27_prints_upstreams_update_errors() {
    session(KUBECTL_127).await;
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}],
            "activeDeadlineSeconds": 100,
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]}})
}

async fn put_spec(
    server: &capstan_apiserver::ApiServer,
    path: &str,
    change: impl FnOnce(&mut Value),
) -> (u16, Value) {
    let (code, mut current) = common::json(server, "GET", path, &Value::Null).await;
    assert_eq!(code, 200, "{current}");
    change(&mut current);
    common::json(server, "PUT", path, &current).await
}

fn first_cause(error: &Value) -> (String, String) {
    let cause = &error["details"]["causes"][0];
    (
        cause["field"].as_str().unwrap_or("").to_string(),
        cause["message"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn pod_updates_change_only_upstreams_mutable_fields() {
    let (server, _) = common::server().await;
    let (code, created) = common::json(&server, "POST", PODS, &pod("p")).await;
    assert_eq!(code, 201, "{created}");
    let path = format!("{PODS}/p");
    // Values Go does not tell from unset (false, empty lists) change nothing.
    let (code, body) = put_spec(&server, &path, |p| {
        p["spec"]["containers"][0]["stdin"] = json!(false);
        p["spec"]["readinessGates"] = json!([]);
    })
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = put_spec(&server, &path, |p| {
        p["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        p["spec"]["activeDeadlineSeconds"] = json!(50);
        p["spec"]["tolerations"][0]["tolerationSeconds"] = json!(30);
        if let Some(t) = p["spec"]["tolerations"].as_array_mut() {
            t.push(json!({"key": "new", "operator": "Exists"}));
        }
    })
    .await;
    assert_eq!(code, 200, "{body}");
    type Change = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(Change, &str, &str)> = vec![
        (
            Box::new(|p| p["spec"]["activeDeadlineSeconds"] = json!(80)),
            "spec.activeDeadlineSeconds",
            "Invalid value: 80: must be less than or equal to previous value",
        ),
        (
            Box::new(|p| {
                p["spec"]
                    .as_object_mut()
                    .map(|s| s.remove("activeDeadlineSeconds"));
            }),
            "spec.activeDeadlineSeconds",
            "Invalid value: null: must not update from a positive integer to nil value",
        ),
        (
            Box::new(|p| {
                p["spec"]["tolerations"] = json!([{"key": "new", "operator": "Exists"}]);
            }),
            "spec.tolerations",
            "Forbidden: existing toleration can not be modified except its tolerationSeconds",
        ),
        (
            Box::new(|p| p["spec"]["nodeName"] = json!("n1")),
            "spec",
            FORBIDDEN.trim_start_matches("spec: "),
        ),
        (
            Box::new(|p| p["spec"]["containers"][0]["name"] = json!("renamed")),
            "spec",
            FORBIDDEN.trim_start_matches("spec: "),
        ),
        (
            Box::new(|p| {
                if let Some(c) = p["spec"]["containers"].as_array_mut() {
                    c.push(json!({"name": "d", "image": "busybox"}));
                }
            }),
            "spec.containers",
            "Forbidden: pod updates may not add or remove containers",
        ),
    ];
    for (change, field, message) in cases {
        let (code, error) = put_spec(&server, &path, change).await;
        assert_eq!(code, 422, "{error}");
        assert_eq!(
            first_cause(&error),
            (field.to_string(), message.to_string())
        );
    }
    // A negative grace period may be raised to 1 (and to nothing else).
    let mut negative = pod("g");
    negative["spec"]["terminationGracePeriodSeconds"] = json!(-5);
    let (code, body) = common::json(&server, "POST", PODS, &negative).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = put_spec(&server, &format!("{PODS}/g"), |p| {
        p["spec"]["terminationGracePeriodSeconds"] = json!(2);
    })
    .await;
    assert_eq!(code, 422, "{body}");
    let (code, body) = put_spec(&server, &format!("{PODS}/g"), |p| {
        p["spec"]["terminationGracePeriodSeconds"] = json!(1);
    })
    .await;
    assert_eq!(code, 200, "{body}");
    // nodeName is the binding's to set.
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
        "target": {"kind": "Node", "name": "n1"}});
    let (code, body) = common::json(&server, "POST", &format!("{path}/binding"), &binding).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = put_spec(&server, &path, |p| p["spec"]["nodeName"] = json!("n2")).await;
    assert_eq!(code, 422, "{body}");
    let (code, body) = put_spec(&server, &path, |p| {
        p["metadata"]["labels"] = json!({"a": "b"});
    })
    .await;
    assert_eq!(code, 200, "labels still change: {body}");
}

fn apps(kind: &str, extra: Value) -> Value {
    let mut object = json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "w"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.27",
                    "ports": [{"containerPort": 80}]}]}}}});
    if let (Some(spec), Some(extra)) = (object["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    object
}

#[tokio::test]
async fn workload_selectors_and_statefulset_specs_are_immutable() {
    let (server, _) = common::server().await;
    for (kind, plural) in [
        ("Deployment", "deployments"),
        ("ReplicaSet", "replicasets"),
        ("DaemonSet", "daemonsets"),
        ("StatefulSet", "statefulsets"),
    ] {
        let base = format!("/apis/apps/v1/namespaces/default/{plural}");
        let (code, body) = common::json(&server, "POST", &base, &apps(kind, json!({}))).await;
        assert_eq!(code, 201, "{body}");
        let path = format!("{base}/w");
        let (code, error) = put_spec(&server, &path, |o| {
            o["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
            o["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
        })
        .await;
        assert_eq!(code, 422, "{kind}: {error}");
        if kind == "StatefulSet" {
            assert_eq!(first_cause(&error), ("spec".to_string(), "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".to_string()));
        } else {
            assert_eq!(first_cause(&error), ("spec.selector".to_string(), "Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"tier\":\"x\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable".to_string()), "{kind}");
        }
        // The template's image may change.
        let (code, body) = put_spec(&server, &path, |o| {
            o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        })
        .await;
        assert_eq!(code, 200, "{kind}: {body}");
        // The template has the Pod's spec defaults, not the Pod-only ones.
        let spec = &body["spec"]["template"]["spec"];
        assert_eq!(spec["restartPolicy"], "Always", "{kind}");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert!(spec.get("enableServiceLinks").is_none() && spec.get("priority").is_none());
        let container = &spec["containers"][0];
        assert_eq!(container["imagePullPolicy"], "IfNotPresent");
        assert_eq!(container["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(container["terminationMessagePolicy"], "File");
        assert_eq!(container["ports"][0]["protocol"], "TCP");
    }
    let sts = "/apis/apps/v1/namespaces/default/statefulsets/w";
    let (code, body) = put_spec(&server, sts, |o| o["spec"]["serviceName"] = json!("svc")).await;
    assert_eq!(code, 422, "{body}");
    let (code, body) = put_spec(&server, sts, |o| {
        o["spec"]["replicas"] = json!(3);
        o["spec"]["minReadySeconds"] = json!(5);
    })
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        body["spec"]["updateStrategy"]["rollingUpdate"]["partition"],
        0
    );
}

#[tokio::test]
async fn job_specs_are_immutable_but_while_suspended() {
    let (server, _) = common::server().await;
    let base = "/apis/batch/v1/namespaces/default/jobs";
    let job = |name: &str, suspend: bool| {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"suspend": suspend, "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}})
    };
    let (code, body) = common::json(&server, "POST", base, &job("j", false)).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        body["spec"]["template"]["spec"]["dnsPolicy"],
        "ClusterFirst"
    );
    let path = format!("{base}/j");
    let (code, error) = put_spec(&server, &path, |o| o["spec"]["completions"] = json!(3)).await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(
        first_cause(&error),
        (
            "spec.completions".to_string(),
            "Invalid value: 3: field is immutable".to_string()
        )
    );
    let (code, error) = put_spec(&server, &path, |o| {
        o["spec"]["template"]["spec"]["nodeSelector"] = json!({"zone": "a"});
    })
    .await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(first_cause(&error).0, "spec.template");
    let (code, error) = put_spec(&server, &path, |o| {
        o["spec"]["selector"]["matchLabels"]["extra"] = json!("x");
    })
    .await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(first_cause(&error).0, "spec.selector");
    // A suspended Job that never started may get new scheduling directives, not new images.
    let (code, body) = common::json(&server, "POST", base, &job("s", true)).await;
    assert_eq!(code, 201, "{body}");
    let path = format!("{base}/s");
    let (code, body) = put_spec(&server, &path, |o| {
        o["spec"]["template"]["spec"]["nodeSelector"] = json!({"zone": "a"});
    })
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = put_spec(&server, &path, |o| {
        o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("alpine");
    })
    .await;
    assert_eq!(code, 422, "{body}");
}

#[tokio::test]
async fn cronjob_and_podtemplate_templates_get_pod_defaults() {
    let (server, _) = common::server().await;
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
        "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
    let (code, body) = common::json(
        &server,
        "POST",
        "/apis/batch/v1/namespaces/default/cronjobs",
        &cron,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let spec = &body["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always", "{body}");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    let template = json!({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
        "template": {"spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}});
    let (code, body) = common::json(
        &server,
        "POST",
        "/api/v1/namespaces/default/podtemplates",
        &template,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        body["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(body["template"]["spec"]["restartPolicy"], "Always");
}

#[tokio::test]
async fn volumes_claims_and_storage_classes_as_upstream() {
    let (server, _) = common::server().await;
    let claims = "/api/v1/namespaces/default/persistentvolumeclaims";
    let bad = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
        "spec": {"resources": {}}});
    let (code, error) = common::json(&server, "POST", claims, &bad).await;
    assert_eq!(code, 422, "{error}");
    let fields: Vec<&str> = error["details"]["causes"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["spec.accessModes", "spec.resources[storage]"]);
    assert_eq!(
        error["details"]["causes"][0]["message"],
        "Required value: at least 1 access mode is required"
    );
    let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    let (code, body) = common::json(&server, "POST", claims, &claim).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["spec"]["volumeMode"], "Filesystem");
    let (code, error) = put_spec(&server, &format!("{claims}/c"), |o| {
        o["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    })
    .await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(first_cause(&error), ("spec".to_string(), "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims".to_string()));

    // A bound claim may grow, never shrink.
    let (code, body) = common::call(
        &server,
        "PATCH",
        &format!("{claims}/c/status"),
        "application/merge-patch+json",
        &json!({"status": {"phase": "Bound"}}).to_string(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = put_spec(&server, &format!("{claims}/c"), |o| {
        o["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    })
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, error) = put_spec(&server, &format!("{claims}/c"), |o| {
        o["spec"]["resources"]["requests"]["storage"] = json!("1Gi");
    })
    .await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(
        first_cause(&error),
        (
            "spec.resources.requests.storage".to_string(),
            "Forbidden: field can not be less than previous value".to_string()
        )
    );

    let volumes = "/api/v1/persistentvolumes";
    let none = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "v"},
        "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}});
    let (code, error) = common::json(&server, "POST", volumes, &none).await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(
        first_cause(&error),
        (
            "spec".to_string(),
            "Required value: must specify a volume type".to_string()
        )
    );
    let mut two = none.clone();
    two["spec"]["hostPath"] = json!({"path": "/tmp"});
    two["spec"]["nfs"] = json!({"server": "s", "path": "/"});
    let (code, error) = common::json(&server, "POST", volumes, &two).await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(first_cause(&error).0, "spec.nfs");
    let mut one = none.clone();
    one["spec"]["hostPath"] = json!({"path": "/tmp"});
    let (code, body) = common::json(&server, "POST", volumes, &one).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    let (code, error) = put_spec(&server, &format!("{volumes}/v"), |o| {
        o["spec"]["hostPath"]["path"] = json!("/other");
    })
    .await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(first_cause(&error).0, "spec.persistentvolumesource");

    let classes = "/apis/storage.k8s.io/v1/storageclasses";
    let class = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "s"}});
    let (code, error) = common::json(&server, "POST", classes, &class).await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(
        first_cause(&error),
        ("provisioner".to_string(), "Required value".to_string())
    );
    let mut class = class;
    class["provisioner"] = json!("example.com/p");
    let (code, body) = common::json(&server, "POST", classes, &class).await;
    assert_eq!(code, 201, "{body}");
    let (code, error) = put_spec(&server, &format!("{classes}/s"), |o| {
        o["provisioner"] = json!("other.com/p");
    })
    .await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(
        first_cause(&error),
        (
            "provisioner".to_string(),
            "Forbidden: updates to provisioner are forbidden.".to_string()
        )
    );
}

fn fields_and_messages(error: &Value) -> Vec<(String, String)> {
    error["details"]["causes"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| {
                    (
                        c["field"].as_str().unwrap_or("").to_string(),
                        c["message"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn ingresses_and_network_policies_as_upstream() {
    let (server, _) = common::server().await;
    let ingresses = "/apis/networking.k8s.io/v1/namespaces/default/ingresses";
    let bad = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"},
        "spec": {"rules": [{"host": "a.example.com", "http": {"paths": [
            {"path": "/", "backend": {"service": {"name": "web"}}},
            {"path": "x", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
    let (code, error) = common::json(&server, "POST", ingresses, &bad).await;
    assert_eq!(code, 422, "{error}");
    let got = fields_and_messages(&error);
    let want = [
        (
            "spec.rules[0].http.paths[0].pathType",
            "Required value: pathType must be specified",
        ),
        (
            "spec.rules[0].http.paths[0].backend.service.port",
            "Required value: port name or number is required",
        ),
        (
            "spec.rules[0].http.paths[1].path",
            "Invalid value: \"x\": must be an absolute path",
        ),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(f, m)| (f.to_string(), m.to_string()))
        .collect();
    assert_eq!(got, want);
    let good = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"},
        "spec": {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}});
    let (code, body) = common::json(&server, "POST", ingresses, &good).await;
    assert_eq!(code, 201, "{body}");

    let policies = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies";
    let bad = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "n"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Sideways"],
            "ingress": [{"ports": [{"protocol": "ICMP", "port": 80, "endPort": 70}],
                "from": [{}, {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}});
    let (code, error) = common::json(&server, "POST", policies, &bad).await;
    assert_eq!(code, 422, "{error}");
    let got = fields_and_messages(&error);
    let want = [
        (
            "spec.ingress[0].ports[0].protocol",
            "Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        ),
        (
            "spec.ingress[0].ports[0].endPort",
            "Invalid value: 70: must be greater than or equal to `port`",
        ),
        (
            "spec.ingress[0].from[0]",
            "Required value: must specify a peer",
        ),
        (
            "spec.ingress[0].from[1]",
            "Forbidden: may not specify both ipBlock and another peer",
        ),
        (
            "spec.policyTypes[1]",
            "Unsupported value: \"Sideways\": supported values: \"Egress\", \"Ingress\"",
        ),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(f, m)| (f.to_string(), m.to_string()))
        .collect();
    assert_eq!(got, want);
    let good = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "n"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": 80}], "from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}});
    let (code, body) = common::json(&server, "POST", policies, &good).await;
    assert_eq!(code, 201, "{body}");
}

#[tokio::test]
async fn templates_get_probe_and_volume_defaults() {
    let (server, _) = common::server().await;
    let mut deploy = apps("Deployment", json!({}));
    deploy["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] =
        json!({"httpGet": {"port": 80}});
    deploy["spec"]["template"]["spec"]["volumes"] =
        json!([{"name": "s", "secret": {"secretName": "x"}}]);
    let (code, body) = common::json(
        &server,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        &deploy,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let spec = &body["spec"]["template"]["spec"];
    assert_eq!(
        spec["containers"][0]["readinessProbe"],
        json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
            "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(spec["volumes"][0]["secret"]["defaultMode"], 420);
}

#[tokio::test]
async fn a_secrets_type_never_changes() {
    let (server, _) = common::server().await;
    let secrets = "/api/v1/namespaces/default/secrets";
    for (name, immutable) in [("s", false), ("i", true)] {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "immutable": immutable, "data": {"k": "dg=="}});
        let (code, body) = common::json(&server, "POST", secrets, &secret).await;
        assert_eq!(code, 201, "{body}");
        let (code, error) = put_spec(&server, &format!("{secrets}/{name}"), |o| {
            o["type"] = json!("example.com/other");
        })
        .await;
        assert_eq!(code, 422, "{error}");
        assert_eq!(
            first_cause(&error),
            (
                "type".to_string(),
                "Invalid value: \"example.com/other\": field is immutable".to_string()
            )
        );
    }
}

#[tokio::test]
async fn claims_and_claim_templates_get_upstreams_defaults() {
    let (server, _) = common::server().await;
    let claim = json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "1Gi"}}}});
    let mut sts = apps("StatefulSet", json!({}));
    sts["spec"]["volumeClaimTemplates"] = json!([claim]);
    let (code, body) = common::json(
        &server,
        "POST",
        "/apis/apps/v1/namespaces/default/statefulsets",
        &sts,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let template = &body["spec"]["volumeClaimTemplates"][0];
    assert_eq!(template["spec"]["volumeMode"], "Filesystem", "{body}");
    assert_eq!(template["status"]["phase"], "Pending");
    let mut claim = claim;
    claim["apiVersion"] = json!("v1");
    claim["kind"] = json!("PersistentVolumeClaim");
    let (code, body) = common::json(
        &server,
        "POST",
        "/api/v1/namespaces/default/persistentvolumeclaims",
        &claim,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["status"]["phase"], "Pending", "{body}");
}

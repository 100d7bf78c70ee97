//! kubectl 1.33 and 1.27 against a server on a loopback port, plain HTTP.

mod common;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// Runs kubectl; returns (success, stdout, stderr).
async fn kubectl(
    binary: &str,
    server: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    let output = capstan_testkit::kubectl::run(binary, server, args, stdin).await;
    (output.success, output.stdout, output.stderr)
}

async fn ok(binary: &str, server: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (success, out, err) = kubectl(binary, server, args, stdin).await;
    assert!(success, "kubectl {args:?} failed: {out}{err}");
    out
}

async fn fails(binary: &str, server: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (success, out, err) = kubectl(binary, server, args, stdin).await;
    assert!(!success, "kubectl {args:?} should fail: {out}");
    err
}

const CM: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  x: \"VALUE\"\n";

/// `validate` is kubectl's flag for commands reading files: both validate by default (1.27
/// downloads OpenAPI v2 as protobuf first, then leaves validation to the server).
async fn session(k: &str, validate: &str) {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let s = url.as_str();
    let resources = ok(k, s, &["api-resources"], None).await;
    for line in ["deployments", "endpointslices", "leases"] {
        assert!(resources.contains(line), "{resources}");
    }
    assert!(
        resources
            .lines()
            .any(|l| l.starts_with("pods") && l.contains("po ")),
        "{resources}"
    );
    let versions = ok(k, s, &["api-versions"], None).await;
    assert!(
        versions.contains("apps/v1") && versions.contains("coordination.k8s.io/v1"),
        "{versions}"
    );
    let ns = ok(k, s, &["get", "ns"], None).await;
    assert!(ns.contains("kube-system") && ns.contains("Active"), "{ns}");

    ok(
        k,
        s,
        &["apply", validate, "-f", "-"],
        Some(&CM.replace("VALUE", "1")),
    )
    .await;
    ok(
        k,
        s,
        &["apply", validate, "-f", "-"],
        Some(&CM.replace("VALUE", "2")),
    )
    .await;
    let x = ok(
        k,
        s,
        &["get", "cm", "applied", "-o", "jsonpath={.data.x}"],
        None,
    )
    .await;
    assert_eq!(x, "2", "apply updated the configmap");
    ok(k, s, &["label", "cm", "applied", "tier=web"], None).await;
    ok(k, s, &["annotate", "cm", "applied", "note=hi"], None).await;
    let columns = ok(
        k,
        s,
        &[
            "get",
            "cm",
            "applied",
            "-o",
            "custom-columns=NAME:.metadata.name,TIER:.metadata.labels.tier,NOTE:.metadata.annotations.note",
        ],
        None,
    )
    .await;
    let rows: Vec<Vec<&str>> = columns
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [vec!["NAME", "TIER", "NOTE"], vec!["applied", "web", "hi"]],
        "{columns}"
    );
    ok(
        k,
        s,
        &[
            "patch",
            "cm",
            "applied",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"y":"3"}}"#,
        ],
        None,
    )
    .await;
    ok(
        k,
        s,
        &[
            "patch",
            "cm",
            "applied",
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/data/x"}]"#,
        ],
        None,
    )
    .await;
    let json = ok(k, s, &["get", "cm", "applied", "-o", "json"], None).await;
    let object: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    assert_eq!(object["metadata"]["labels"]["tier"], "web", "{json}");
    assert_eq!(object["metadata"]["annotations"]["note"], "hi");
    assert_eq!(object["data"], serde_json::json!({"y": "3"}));
    let yaml = ok(k, s, &["get", "cm", "applied", "-o", "yaml"], None).await;
    assert!(yaml.contains("tier: web"), "{yaml}");
    let selected = ok(k, s, &["get", "cm", "-l", "tier=web", "-o", "name"], None).await;
    assert_eq!(selected.trim(), "configmap/applied");
    let table = ok(k, s, &["get", "cm"], None).await;
    assert!(
        table.starts_with("NAME") && table.contains("applied"),
        "{table}"
    );

    let missing = fails(k, s, &["get", "cm", "nope"], None).await;
    assert!(
        missing.contains("Error from server (NotFound): configmaps \"nope\" not found"),
        "{missing}"
    );
    let pod =
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n";
    let invalid = fails(k, s, &["create", validate, "-f", "-"], Some(pod)).await;
    assert!(
        invalid.contains("is invalid: spec.containers[0].image: Required value"),
        "{invalid}"
    );

    // A stale resourceVersion in a replace is a Conflict.
    let stale = json.replace(
        &format!(
            "\"resourceVersion\": {}",
            object["metadata"]["resourceVersion"]
        ),
        "\"resourceVersion\": \"1\"",
    );
    let conflict = fails(k, s, &["replace", validate, "-f", "-"], Some(&stale)).await;
    assert!(
        conflict.contains("the object has been modified; please apply your changes"),
        "{conflict}"
    );

    ok(k, s, &["delete", "cm", "applied"], None).await;
    let after = kubectl(k, s, &["get", "cm", "applied"], None).await;
    assert!(
        !after.0 && after.2.contains("NotFound"),
        "deleted: {after:?}"
    );
}

#[tokio::test]
async fn kubectl_1_33() {
    session(KUBECTL_133, "--validate=strict").await;
}

#[tokio::test]
async fn kubectl_1_27() {
    session(KUBECTL_127, "--validate=true").await;
}

#[tokio::test]
async fn kubectl_get_pods_watch_sees_a_new_pod() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let Ok(home_dir) = tempfile::tempdir() else {
        panic!("cannot make a temporary home")
    };
    let home = home_dir.path();
    let mut watch = Command::new(KUBECTL_133);
    watch
        .args(["--server", &url, "get", "pods", "-w"])
        .env("HOME", home)
        .env("KUBECONFIG", home.join("none"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let Ok(mut child) = watch.spawn() else {
        panic!("cannot run kubectl")
    };
    let Some(stdout) = child.stdout.take() else {
        panic!("no stdout")
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: watched\nspec:\n  containers:\n  - name: c\n    image: busybox\n";
    // Created once the watch is up: kubectl prints "No resources found" first or nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok(KUBECTL_133, &url, &["create", "-f", "-"], Some(pod)).await;
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("watched") && line.contains("Pending") {
                return true;
            }
        }
        false
    })
    .await;
    let _ = child.kill().await;
    let _ = child.wait().await;
    assert_eq!(seen, Ok(true), "kubectl get -w printed the pod");
}

fn parse(json: &str) -> serde_json::Value {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"))
}

/// kubectl 1.33's typed `create` commands send protobuf bodies; each creates the object that
/// `get -o json` shows with the fields the command set.
#[tokio::test]
async fn kubectl_typed_creates_send_protobuf() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let (k, s) = (KUBECTL_133, url.as_str());
    let get = |what: &'static str| async move {
        parse(&ok(k, s, &["get", what, "-o", "json"], None).await)
    };

    ok(
        k,
        s,
        &[
            "create",
            "configmap",
            "c",
            "--from-literal=a=1",
            "--from-literal=b=2",
        ],
        None,
    )
    .await;
    assert_eq!(
        get("cm/c").await["data"],
        serde_json::json!({"a": "1", "b": "2"})
    );
    ok(
        k,
        s,
        &["create", "secret", "generic", "g", "--from-literal=p=q"],
        None,
    )
    .await;
    let g = get("secret/g").await;
    // kubectl leaves `type` unset; kube-apiserver would default it to Opaque (not done here yet).
    assert_eq!(g["data"]["p"], "cQ==", "{g}");
    ok(
        k,
        s,
        &[
            "create",
            "secret",
            "docker-registry",
            "d",
            "--docker-username=u",
            "--docker-password=p",
            "--docker-server=r.io",
        ],
        None,
    )
    .await;
    let d = get("secret/d").await;
    assert_eq!(d["type"], "kubernetes.io/dockerconfigjson");
    assert!(d["data"][".dockerconfigjson"].is_string(), "{d}");
    ok(k, s, &["create", "namespace", "n1"], None).await;
    assert_eq!(get("ns/n1").await["metadata"]["name"], "n1");
    ok(k, s, &["create", "serviceaccount", "sa"], None).await;
    assert_eq!(get("sa/sa").await["metadata"]["namespace"], "default");
    ok(
        k,
        s,
        &["create", "service", "clusterip", "web", "--tcp=80:8080"],
        None,
    )
    .await;
    let svc = get("svc/web").await;
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["selector"]["app"], "web");
    ok(
        k,
        s,
        &[
            "create",
            "service",
            "nodeport",
            "np",
            "--tcp=81:8081",
            "--node-port=30081",
        ],
        None,
    )
    .await;
    let np = get("svc/np").await;
    assert_eq!(
        (
            np["spec"]["type"].as_str(),
            np["spec"]["ports"][0]["nodePort"].as_i64()
        ),
        (Some("NodePort"), Some(30081))
    );
    ok(
        k,
        s,
        &[
            "create",
            "deployment",
            "app",
            "--image=nginx:1",
            "--port=80",
            "--replicas=3",
            "--",
            "sleep",
            "9",
        ],
        None,
    )
    .await;
    let deploy = get("deploy/app").await;
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(deploy["spec"]["selector"]["matchLabels"]["app"], "app");
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1");
    assert_eq!(container["ports"][0]["containerPort"], 80);
    assert_eq!(container["command"], serde_json::json!(["sleep", "9"]));
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["labels"]["app"],
        "app"
    );
    ok(
        k,
        s,
        &["create", "job", "j", "--image=busybox", "--", "echo", "hi"],
        None,
    )
    .await;
    let job = get("job/j").await;
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["echo", "hi"])
    );
    ok(
        k,
        s,
        &[
            "create",
            "priorityclass",
            "high",
            "--value=1000",
            "--description=d",
        ],
        None,
    )
    .await;
    let pc = get("priorityclass/high").await;
    assert_eq!(
        (pc["value"].as_i64(), pc["description"].as_str()),
        (Some(1000), Some("d"))
    );
    ok(
        k,
        s,
        &["create", "quota", "q", "--hard=cpu=500m,pods=2"],
        None,
    )
    .await;
    assert_eq!(
        get("quota/q").await["spec"]["hard"],
        serde_json::json!({"cpu": "500m", "pods": "2"})
    );
    ok(
        k,
        s,
        &["create", "role", "r", "--verb=get,list", "--resource=pods"],
        None,
    )
    .await;
    let role = get("role/r").await;
    assert_eq!(
        role["rules"][0]["verbs"],
        serde_json::json!(["get", "list"])
    );
    ok(
        k,
        s,
        &["create", "rolebinding", "rb", "--role=r", "--user=bob"],
        None,
    )
    .await;
    let rb = get("rolebinding/rb").await;
    assert_eq!(
        (
            rb["roleRef"]["name"].as_str(),
            rb["subjects"][0]["name"].as_str()
        ),
        (Some("r"), Some("bob"))
    );
    ok(
        k,
        s,
        &[
            "create",
            "clusterrole",
            "cr",
            "--verb=get",
            "--resource=nodes",
        ],
        None,
    )
    .await;
    assert_eq!(
        get("clusterrole/cr").await["rules"][0]["resources"],
        serde_json::json!(["nodes"])
    );
    ok(
        k,
        s,
        &[
            "create",
            "clusterrolebinding",
            "crb",
            "--clusterrole=cr",
            "--group=devs",
        ],
        None,
    )
    .await;
    assert_eq!(
        get("clusterrolebinding/crb").await["subjects"][0]["kind"],
        "Group"
    );
}

/// kubectl 1.27 validates `apply -f`, `create -f` and `replace -f` by default: it reads
/// `/openapi/v2` (protobuf) and leaves the check to the server, which refuses unknown fields.
#[tokio::test]
async fn kubectl_1_27_validates_without_flags() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let (k, s) = (KUBECTL_127, url.as_str());
    ok(k, s, &["apply", "-f", "-"], Some(&CM.replace("VALUE", "1"))).await;
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: d}\n  template:\n    metadata:\n      labels: {app: d}\n    spec:\n      containers:\n      - name: c\n        image: nginx\n";
    ok(k, s, &["create", "-f", "-"], Some(deploy)).await;
    ok(
        k,
        s,
        &["apply", "-f", "-"],
        Some(&deploy.replace("replicas: 1", "replicas: 2")),
    )
    .await;
    let replicas = ok(
        k,
        s,
        &["get", "deploy", "d", "-o", "jsonpath={.spec.replicas}"],
        None,
    )
    .await;
    assert_eq!(replicas, "2");
    let wrong = CM
        .replace("data:", "bogus: 1\ndata:")
        .replace("applied", "wrong");
    let refused = fails(k, s, &["create", "-f", "-"], Some(&wrong)).await;
    assert!(
        refused.contains("strict decoding error: unknown field \"bogus\""),
        "{refused}"
    );
    let nested = deploy.replace("image: nginx", "image: nginx\n        imagee: typo");
    let refused = fails(
        k,
        s,
        &["apply", "-f", "-"],
        Some(&nested.replace("name: d\n", "name: e\n")),
    )
    .await;
    assert!(
        refused.contains("unknown field \"spec.template.spec.containers[0].imagee\""),
        "{refused}"
    );
    let absent = kubectl(k, s, &["get", "cm", "wrong"], None).await;
    assert!(!absent.0, "the refused configmap was not stored");
}

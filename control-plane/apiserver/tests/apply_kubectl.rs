//! Server-side apply and field management through kubectl 1.27 and 1.33: `apply
//! --server-side` creates, updates and prunes, conflicts print upstream's text and
//! `--force-conflicts` wins, managedFields name the managers of client-side apply, edit and
//! the three patch types.

mod common;

use serde_json::Value;

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// One kubectl binary against one server, with its own HOME in a tempdir.
struct Kubectl {
    binary: &'static str,
    server: String,
    home: tempfile::TempDir,
}

impl Kubectl {
    fn new(binary: &'static str, server: &str) -> Kubectl {
        let home = match tempfile::tempdir() {
            Ok(home) => home,
            Err(error) => panic!("tempdir: {error}"),
        };
        Kubectl {
            binary,
            server: server.to_string(),
            home,
        }
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    async fn run(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> (bool, String, String) {
        let output = capstan_testkit::kubectl::Kubectl::server(self.binary, &self.server)
            .home(self.home.path())
            .envs(env)
            .stdin(stdin)
            .run(args)
            .await;
        (output.success, output.stdout, output.stderr)
    }

    async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (success, out, err) = self.run(args, stdin, &[]).await;
        assert!(success, "{} {args:?} failed: {out}{err}", self.binary);
        out
    }

    async fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (success, out, err) = self.run(args, stdin, &[]).await;
        assert!(!success, "{} {args:?} should fail: {out}", self.binary);
        err
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json", "--show-managed-fields"]);
        let out = self.ok(&all, None).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

/// (manager, operation) of each managedFields entry.
fn managers(object: &Value) -> Vec<(String, String)> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or("").to_string(),
                        e["operation"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn fields_of<'a>(object: &'a Value, manager: &str, operation: &str) -> &'a Value {
    object["metadata"]["managedFields"]
        .as_array()
        .and_then(|entries| {
            entries
                .iter()
                .find(|e| e["manager"] == manager && e["operation"] == operation)
        })
        .map(|e| &e["fieldsV1"])
        .unwrap_or(&Value::Null)
}

const CM: &str =
    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssa\ndata:\n  a: \"1\"\nEXTRA";

fn deployment(replicas: u32, with_env: bool) -> String {
    let env = if with_env {
        "        env:\n        - name: MODE\n          value: fast\n"
    } else {
        ""
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: nginx\n        image: nginx:1.27\n        ports:\n        - containerPort: 80\n{env}"
    )
}

async fn server_side(k: &Kubectl) {
    // A ConfigMap: created, then a key dropped from the file goes from the object.
    k.ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&CM.replace("EXTRA", "  b: \"2\"\n")),
    )
    .await;
    let cm = k.json(&["get", "cm", "ssa"]).await;
    assert_eq!(cm["data"], serde_json::json!({"a": "1", "b": "2"}), "{cm}");
    assert_eq!(managers(&cm), vec![("kubectl".into(), "Apply".into())]);
    assert_eq!(
        fields_of(&cm, "kubectl", "Apply"),
        &serde_json::json!({"f:data": {"f:a": {}, "f:b": {}}})
    );
    let yaml = k
        .ok(
            &["get", "cm", "ssa", "-o", "yaml", "--show-managed-fields"],
            None,
        )
        .await;
    for line in [
        "managedFields:",
        "manager: kubectl",
        "operation: Apply",
        "fieldsType: FieldsV1",
    ] {
        assert!(yaml.contains(line), "{line}: {yaml}");
    }
    k.ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&CM.replace("EXTRA", "")),
    )
    .await;
    let cm = k.json(&["get", "cm", "ssa"]).await;
    assert_eq!(cm["data"], serde_json::json!({"a": "1"}), "{cm}");

    // A server dry run answers as if applied and stores nothing.
    let dry = k
        .ok(
            &["apply", "--server-side", "--dry-run=server", "-f", "-"],
            Some(&CM.replace("name: ssa", "name: dry").replace("EXTRA", "")),
        )
        .await;
    assert!(
        dry.contains("configmap/dry serverside-applied (server dry run)"),
        "{dry}"
    );
    let missing = k.fails(&["get", "cm", "dry"], None).await;
    assert!(missing.contains("NotFound"), "{missing}");

    // A Deployment: created, the env list item dropped from the file goes.
    k.ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&deployment(2, true)),
    )
    .await;
    let web = k.json(&["get", "deploy", "web"]).await;
    assert_eq!(web["spec"]["replicas"], 2);
    let container = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["env"][0]["name"], "MODE", "{web}");
    let owned = fields_of(&web, "kubectl", "Apply");
    let nginx = &owned["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"];
    assert!(
        nginx["f:ports"]
            .get("k:{\"containerPort\":80,\"protocol\":\"TCP\"}")
            .is_some(),
        "{owned}"
    );
    k.ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&deployment(2, false)),
    )
    .await;
    let web = k.json(&["get", "deploy", "web"]).await;
    let container = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container.get("env"), None, "{web}");
    assert_eq!(container["image"], "nginx:1.27");

    // Another manager changes replicas: applying a different value conflicts.
    k.ok(
        &[
            "patch",
            "deploy",
            "web",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"replicas":5}}"#,
        ],
        None,
    )
    .await;
    let conflict = k
        .fails(
            &["apply", "--server-side", "-f", "-"],
            Some(&deployment(3, false)),
        )
        .await;
    assert!(
        conflict.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl-patch\" using apps/v1: .spec.replicas"
        ),
        "{conflict}"
    );
    let web = k.json(&["get", "deploy", "web"]).await;
    assert_eq!(web["spec"]["replicas"], 5, "a conflict changes nothing");
    k.ok(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&deployment(3, false)),
    )
    .await;
    let web = k.json(&["get", "deploy", "web"]).await;
    assert_eq!(web["spec"]["replicas"], 3);
    let owned = fields_of(&web, "kubectl", "Apply");
    assert!(owned["f:spec"].get("f:replicas").is_some(), "{web}");
    let patched = fields_of(&web, "kubectl-patch", "Update");
    assert!(
        patched.is_null() || patched["f:spec"].get("f:replicas").is_none(),
        "forced: kubectl-patch lost replicas: {web}"
    );
}

async fn other_writers(k: &Kubectl) {
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: csa\ndata:\n  x: old\n";
    k.ok(&["apply", "-f", "-"], Some(cm)).await;
    k.ok(&["apply", "-f", "-"], Some(&cm.replace("old", "older")))
        .await;
    let object = k.json(&["get", "cm", "csa"]).await;
    assert_eq!(object["data"]["x"], "older");
    assert_eq!(
        managers(&object),
        vec![("kubectl-client-side-apply".into(), "Update".into())]
    );
    assert_eq!(
        fields_of(&object, "kubectl-client-side-apply", "Update")["f:data"],
        serde_json::json!({".": {}, "f:x": {}})
    );

    // Server-side apply over client-side apply: a changed field conflicts with the
    // client-side manager; once it agrees, kubectl migrates the client-side entry to itself.
    let conflict = k
        .fails(
            &["apply", "--server-side", "-f", "-"],
            Some(&cm.replace("old", "newer")),
        )
        .await;
    assert!(
        conflict.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .data.x"
        ),
        "{conflict}"
    );
    k.ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&cm.replace("old", "older")),
    )
    .await;
    let object = k.json(&["get", "cm", "csa"]).await;
    assert_eq!(object["data"]["x"], "older", "{object}");
    assert!(
        object["metadata"]["annotations"]
            .get("kubectl.kubernetes.io/last-applied-configuration")
            .is_some(),
        "{object}"
    );
    assert_eq!(
        managers(&object),
        vec![
            ("kubectl".into(), "Apply".into()),
            ("kubectl-last-applied".into(), "Apply".into())
        ],
        "kubectl migrated the client-side manager"
    );
    // Client-side apply again, from the configuration kubectl keeps in the annotation.
    k.ok(&["apply", "-f", "-"], Some(&cm.replace("old", "older")))
        .await;

    let editor = "sed -i s/older/edited/";
    let (success, out, err) = k
        .run(&["edit", "cm", "csa"], None, &[("EDITOR", editor)])
        .await;
    assert!(success, "edit: {out}{err}");
    for (kind, patch) in [
        ("json", r#"[{"op":"add","path":"/data/j","value":"1"}]"#),
        ("merge", r#"{"data":{"m":"1"}}"#),
        ("strategic", r#"{"data":{"s":"1"}}"#),
    ] {
        k.ok(&["patch", "cm", "csa", "--type", kind, "-p", patch], None)
            .await;
    }
    let object = k.json(&["get", "cm", "csa"]).await;
    assert_eq!(object["data"]["x"], "edited", "{object}");
    let names = managers(&object);
    for manager in ["kubectl-edit", "kubectl-patch"] {
        assert!(
            names.contains(&(manager.to_string(), "Update".to_string())),
            "{manager}: {names:?}"
        );
    }
    let by_patch = &fields_of(&object, "kubectl-patch", "Update")["f:data"];
    for key in ["f:j", "f:m", "f:s"] {
        assert!(by_patch.get(key).is_some(), "{key}: {object}");
    }
    assert!(
        fields_of(&object, "kubectl-edit", "Update")["f:data"]
            .get("f:x")
            .is_some()
    );
    // The default output hides them, as upstream's kubectl does.
    let plain = k.ok(&["get", "cm", "csa", "-o", "yaml"], None).await;
    assert!(!plain.contains("managedFields"), "{plain}");
}

async fn session(binary: &'static str) {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let k = Kubectl::new(binary, &url);
    server_side(&k).await;
    other_writers(&k).await;
}

#[tokio::test]
async fn kubectl_133_server_side_apply_and_managers() {
    session(KUBECTL_133).await;
}

#[tokio::test]
async fn kubectl_127_server_side_apply_and_managers() {
    session(KUBECTL_127).await;
}

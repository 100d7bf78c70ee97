//! CustomResourceDefinitions end to end: kubectl 1.33 and 1.27 apply a definition and use its
//! custom objects at once (validation naming the field, pruning, Strict, defaults, printer
//! columns, status and scale subresources, discovery, deletion); kube-rs `DynamicObject`s; a
//! second API server on the same store serving the definition without a restart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use capstan_apiserver::{ApiServer, Config};
use capstan_store::memory::MemoryStore;
use capstan_store::{ListOptions, Store};
use serde_json::{Value, json};
use tokio::process::Command;

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// Runs kubectl with its own HOME and cache under `home`; returns (success, stdout, stderr).
async fn kubectl(
    binary: &str,
    home: &std::path::Path,
    server: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    let output = capstan_testkit::kubectl::Kubectl::server(binary, server)
        .home(home)
        .stdin(stdin)
        .run(args)
        .await;
    (output.success, output.stdout, output.stderr)
}

const WIDGETS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
    additionalPrinterColumns:
    - name: Size
      type: integer
      jsonPath: .spec.size
    - name: Color
      type: string
      jsonPath: .spec.color
      priority: 1
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
              replicas: {type: integer, default: 1}
              color: {type: string, default: blue, enum: [red, blue]}
          status:
            type: object
            properties:
              replicas: {type: integer}
"#;

fn widget(name: &str, spec: &str) -> String {
    format!("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\nspec:\n{spec}\n")
}

struct Session<'a> {
    k: &'a str,
    home: tempfile::TempDir,
    url: String,
}

impl Session<'_> {
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        kubectl(self.k, self.home.path(), &self.url, args, stdin).await
    }

    async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (success, out, err) = self.run(args, stdin).await;
        assert!(success, "{} {args:?} failed: {out}{err}", self.k);
        out
    }

    /// `kubectl get widget w1 -o <output>`.
    async fn w1(&self, output: &str) -> String {
        self.ok(&["get", "widget", "w1", "-o", output], None).await
    }

    async fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (success, out, err) = self.run(args, stdin).await;
        assert!(!success, "{} {args:?} should fail: {out}", self.k);
        err
    }
}

async fn session(k: &str, validate: &str) {
    let (server, store) = common::server().await;
    let server_for_checks = Arc::clone(&server);
    let url = common::listen(server).await;
    let Ok(home) = tempfile::tempdir() else {
        panic!("tempdir")
    };
    let s = Session { k, home, url };

    s.ok(&["apply", validate, "-f", "-"], Some(WIDGETS)).await;
    // Served at once: no wait between the definition and its objects.
    let (listed, out, err) = s.run(&["get", "widgets"], None).await;
    assert!(listed && out.is_empty(), "{out}{err}");
    assert!(
        err.contains("No resources found in default namespace."),
        "{err}"
    );
    s.ok(
        &["apply", validate, "-f", "-"],
        Some(&widget("w1", "  size: 1")),
    )
    .await;
    // A second apply is a patch of the custom object.
    s.ok(
        &["apply", validate, "-f", "-"],
        Some(&widget("w1", "  size: 3")),
    )
    .await;

    let invalid = s
        .fails(
            &["create", validate, "-f", "-"],
            Some(&widget("bad", "  size: big")),
        )
        .await;
    assert!(
        invalid.contains(r#"The Widget "bad" is invalid: spec.size: Invalid value: "string": spec.size in body must be of type integer: "string""#),
        "{invalid}"
    );
    let missing = s
        .fails(
            &["create", validate, "-f", "-"],
            Some(&widget("nosize", "  color: red")),
        )
        .await;
    assert!(
        missing.contains(r#"The Widget "nosize" is invalid: spec.size: Required value"#),
        "{missing}"
    );
    let small = s
        .fails(
            &["create", validate, "-f", "-"],
            Some(&widget("small", "  size: 0\n  color: pink")),
        )
        .await;
    assert!(
        small.contains(r#"spec.color: Unsupported value: "pink": supported values: "red", "blue""#)
            && small.contains("spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"),
        "{small}"
    );

    // Unknown fields: refused under Strict, pruned otherwise.
    let extra = widget("w2", "  size: 2\n  foo: bar");
    let strict = s
        .fails(&["create", "--validate=strict", "-f", "-"], Some(&extra))
        .await;
    assert!(strict.contains(r#"unknown field "spec.foo""#), "{strict}");
    s.ok(&["create", "--validate=false", "-f", "-"], Some(&extra))
        .await;
    let (made, _, warned) = s
        .run(
            &["create", "--validate=warn", "-f", "-"],
            Some(&widget("w3", "  size: 2\n  bar: 1")),
        )
        .await;
    assert!(
        made && warned.contains(r#"Warning: unknown field "spec.bar""#),
        "{warned}"
    );
    let spec = s
        .ok(&["get", "widget", "w2", "-o", "jsonpath={.spec}"], None)
        .await;
    let spec: Value = serde_json::from_str(&spec).unwrap_or_default();
    assert_eq!(
        spec,
        json!({"size": 2, "replicas": 1, "color": "blue"}),
        "pruned and defaulted"
    );

    // Printer columns: priority 0 by default, all of them in -o wide.
    let table = s.ok(&["get", "widgets"], None).await;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "SIZE", "AGE"], "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("w1") && l.contains(" 3 ")),
        "{table}"
    );
    let wide = s.ok(&["get", "wd", "-o", "wide"], None).await;
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "SIZE", "COLOR", "AGE"], "{wide}");
    assert!(
        wide.lines()
            .any(|l| l.starts_with("w1") && l.contains("blue")),
        "{wide}"
    );

    // The status subresource: the main resource ignores status, /status only changes it.
    assert_eq!(
        s.w1("jsonpath={.status}").await,
        "",
        "created without status"
    );
    let status = r#"{"status":{"replicas":5}}"#;
    s.ok(
        &["patch", "widget", "w1", "--type=merge", "-p", status],
        None,
    )
    .await;
    assert_eq!(s.w1("jsonpath={.status.replicas}").await, "");
    s.ok(
        &[
            "patch",
            "widget",
            "w1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"replicas":5},"spec":{"size":9}}"#,
        ],
        None,
    )
    .await;
    assert_eq!(s.w1("jsonpath={.status.replicas}").await, "5");
    assert_eq!(s.w1("jsonpath={.spec.size}").await, "3");
    assert_eq!(s.w1("jsonpath={.metadata.generation}").await, "2");
    s.ok(
        &[
            "patch",
            "widget",
            "w1",
            "--type=merge",
            "-p",
            r#"{"spec":{"size":4}}"#,
        ],
        None,
    )
    .await;
    assert_eq!(s.w1("jsonpath={.metadata.generation}").await, "3");

    // The scale subresource.
    let scaled = s.ok(&["scale", "widget", "w1", "--replicas=7"], None).await;
    assert!(scaled.contains("widget.example.com/w1 scaled"), "{scaled}");
    assert_eq!(s.w1("jsonpath={.spec.replicas}").await, "7");

    // Discovery: the resource, its short name, and the `all` category.
    let resources = s
        .ok(&["api-resources", "--api-group=example.com"], None)
        .await;
    let row: Vec<&str> = resources
        .lines()
        .find(|l| l.starts_with("widgets"))
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        ["widgets", "wd", "example.com/v1", "true", "Widget"],
        "{resources}"
    );
    let all = s.ok(&["get", "all"], None).await;
    assert!(all.contains("widget.example.com/w1"), "{all}");
    let crd = s
        .ok(&["get", "crd", "widgets.example.com", "-o", "json"], None)
        .await;
    let crd: Value = serde_json::from_str(&crd).unwrap_or_default();
    let established = crd["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    });
    assert!(established, "{crd}");
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget");
    let crds = s.ok(&["get", "crds"], None).await;
    let header: Vec<&str> = crds
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "CREATED", "AT"], "{crds}");
    assert!(
        crds.contains("widgets.example.com   20"),
        "a timestamp: {crds}"
    );

    // Deleting the definition deletes its objects, then stops serving them.
    s.ok(&["delete", "crd", "widgets.example.com"], None).await;
    let left = store
        .list("/registry/example.com/widgets/", ListOptions::default())
        .await
        .map(|page| page.items.len());
    assert_eq!(left, Ok(0));
    let gone = s.fails(&["get", "widgets"], None).await;
    // kubectl's cached discovery still names the resource: the list is then a 404.
    assert!(
        gone.contains("the server could not find the requested resource")
            || gone.contains(r#"the server doesn't have a resource type "widgets""#),
        "{gone}"
    );
    let (code, _) = common::call(&server_for_checks, "GET", "/apis/example.com/v1", "", "").await;
    assert_eq!(code, 404, "the group is no longer served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_133_uses_a_definition_at_once() {
    session(KUBECTL_133, "--validate=strict").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_127_uses_a_definition_at_once() {
    session(KUBECTL_127, "--validate=true").await;
}

fn definition(group: &str, kind: &str, plural: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": plural, "kind": kind},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}},
            }}}],
        },
    })
}

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

#[tokio::test]
async fn broken_definitions_are_refused_naming_the_field() {
    let (server, _) = common::server().await;
    let mut crd = definition("example", "Gadget", "gadgets");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] =
        json!({"properties": {"spec": {"properties": {"size": {"type": "integer"}}}}});
    let (code, status) = common::json(&server, "POST", CRDS, &crd).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["message"],
        "CustomResourceDefinition.apiextensions.k8s.io \"gadgets.example\" is invalid: [\
         spec.group: Invalid value: \"example\": should be a domain with at least one dot, \
         spec.versions[0].schema.openAPIV3Schema.type: Required value: must not be empty at the root, \
         spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields]"
    );
    let fields: Vec<&str> = status["details"]["causes"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(fields[0], "spec.group");

    let mut renamed = definition("example.com", "Gadget", "gadgets");
    renamed["metadata"]["name"] = json!("other.example.com");
    renamed["spec"]["versions"][0]["storage"] = json!(false);
    let (code, status) = common::json(&server, "POST", CRDS, &renamed).await;
    assert_eq!(code, 422);
    let message = status["message"].as_str().unwrap_or("");
    assert!(message.contains("metadata.name: Invalid value: \"other.example.com\": must be spec.names.plural+\".\"+spec.group"), "{message}");
    assert!(
        message.contains("must have exactly one version marked as storage version"),
        "{message}"
    );

    let mut cel = definition("example.com", "Gadget", "gadgets");
    cel["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"] =
        json!([{"rule": "self.spec.size > 0"}]);
    let (code, status) = common::json(&server, "POST", CRDS, &cel).await;
    assert_eq!(code, 422);
    assert!(
        status["message"].as_str().unwrap_or("").contains(
            "x-kubernetes-validations: Forbidden: CEL validation rules are not supported"
        ),
        "{status}"
    );

    let mut webhook = definition("example.com", "Gadget", "gadgets");
    webhook["spec"]["conversion"] = json!({"strategy": "Webhook"});
    let (code, status) = common::json(&server, "POST", CRDS, &webhook).await;
    assert_eq!(code, 422);
    assert!(
        status["message"].as_str().unwrap_or("").contains(
            "spec.conversion.strategy: Forbidden: Webhook conversion is not supported by this server (capstan)"
        ),
        "{status}"
    );

    // Nothing half-made: the group is not served.
    let (code, _) = common::call(&server, "GET", "/apis/example.com/v1", "", "").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_second_server_on_the_store_serves_the_definition_without_a_restart() {
    let store = Arc::new(MemoryStore::new());
    let shared: Arc<dyn Store> = store.clone();
    let Ok(first) = ApiServer::new(Arc::clone(&shared), Config::default()).await else {
        panic!("first server")
    };
    let Ok(second) = ApiServer::new(shared, Config::default()).await else {
        panic!("second server")
    };
    let gadgets = "/apis/example.com/v1/namespaces/default/gadgets";
    let (code, _) = common::call(&second, "GET", gadgets, "", "").await;
    assert_eq!(code, 404, "not served before the definition");
    let (code, created) = common::json(
        &first,
        "POST",
        CRDS,
        &definition("example.com", "Gadget", "gadgets"),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let gadget = json!({"apiVersion": "example.com/v1", "kind": "Gadget",
                        "metadata": {"name": "g"}, "spec": {"size": 1}});
    let mut answered = (0, Value::Null);
    let started = std::time::Instant::now();
    for _ in 0..2000 {
        answered = common::json(&second, "POST", gadgets, &gadget).await;
        if answered.0 != 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(answered.0, 201, "{}", answered.1);
    eprintln!(
        "the second server served the definition {:?} after the first stored it",
        started.elapsed()
    );
    let (code, listed) = common::call(&first, "GET", gadgets, "", "").await;
    assert_eq!(
        (code, listed["items"][0]["metadata"]["name"].clone()),
        (200, json!("g"))
    );
    let (code, stored) = common::json(&first, "GET", &format!("{gadgets}/g"), &Value::Null).await;
    assert_eq!(code, 200);
    assert_eq!(stored["apiVersion"], "example.com/v1");
    let raw = store.get("/registry/example.com/gadgets/default/g").await;
    assert!(
        matches!(raw, Ok(Some(_))),
        "stored under /registry/<group>/<plural>/"
    );
}

async fn kube_client(url: &str) -> kube::Client {
    let Ok(uri) = url.parse() else { panic!("url") };
    match kube::Client::try_from(kube::Config::new(uri)) {
        Ok(client) => client,
        Err(error) => panic!("client: {error}"),
    }
}

#[tokio::test]
async fn kube_rs_dynamic_objects_of_a_new_definition() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{
        Api, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    };

    let (server, _) = common::server().await;
    let client = kube_client(&common::listen(server).await).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = definition("example.com", "Gadget", "gadgets");
    let crd: CustomResourceDefinition = match serde_json::from_value(crd) {
        Ok(crd) => crd,
        Err(error) => panic!("definition: {error}"),
    };
    if let Err(error) = crds.create(&PostParams::default(), &crd).await {
        panic!("create definition: {error}");
    }
    // Discovery knows the kind right away.
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Gadget");
    let (resource, caps) = match kube::discovery::pinned_kind(&client, &gvk).await {
        Ok(found) => found,
        Err(error) => panic!("discovery: {error}"),
    };
    assert_eq!(resource.plural, "gadgets");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    let gadgets: Api<DynamicObject> = Api::namespaced_with(client, "default", &resource);
    let watch = gadgets
        .watch(&kube::api::WatchParams::default().timeout(10), "0")
        .await;
    let mut events = match watch {
        Ok(events) => Box::pin(events),
        Err(error) => panic!("watch: {error}"),
    };
    let mut gadget = DynamicObject::new("g1", &resource);
    gadget.data = json!({"spec": {"size": 2, "junk": true}});
    let created = match gadgets.create(&PostParams::default(), &gadget).await {
        Ok(created) => created,
        Err(error) => panic!("create: {error}"),
    };
    assert_eq!(
        created.data["spec"],
        json!({"size": 2}),
        "unknown field pruned"
    );
    let event = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut events),
    )
    .await;
    match event {
        Ok(Some(Ok(kube::api::WatchEvent::Added(g)))) => {
            assert_eq!(g.metadata.name.as_deref(), Some("g1"));
            assert_eq!(
                g.types.map(|t| t.api_version).as_deref(),
                Some("example.com/v1")
            );
        }
        other => panic!("expected ADDED g1, got {other:?}"),
    }
    let mut bad = DynamicObject::new("g2", &resource);
    bad.data = json!({"spec": {"size": "two"}});
    match gadgets.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
            assert_eq!(
                status.message,
                r#"Gadget.example.com "g2" is invalid: spec.size: Invalid value: "string": spec.size in body must be of type integer: "string""#
            );
            let causes = status.details.map(|d| d.causes).unwrap_or_default();
            assert_eq!(causes.first().map(|c| c.field.as_str()), Some("spec.size"));
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let patch = Patch::Merge(json!({"spec": {"size": 5}}));
    let patched = gadgets.patch("g1", &PatchParams::default(), &patch).await;
    assert!(
        matches!(&patched, Ok(g) if g.data["spec"]["size"] == 5),
        "{patched:?}"
    );
    let listed = gadgets.list(&ListParams::default()).await;
    assert!(matches!(&listed, Ok(l) if l.items.len() == 1), "{listed:?}");

    // Deleting the definition takes its objects with it.
    if let Err(error) = crds
        .delete("gadgets.example.com", &Default::default())
        .await
    {
        panic!("delete definition: {error}");
    }
    let mut gone = false;
    for _ in 0..100 {
        if matches!(crds.get_opt("gadgets.example.com").await, Ok(None)) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the definition is deleted once its objects are");
    let after = gadgets.list(&ListParams::default()).await;
    assert!(
        matches!(after, Err(kube::Error::Api(ref s)) if s.code == 404),
        "{after:?}"
    );
}

/// A GET with `accept`; returns the headers and the body as JSON.
async fn get(server: &ApiServer, uri: &str, accept: &str) -> (http::HeaderMap, Value) {
    let request = http::Request::builder()
        .uri(uri)
        .header("accept", accept)
        .body(http_body_util::Full::new(bytes::Bytes::new()));
    let Ok(request) = request else {
        panic!("request")
    };
    let response = server
        .handle(request, &capstan_apiserver::RequestUser::admin())
        .await;
    let headers = response.headers().clone();
    let body = http_body_util::BodyExt::collect(response.into_body()).await;
    let value = match body {
        Ok(collected) => serde_json::from_slice(&collected.to_bytes()).unwrap_or_default(),
        Err(never) => match never {},
    };
    (headers, value)
}

#[tokio::test]
async fn served_versions_convert_by_rewriting_the_api_version() {
    let (server, store) = common::server().await;
    let mut crd = definition("example.com", "Gadget", "gadgets");
    let schema = crd["spec"]["versions"][0]["schema"].clone();
    crd["spec"]["names"]["listKind"] = json!("GadgetCollection");
    crd["spec"]["versions"] = json!([
        {"name": "v1beta1", "served": true, "storage": false, "deprecated": true, "schema": schema},
        {"name": "v1", "served": true, "storage": true, "schema": schema},
    ]);
    let (code, created) = common::json(&server, "POST", CRDS, &crd).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["status"]["storedVersions"], json!(["v1"]));
    let old = "/apis/example.com/v1beta1/namespaces/default/gadgets";
    let gadget = json!({"apiVersion": "example.com/v1beta1", "kind": "Gadget",
                        "metadata": {"name": "g"}, "spec": {"size": 1}});
    let (code, made) = common::json(&server, "POST", old, &gadget).await;
    assert_eq!(
        (code, made["apiVersion"].clone()),
        (201, json!("example.com/v1beta1"))
    );
    let raw = match store.get("/registry/example.com/gadgets/default/g").await {
        Ok(Some(kv)) => serde_json::from_slice::<Value>(&kv.value).unwrap_or_default(),
        other => panic!("not stored: {other:?}"),
    };
    assert_eq!(
        raw["apiVersion"], "example.com/v1",
        "stored in the storage version"
    );
    let (_, read) = common::call(
        &server,
        "GET",
        "/apis/example.com/v1/namespaces/default/gadgets/g",
        "",
        "",
    )
    .await;
    assert_eq!(read["apiVersion"], "example.com/v1");
    let (_, listed) = common::call(&server, "GET", old, "", "").await;
    assert_eq!(listed["items"][0]["apiVersion"], "example.com/v1beta1");
    assert_eq!(
        listed["kind"], "GadgetCollection",
        "the definition's listKind"
    );
    let (headers, rows) = get(&server, old, "application/json;as=Table;v=v1;g=meta.k8s.io").await;
    let warning = headers.get("warning").and_then(|w| w.to_str().ok());
    assert_eq!(
        warning,
        Some("299 - \"example.com/v1beta1 Gadget is deprecated; use example.com/v1 Gadget\""),
        "a deprecated version warns"
    );
    let columns: Vec<&str> = rows["columnDefinitions"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        columns,
        ["Name", "Age"],
        "Age when the definition lists no columns"
    );
    assert_eq!(rows["rows"][0]["cells"][0], "g");
    let (_, group) = common::call(&server, "GET", "/apis/example.com", "", "").await;
    assert_eq!(group["preferredVersion"]["version"], "v1", "{group}");

    // A version added to the definition is served when the update answers.
    let (_, mut current) = common::call(
        &server,
        "GET",
        &format!("{CRDS}/gadgets.example.com"),
        "",
        "",
    )
    .await;
    let mut list = current["spec"]["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    list.push(json!({"name": "v2", "served": true, "storage": false, "schema": schema}));
    current["spec"]["versions"] = Value::Array(list);
    let (code, updated) = common::json(
        &server,
        "PUT",
        &format!("{CRDS}/gadgets.example.com"),
        &current,
    )
    .await;
    assert_eq!(code, 200, "{updated}");
    let (code, read) = common::call(
        &server,
        "GET",
        "/apis/example.com/v2/namespaces/default/gadgets/g",
        "",
        "",
    )
    .await;
    assert_eq!(
        (code, read["apiVersion"].clone()),
        (200, json!("example.com/v2"))
    );

    // Cluster-scoped definitions serve objects outside namespaces.
    let mut knobs = definition("example.com", "Knob", "knobs");
    knobs["spec"]["scope"] = json!("Cluster");
    let (code, _) = common::json(&server, "POST", CRDS, &knobs).await;
    assert_eq!(code, 201);
    let knob = json!({"apiVersion": "example.com/v1", "kind": "Knob", "metadata": {"name": "k"}});
    let (code, made) = common::json(&server, "POST", "/apis/example.com/v1/knobs", &knob).await;
    assert_eq!(code, 201, "{made}");
    assert!(made["metadata"].get("namespace").is_none(), "{made}");
    let (code, _) = common::call(
        &server,
        "GET",
        "/apis/example.com/v1/namespaces/default/knobs",
        "",
        "",
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_deleted_definition_terminates_until_its_objects_are_gone() {
    let (server, _) = common::server().await;
    let (code, _) = common::json(
        &server,
        "POST",
        CRDS,
        &definition("example.com", "Gadget", "gadgets"),
    )
    .await;
    assert_eq!(code, 201);
    let gadgets = "/apis/example.com/v1/namespaces/default/gadgets";
    let held = json!({"apiVersion": "example.com/v1", "kind": "Gadget",
        "metadata": {"name": "held", "finalizers": ["example.com/hold"]}, "spec": {"size": 1}});
    let (code, _) = common::json(&server, "POST", gadgets, &held).await;
    assert_eq!(code, 201);
    let crd = format!("{CRDS}/gadgets.example.com");
    let (code, deleting) = common::call(&server, "DELETE", &crd, "", "").await;
    assert_eq!(code, 200, "{deleting}");
    assert!(
        deleting["metadata"]["deletionTimestamp"].is_string(),
        "{deleting}"
    );
    let terminating = |crd: &Value| {
        crd["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Terminating" && c["status"] == "True")
        })
    };
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = common::call(&server, "GET", &crd, "", "").await.1;
        if terminating(&seen) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(terminating(&seen), "{seen}");
    let fresh = json!({"apiVersion": "example.com/v1", "kind": "Gadget",
                       "metadata": {"name": "late"}, "spec": {"size": 1}});
    let (code, refused) = common::json(&server, "POST", gadgets, &fresh).await;
    assert_eq!(code, 405, "{refused}");
    assert_eq!(
        refused["message"],
        "create not allowed while custom resource definition is terminating"
    );
    let (code, object) = common::call(&server, "GET", &format!("{gadgets}/held"), "", "").await;
    assert!(
        code == 200 && object["metadata"]["deletionTimestamp"].is_string(),
        "{object}"
    );
    let release = r#"{"metadata":{"finalizers":null}}"#;
    let (code, _) = common::call(
        &server,
        "PATCH",
        &format!("{gadgets}/held"),
        "application/merge-patch+json",
        release,
    )
    .await;
    assert_eq!(code, 200);
    let mut code = 200;
    for _ in 0..100 {
        code = common::call(&server, "GET", &crd, "", "").await.0;
        if code == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(code, 404, "the definition goes once its last object did");
}

/// The python `kubernetes` client (PyPI, installed by hack/deps.sh test into a venv).
const PYTHON_CLIENT: &str = "/var/cache/capstan-py/bin/python";

#[tokio::test]
async fn the_python_client_uses_custom_objects() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/crd_check.py");
    let output = Command::new(PYTHON_CLIENT)
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
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    assert_eq!(seen["conditions"], json!(["Established", "NamesAccepted"]));
    assert_eq!(seen["created"], json!({"size": 1, "mode": "auto"}));
    assert_eq!(
        seen["invalid"],
        json!([
            422,
            "Sprocket.example.com \"s2\" is invalid: spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\"",
            "spec.size"
        ])
    );
    assert_eq!(seen["scale"], json!(["Scale", 3]));
    assert_eq!(seen["status"], json!([true, 1, 3]));
    assert_eq!(seen["listed"], json!(["s1"]));
}

#[tokio::test]
async fn a_definition_whose_kind_is_taken_is_not_served() {
    let (server, _) = common::server().await;
    let (code, _) = common::json(
        &server,
        "POST",
        CRDS,
        &definition("example.com", "Gadget", "gadgets"),
    )
    .await;
    assert_eq!(code, 201);
    let (code, _) = common::json(
        &server,
        "POST",
        CRDS,
        &definition("example.com", "Gadget", "gizmos"),
    )
    .await;
    assert_eq!(code, 201, "stored, as upstream stores it");
    let refused = |crd: &Value| {
        crd["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter().any(|c| {
                c["type"] == "NamesAccepted"
                    && c["status"] == "False"
                    && c["reason"] == "KindConflict"
            })
        })
    };
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = common::call(
            &server,
            "GET",
            &format!("{CRDS}/gizmos.example.com"),
            "",
            "",
        )
        .await
        .1;
        if refused(&seen) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused(&seen), "{seen}");
    let message = seen["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "NamesAccepted"))
        .map(|c| c["message"].clone());
    assert_eq!(message, Some(json!("\"Gadget\" is already in use")));
    let (code, _) = common::call(&server, "GET", "/apis/example.com/v1/gizmos", "", "").await;
    assert_eq!(code, 404, "not served");
    let (code, _) = common::call(&server, "GET", "/apis/example.com/v1/gadgets", "", "").await;
    assert_eq!(code, 200, "the older one is");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_etcd_learn_of_definitions_through_the_store_watch() {
    let cluster = match tokio::task::spawn_blocking(capstan_testkit::etcd::EtcdCluster::start).await
    {
        Ok(Ok(cluster)) => cluster,
        other => panic!("etcd: {other:?}"),
    };
    let endpoints = cluster.endpoints();
    let connect = || async {
        match capstan_store::etcd::EtcdStore::connect(&endpoints, "").await {
            Ok(store) => Arc::new(store) as Arc<dyn Store>,
            Err(error) => panic!("connect: {error}"),
        }
    };
    let Ok(first) = ApiServer::new(connect().await, Config::default()).await else {
        panic!("first server")
    };
    let Ok(second) = ApiServer::new(connect().await, Config::default()).await else {
        panic!("second server")
    };
    let (code, created) = common::json(
        &first,
        "POST",
        CRDS,
        &definition("example.com", "Gadget", "gadgets"),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let gadgets = "/apis/example.com/v1/namespaces/default/gadgets";
    let gadget = json!({"apiVersion": "example.com/v1", "kind": "Gadget",
                        "metadata": {"name": "g"}, "spec": {"size": "one"}});
    let mut answered = (0, Value::Null);
    for _ in 0..500 {
        answered = common::json(&second, "POST", gadgets, &gadget).await;
        if answered.0 != 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        answered.0, 422,
        "validated by the schema the watch brought: {}",
        answered.1
    );
    let (code, _) = common::call(
        &first,
        "DELETE",
        &format!("{CRDS}/gadgets.example.com"),
        "",
        "",
    )
    .await;
    assert_eq!(code, 200);
    let mut code = 200;
    for _ in 0..500 {
        code = common::call(&second, "GET", gadgets, "", "").await.0;
        if code == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        code, 404,
        "the second server stops serving the deleted definition"
    );
    drop(cluster);
}

#[tokio::test]
async fn selectable_fields_select_custom_objects() {
    let (server, _) = common::server().await;
    let mut crd = definition("example.com", "Gadget", "gadgets");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["color"] =
        json!({"type": "string"});
    crd["spec"]["versions"][0]["selectableFields"] = json!([{"jsonPath": ".spec.nope"}]);
    let (code, refused) = common::json(&server, "POST", CRDS, &crd).await;
    assert_eq!(code, 422);
    assert!(
        refused["message"].as_str().unwrap_or("").contains(
            "spec.versions[0].selectableFields[0].jsonPath: Invalid value: \".spec.nope\": is an invalid path"
        ),
        "{refused}"
    );
    crd["spec"]["versions"][0]["selectableFields"] = json!([{"jsonPath": ".spec.color"}]);
    let (code, created) = common::json(&server, "POST", CRDS, &crd).await;
    assert_eq!(code, 201, "{created}");
    let gadgets = "/apis/example.com/v1/namespaces/default/gadgets";
    for (name, color) in [("red-one", "red"), ("blue-one", "blue")] {
        let gadget = json!({"apiVersion": "example.com/v1", "kind": "Gadget",
                            "metadata": {"name": name}, "spec": {"size": 1, "color": color}});
        let (code, _) = common::json(&server, "POST", gadgets, &gadget).await;
        assert_eq!(code, 201);
    }
    let (code, red) = common::call(
        &server,
        "GET",
        &format!("{gadgets}?fieldSelector=spec.color%3Dred"),
        "",
        "",
    )
    .await;
    assert_eq!(code, 200);
    let names: Vec<&str> = red["items"]
        .as_array()
        .map(|i| {
            i.iter()
                .filter_map(|o| o["metadata"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, ["red-one"]);
    let (code, unknown) = common::call(
        &server,
        "GET",
        &format!("{gadgets}?fieldSelector=spec.size%3D1"),
        "",
        "",
    )
    .await;
    assert_eq!(
        (code, unknown["message"].clone()),
        (400, json!("field label not supported: spec.size"))
    );
}

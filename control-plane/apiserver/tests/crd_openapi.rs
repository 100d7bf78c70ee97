//! CustomResourceDefinition schemas where clients read them: `/openapi/v2` and the group
//! version's `/openapi/v3` document name each served version as upstream does
//! (`com.example.v1.Widget`, with its group version kind, type fields and `ObjectMeta`),
//! `kubectl explain` (1.33 over v3, 1.27 over v2) prints a definition's fields as soon as it is
//! created and no more once it is deleted, the documents follow a changed definition, and
//! server-side apply merges a custom `x-kubernetes-list-type: map` list by its keys.

mod common;

use bytes::Bytes;
use capstan_apiserver::{ApiServer, RequestUser};
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// Runs kubectl with a fresh HOME and discovery cache (so nothing it learnt before is
/// reused); returns (success, stdout, stderr).
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
    assert!(success, "{binary} {args:?} failed: {out}{err}");
    out
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
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        description: A Widget is a thing made of parts, for tests.
        properties:
          spec:
            type: object
            description: What the widget should be.
            properties:
              color:
                type: string
                description: The paint on the outside.
              parts:
                type: array
                description: The parts it is built of, one per name.
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string, description: Which part.}
                    size: {type: integer, description: How big the part is.}
  - name: v2
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        description: A Widget of the second version.
        properties:
          spec:
            type: object
            properties:
              shade: {type: string, description: The paint in v2.}
"#;

async fn get(server: &ApiServer, uri: &str) -> (u16, Value) {
    let Ok(request) = Request::builder().uri(uri).body(Full::new(Bytes::new())) else {
        panic!("request")
    };
    let response = server.handle(request, &RequestUser::admin()).await;
    let code = response.status().as_u16();
    let bytes = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The v3 document of `apis/<gv>` as the index points at it; `None` when the index has none.
async fn v3_document(server: &ApiServer, gv: &str) -> Option<Value> {
    let (code, index) = get(server, "/openapi/v3").await;
    assert_eq!(code, 200, "{index}");
    let url = index["paths"][format!("apis/{gv}")]["serverRelativeURL"].as_str()?;
    let (code, document) = get(server, url).await;
    assert_eq!(code, 200, "{url}: {document}");
    Some(document)
}

fn assert_widget_root(schema: &Value, version: &str, object_meta_ref: &str) {
    assert_eq!(
        schema["x-kubernetes-group-version-kind"],
        serde_json::json!([{"group": "example.com", "kind": "Widget", "version": version}]),
        "{schema}"
    );
    assert_eq!(schema["type"], "object", "{schema}");
    for field in ["apiVersion", "kind"] {
        assert_eq!(schema["properties"][field]["type"], "string", "{schema}");
        assert!(
            schema["properties"][field]["description"].is_string(),
            "{schema}"
        );
    }
    let metadata = &schema["properties"]["metadata"];
    let reference = metadata["$ref"]
        .as_str()
        .or_else(|| metadata["allOf"][0]["$ref"].as_str());
    assert_eq!(reference, Some(object_meta_ref), "{schema}");
}

#[tokio::test]
async fn each_served_version_is_in_v2_and_its_v3_document_until_deleted() {
    let (server, _) = common::server().await;
    let url = common::listen(server.clone()).await;
    let s = url.as_str();
    let (_, before) = get(&server, "/openapi/v2").await;
    assert!(before["definitions"]["com.example.v1.Widget"].is_null());
    ok(KUBECTL_133, s, &["apply", "-f", "-"], Some(WIDGETS)).await;

    let (code, v2) = get(&server, "/openapi/v2").await;
    assert_eq!(code, 200);
    let v1 = &v2["definitions"]["com.example.v1.Widget"];
    assert_widget_root(
        v1,
        "v1",
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    );
    assert_eq!(
        v1["description"],
        "A Widget is a thing made of parts, for tests."
    );
    let parts = &v1["properties"]["spec"]["properties"]["parts"];
    assert_eq!(parts["x-kubernetes-list-type"], "map", "{parts}");
    assert_eq!(parts["x-kubernetes-list-map-keys"][0], "name", "{parts}");
    let v2_widget = &v2["definitions"]["com.example.v2.Widget"];
    assert_widget_root(
        v2_widget,
        "v2",
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    );
    assert_eq!(
        v2_widget["properties"]["spec"]["properties"]["shade"]["description"],
        "The paint in v2."
    );

    for version in ["v1", "v2"] {
        let Some(document) = v3_document(&server, &format!("example.com/{version}")).await else {
            panic!("no v3 document of example.com/{version}")
        };
        let schemas = &document["components"]["schemas"];
        assert_widget_root(
            &schemas[format!("com.example.{version}.Widget")],
            version,
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        );
        assert!(
            schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object(),
            "the referenced ObjectMeta is in the document"
        );
        // Each group version's document holds its own version only.
        let other = if version == "v1" { "v2" } else { "v1" };
        assert!(schemas[format!("com.example.{other}.Widget")].is_null());
    }

    // A changed definition is published at once (the cached documents are rebuilt).
    let changed = WIDGETS.replace(
        "A Widget is a thing made of parts, for tests.",
        "A Widget, described anew.",
    );
    ok(KUBECTL_133, s, &["apply", "-f", "-"], Some(&changed)).await;
    let (_, v2) = get(&server, "/openapi/v2").await;
    assert_eq!(
        v2["definitions"]["com.example.v1.Widget"]["description"],
        "A Widget, described anew."
    );
    let Some(document) = v3_document(&server, "example.com/v1").await else {
        panic!("no v3 document of example.com/v1")
    };
    assert_eq!(
        document["components"]["schemas"]["com.example.v1.Widget"]["description"],
        "A Widget, described anew."
    );

    ok(
        KUBECTL_133,
        s,
        &["delete", "crd", "widgets.example.com"],
        None,
    )
    .await;
    let (_, v2) = get(&server, "/openapi/v2").await;
    assert!(v2["definitions"]["com.example.v1.Widget"].is_null());
    assert!(v2["definitions"]["com.example.v2.Widget"].is_null());
    assert!(v3_document(&server, "example.com/v1").await.is_none());
}

/// `kubectl explain widgets` and `widgets.spec` right after the definition is made, and a
/// not-found once it is deleted; over v2 (`plaintext-openapiv2`) when `over_v2`.
async fn explain_a_definition(binary: &str, over_v2: bool) {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let s = url.as_str();
    let explain = |args: &[&str]| {
        let mut all = vec!["explain"];
        all.extend_from_slice(args);
        if over_v2 {
            all.push("--output=plaintext-openapiv2");
        }
        all.into_iter().map(String::from).collect::<Vec<_>>()
    };
    ok(binary, s, &["apply", "-f", "-"], Some(WIDGETS)).await;

    let args = explain(&["widgets", "--api-version=example.com/v1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let root = ok(binary, s, &args, None).await;
    assert!(root.contains("Widget"), "{root}");
    assert!(
        root.contains("A Widget is a thing made of parts, for tests."),
        "{root}"
    );
    for field in ["apiVersion", "kind", "metadata", "spec"] {
        assert!(root.contains(field), "{field}: {root}");
    }
    assert!(root.contains("What the widget should be."), "{root}");

    let args = explain(&["widgets.spec", "--api-version=example.com/v1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let spec = ok(binary, s, &args, None).await;
    assert!(spec.contains("What the widget should be."), "{spec}");
    assert!(spec.contains("color"), "{spec}");
    assert!(spec.contains("The paint on the outside."), "{spec}");
    assert!(spec.contains("parts"), "{spec}");
    assert!(
        spec.contains("The parts it is built of, one per name."),
        "{spec}"
    );

    let args = explain(&["widgets.spec.parts", "--api-version=example.com/v1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let parts = ok(binary, s, &args, None).await;
    assert!(parts.contains("How big the part is."), "{parts}");
    assert!(parts.contains("-required-"), "{parts}");

    ok(binary, s, &["delete", "crd", "widgets.example.com"], None).await;
    let args = explain(&["widgets"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (success, out, err) = kubectl(binary, s, &args, None).await;
    assert!(!success, "explain after the delete: {out}");
    assert!(
        err.contains("doesn't have a resource type \"widgets\""),
        "{err}"
    );
}

#[tokio::test]
async fn kubectl_1_33_explains_a_definition_over_v3() {
    explain_a_definition(KUBECTL_133, false).await;
}

#[tokio::test]
async fn kubectl_1_27_explains_a_definition_over_v2() {
    explain_a_definition(KUBECTL_127, true).await;
}

fn widget(color: Option<&str>, parts: &[(&str, i64)]) -> String {
    let mut spec = String::new();
    if let Some(color) = color {
        spec.push_str(&format!("  color: {color}\n"));
    }
    if !parts.is_empty() {
        spec.push_str("  parts:\n");
        for (name, size) in parts {
            spec.push_str(&format!("  - name: {name}\n    size: {size}\n"));
        }
    }
    format!(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: default\nspec:\n{spec}"
    )
}

/// The names of `spec.parts` of widget w1, in order.
async fn part_names(s: &str) -> Vec<String> {
    let out = ok(KUBECTL_133, s, &["get", "widget", "w1", "-o", "json"], None).await;
    let Ok(object) = serde_json::from_str::<Value>(&out) else {
        panic!("not JSON: {out}")
    };
    object["spec"]["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn server_side_apply_merges_a_custom_map_list_by_its_keys() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let s = url.as_str();
    ok(KUBECTL_133, s, &["apply", "-f", "-"], Some(WIDGETS)).await;
    let apply = |manager: &'static str| {
        vec![
            "apply".to_string(),
            "--server-side".to_string(),
            format!("--field-manager={manager}"),
            "-f".to_string(),
            "-".to_string(),
        ]
    };
    let a = apply("alice");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let b = apply("bob");
    let b: Vec<&str> = b.iter().map(String::as_str).collect();

    ok(KUBECTL_133, s, &a, Some(&widget(Some("red"), &[("a", 1)]))).await;
    // An atomic list would be alice's whole: bob's item would conflict with it.
    ok(KUBECTL_133, s, &b, Some(&widget(None, &[("b", 2)]))).await;
    assert_eq!(part_names(s).await, ["a", "b"]);

    // Alice drops her item (keeping the color): only hers goes.
    ok(KUBECTL_133, s, &a, Some(&widget(Some("red"), &[]))).await;
    assert_eq!(part_names(s).await, ["b"]);
    let out = ok(KUBECTL_133, s, &["get", "widget", "w1", "-o", "json"], None).await;
    let Ok(object) = serde_json::from_str::<Value>(&out) else {
        panic!("not JSON: {out}")
    };
    assert_eq!(object["spec"]["color"], "red", "{object}");
    assert_eq!(object["spec"]["parts"][0]["size"], 2, "{object}");
}

//! OpenAPI v2 and v3 with type schemas: `kubectl explain` (1.33 over v3; 1.27 over v3 and,
//! with `--output=plaintext-openapiv2`, over v2 protobuf), the v3 index and its hashed,
//! immutable documents, conditional GETs, and a schema with its group version kind for every
//! served kind.

mod common;

use bytes::Bytes;
use capstan_apiserver::RequestUser;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// Runs kubectl with its own HOME and cache in a temporary directory; returns (success,
/// stdout, stderr).
async fn kubectl(
    binary: &str,
    server: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> (bool, String, String) {
    let output = capstan_testkit::kubectl::Kubectl::server(binary, server)
        .envs(env)
        .stdin(stdin)
        .run(args)
        .await;
    (output.success, output.stdout, output.stderr)
}

/// `kubectl explain`, over OpenAPI v2 (`--output=plaintext-openapiv2`) when `over_v2`.
async fn explain(binary: &str, server: &str, args: &[&str], over_v2: bool) -> String {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    if over_v2 {
        all.push("--output=plaintext-openapiv2");
    }
    let (success, out, err) = kubectl(binary, server, &all, &[], None).await;
    assert!(success, "kubectl {all:?} failed: {out}{err}");
    out
}

/// The cases of the issue, with what upstream prints for them.
/// `over_v2`: kubectl reads OpenAPI v2, where int-or-string is a plain string (as upstream).
async fn explain_cases(binary: &str, over_v2: bool) {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let s = url.as_str();
    let pods = explain(binary, s, &["pods"], over_v2).await;
    assert!(pods.contains("KIND:"), "{pods}");
    assert!(pods.contains("Pod"), "{pods}");
    assert!(
        pods.contains("Pod is a collection of containers that can run on a host."),
        "{pods}"
    );
    for field in ["apiVersion", "kind", "metadata", "spec", "status"] {
        assert!(pods.contains(field), "{field}: {pods}");
    }
    // v2 explain names no referenced types (upstream prints `<Object>` there too).
    let named = |name: &str| {
        if over_v2 {
            "Object".to_string()
        } else {
            name.to_string()
        }
    };
    assert!(
        pods.contains(&format!("spec\t<{}>", named("PodSpec"))),
        "{pods}"
    );

    let containers = explain(
        binary,
        s,
        &["deployment.spec.template.spec.containers"],
        over_v2,
    )
    .await;
    assert!(containers.contains("apps"), "{containers}");
    assert!(
        containers.contains(&format!("containers <[]{}>", named("Container"))),
        "{containers}"
    );
    assert!(
        containers.contains("List of containers belonging to the pod."),
        "{containers}"
    );
    assert!(
        containers.contains("A single application container that you want to run within a pod."),
        "{containers}"
    );
    assert!(containers.contains("-required-"), "{containers}");
    assert!(containers.contains("imagePullPolicy"), "{containers}");

    let recursive = explain(binary, s, &["pods", "--recursive"], over_v2).await;
    assert!(recursive.contains("containerPort"), "{recursive}");
    assert!(recursive.contains("nodeAffinity"), "{recursive}");
    assert!(recursive.contains("podIP"), "{recursive}");

    let ports = explain(binary, s, &["svc.spec.ports", "--api-version=v1"], over_v2).await;
    assert!(
        ports.contains(&format!("ports <[]{}>", named("ServicePort"))),
        "{ports}"
    );
    assert!(
        ports.contains("The list of ports that are exposed by this service."),
        "{ports}"
    );
    assert!(ports.contains("targetPort"), "{ports}");
    let target = if over_v2 { "<string>" } else { "<IntOrString>" };
    assert!(ports.contains(&format!("targetPort\t{target}")), "{ports}");
}

#[tokio::test]
async fn kubectl_1_33_explains_over_v3() {
    explain_cases(KUBECTL_133, false).await;
}

#[tokio::test]
async fn kubectl_1_27_explains_over_v3() {
    explain_cases(KUBECTL_127, false).await;
}

#[tokio::test]
async fn kubectl_1_27_explains_over_v2_protobuf() {
    explain_cases(KUBECTL_127, true).await;
}

/// A GET with these headers; returns the code, the headers and the body (gunzipped when the
/// answer is gzip).
async fn get_from(
    server: &capstan_apiserver::ApiServer,
    uri: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Vec<u8>) {
    let mut request = Request::builder().uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let Ok(request) = request.body(Full::new(Bytes::new())) else {
        panic!("request")
    };
    let response = server.handle(request, &RequestUser::admin()).await;
    let code = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(never) => match never {},
    };
    let bytes = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        use std::io::Read;
        let mut plain = Vec::new();
        let decoded = flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut plain);
        assert!(decoded.is_ok(), "not gzip");
        plain
    } else {
        bytes
    };
    (code, headers, bytes)
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn json(bytes: &[u8]) -> Value {
    match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(error) => panic!("not JSON ({error}): {}", String::from_utf8_lossy(bytes)),
    }
}

#[tokio::test]
async fn v3_index_points_at_hashed_immutable_documents() {
    let (server, _) = common::server().await;
    let (code, _, index) = get_from(&server, "/openapi/v3", &[]).await;
    assert_eq!(code, 200);
    let index = json(&index);
    for gv in [
        "api/v1",
        "apis/apps/v1",
        "apis/batch/v1",
        "apis/coordination.k8s.io/v1",
        "apis/rbac.authorization.k8s.io/v1",
    ] {
        assert!(
            index["paths"][gv]["serverRelativeURL"].is_string(),
            "{gv}: {index}"
        );
    }
    let Some(url) = index["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str() else {
        panic!("no apps/v1 URL")
    };
    let Some((path, hash)) = url.split_once("?hash=") else {
        panic!("no hash in {url}")
    };
    assert_eq!(path, "/openapi/v3/apis/apps/v1");
    assert_eq!(hash.len(), 128, "a SHA-512 in hex, as kube: {hash}");

    let (code, headers, body) = get_from(&server, url, &[("accept-encoding", "gzip")]).await;
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "content-encoding"), "gzip");
    assert_eq!(header(&headers, "cache-control"), "public, immutable");
    assert!(!header(&headers, "expires").is_empty());
    assert_eq!(header(&headers, "etag"), format!("\"{hash}\""));
    let document = json(&body);
    let schemas = &document["components"]["schemas"];
    let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        deployment["x-kubernetes-group-version-kind"],
        serde_json::json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    assert_eq!(
        deployment["properties"]["spec"]["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
    );
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert!(
        schemas.get("io.k8s.api.core.v1.Pod").is_none(),
        "only what apps/v1 refers to"
    );
    assert!(
        document["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
            .is_object()
    );

    let etag = format!("\"{hash}\"");
    let (code, headers, body) = get_from(&server, url, &[("if-none-match", &etag)]).await;
    assert_eq!(code, 304);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "etag"), etag);

    let (code, headers, _) = get_from(&server, "/openapi/v3/apis/apps/v1?hash=0123", &[]).await;
    assert_eq!(code, 301, "a stale hash is sent to the current one");
    assert_eq!(header(&headers, "location"), url);

    let (code, headers, _) = get_from(&server, "/openapi/v3/apis/apps/v1", &[]).await;
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "cache-control"), "no-cache, private");
    assert_eq!(header(&headers, "etag"), etag);

    let (code, _, _) = get_from(&server, "/openapi/v3/apis/nothing.example/v1", &[]).await;
    assert_eq!(code, 404);

    let protobuf = [(
        "accept",
        "application/com.github.proto-openapi.spec.v3@v1.0+protobuf",
    )];
    let (code, _, body) = get_from(&server, url, &protobuf).await;
    assert_eq!(code, 406);
    assert!(String::from_utf8_lossy(&body).contains("not implemented"));
}

/// The subset of gnostic's `openapi_v2` messages the test reads, decoded by prost: an
/// independent reader of what the server encodes by hand.
mod gnostic {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Document {
        #[prost(string, tag = "1")]
        pub swagger: String,
        #[prost(message, optional, tag = "9")]
        pub definitions: Option<Definitions>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Definitions {
        #[prost(message, repeated, tag = "1")]
        pub additional_properties: Vec<NamedSchema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedSchema {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Schema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Schema {
        #[prost(string, tag = "1")]
        pub r#ref: String,
        #[prost(string, tag = "4")]
        pub description: String,
        #[prost(string, repeated, tag = "19")]
        pub required: Vec<String>,
        #[prost(message, optional, tag = "22")]
        pub r#type: Option<TypeItem>,
        #[prost(message, optional, tag = "23")]
        pub items: Option<ItemsItem>,
        #[prost(message, optional, tag = "25")]
        pub properties: Option<Definitions>,
        #[prost(message, repeated, tag = "31")]
        pub vendor_extension: Vec<NamedAny>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeItem {
        #[prost(string, repeated, tag = "1")]
        pub value: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ItemsItem {
        #[prost(message, repeated, tag = "1")]
        pub schema: Vec<Schema>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NamedAny {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<Any>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "2")]
        pub yaml: String,
    }
}

fn named<'a>(list: &'a [gnostic::NamedSchema], name: &str) -> &'a gnostic::Schema {
    match list
        .iter()
        .find(|n| n.name == name)
        .and_then(|n| n.value.as_ref())
    {
        Some(schema) => schema,
        None => panic!("no {name}"),
    }
}

#[tokio::test]
async fn v2_protobuf_decodes_with_schemas_and_extensions() {
    let (server, _) = common::server().await;
    let accept = [
        (
            "accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        ),
        ("accept-encoding", "gzip"),
    ];
    let (code, headers, body) = get_from(&server, "/openapi/v2", &accept).await;
    assert_eq!(code, 200);
    assert_eq!(
        header(&headers, "content-type"),
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    );
    let document = match <gnostic::Document as prost::Message>::decode(&body[..]) {
        Ok(document) => document,
        Err(error) => panic!("not gnostic protobuf: {error}"),
    };
    assert_eq!(document.swagger, "2.0");
    let definitions = document
        .definitions
        .unwrap_or_default()
        .additional_properties;
    let pod = named(&definitions, "io.k8s.api.core.v1.Pod");
    assert!(
        pod.description
            .starts_with("Pod is a collection of containers")
    );
    assert!(pod.required.is_empty(), "metadata is not required");
    let gvk = pod
        .vendor_extension
        .iter()
        .find(|e| e.name == "x-kubernetes-group-version-kind")
        .and_then(|e| e.value.as_ref())
        .map(|v| json(v.yaml.as_bytes()));
    assert_eq!(
        gvk,
        Some(serde_json::json!([{"group": "", "kind": "Pod", "version": "v1"}]))
    );
    let properties = pod
        .properties
        .clone()
        .unwrap_or_default()
        .additional_properties;
    assert_eq!(
        named(&properties, "spec").r#ref,
        "#/definitions/io.k8s.api.core.v1.PodSpec"
    );
    let spec = named(&definitions, "io.k8s.api.core.v1.PodSpec");
    let spec_properties = spec
        .properties
        .clone()
        .unwrap_or_default()
        .additional_properties;
    let containers = named(&spec_properties, "containers");
    assert_eq!(
        containers.r#type.as_ref().map(|t| t.value.clone()),
        Some(vec!["array".to_string()])
    );
    let item = containers.items.as_ref().map(|i| i.schema[0].r#ref.clone());
    assert_eq!(
        item.as_deref(),
        Some("#/definitions/io.k8s.api.core.v1.Container")
    );
    assert!(
        containers
            .vendor_extension
            .iter()
            .any(|e| e.name == "x-kubernetes-patch-merge-key"
                && e.value.as_ref().is_some_and(|v| v.yaml == "\"name\""))
    );

    // The JSON form is the same document, and both answer conditional GETs.
    let (code, headers, body) =
        get_from(&server, "/openapi/v2", &[("accept", "application/json")]).await;
    assert_eq!(code, 200);
    assert_eq!(header(&headers, "content-type"), "application/json");
    let v2 = json(&body);
    assert_eq!(
        v2["definitions"].as_object().map(|d| d.len()),
        Some(definitions.len())
    );
    let etag = header(&headers, "etag").to_string();
    let (code, _, _) = get_from(
        &server,
        "/openapi/v2",
        &[("accept", "application/json"), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(code, 304);
}

/// Every row of the kinds table has a definition marked with its group version kind, in v2 and
/// in its group version's v3 document.
#[tokio::test]
async fn every_served_kind_has_a_schema_with_its_gvk() {
    let (server, _) = common::server().await;
    let (_, _, v2) = get_from(&server, "/openapi/v2", &[("accept", "application/json")]).await;
    let v2 = json(&v2);
    let (_, _, index) = get_from(&server, "/openapi/v3", &[]).await;
    let index = json(&index);
    let has = |definitions: &Value, kind: &capstan_apiserver::kinds::Kind| {
        let gvk =
            serde_json::json!({"group": kind.group, "kind": kind.kind, "version": kind.version});
        definitions.as_object().is_some_and(|all| {
            all.values().any(|d| {
                d["x-kubernetes-group-version-kind"]
                    .as_array()
                    .is_some_and(|l| l.contains(&gvk))
            })
        })
    };
    let kinds = capstan_apiserver::kinds::KindTable::default();
    assert!(kinds.all().len() > 20);
    for kind in kinds.all() {
        assert!(has(&v2["definitions"], kind), "{} in v2", kind.kind);
        let gv = if kind.group.is_empty() {
            format!("api/{}", kind.version)
        } else {
            format!("apis/{}/{}", kind.group, kind.version)
        };
        let Some(url) = index["paths"][&gv]["serverRelativeURL"].as_str() else {
            panic!("no {gv} in {index}")
        };
        let (code, _, document) = get_from(&server, url, &[]).await;
        assert_eq!(code, 200);
        let document = json(&document);
        assert!(
            has(&document["components"]["schemas"], kind),
            "{} in {gv}",
            kind.kind
        );
    }
}
/// kubectl 1.27's `create --validate=true` finds from `/openapi/v3` that the server checks
/// fields (`fieldValidation`) and leaves it to it, as against kube-apiserver; the unknown field
/// comes back in kube's words.
#[tokio::test]
async fn kubectl_1_27_validate_true_reports_an_unknown_field() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  bogus: 1\n  containers:\n  - name: c\n    image: nginx\n";
    let (success, out, err) = kubectl(
        KUBECTL_127,
        &url,
        &["create", "--validate=true", "-f", "-"],
        &[],
        Some(pod),
    )
    .await;
    assert!(!success, "{out}");
    // The last line: kubectl warns first that there is no kubeconfig.
    assert_eq!(
        err.trim().lines().last().unwrap_or(""),
        "Error from server (BadRequest): error when creating \"STDIN\": Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: unknown field \"spec.bogus\""
    );
}

/// `kubectl apply` with the schemas served: the v3 PATCH operations name no strategic merge
/// patch body (nor do v2's absent paths), so kubectl builds the patch from its compiled-in
/// types, as it must to merge `containers` by `name`: dropping a container from the file
/// deletes that one only, and an env var another client added to the other survives.
async fn apply_merges_containers_by_name(binary: &str) {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let s = url.as_str();
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector:\n    matchLabels: {app: d}\n  template:\n    metadata:\n      labels: {app: d}\n    spec:\n      containers:\n      - name: a\n        image: nginx\n";
    let run = |args: Vec<&'static str>, stdin: Option<String>| async move {
        let (success, out, err) = kubectl(binary, s, &args, &[], stdin.as_deref()).await;
        assert!(success, "kubectl {args:?}: {out}{err}");
        out
    };
    let both = format!("{deploy}      - name: b\n        image: busybox\n");
    run(vec!["apply", "-f", "-"], Some(both)).await;
    run(
        vec!["set", "env", "deployment/d", "-c", "a", "FOO=bar"],
        None,
    )
    .await;
    run(vec!["apply", "-f", "-"], Some(deploy.to_string())).await;
    let out = run(
        vec![
            "get",
            "deployment",
            "d",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name} {.spec.template.spec.containers[0].env[0].name}",
        ],
        None,
    )
    .await;
    assert_eq!(out, "a FOO");
}

#[tokio::test]
async fn kubectl_1_33_apply_merges_containers_by_name() {
    apply_merges_containers_by_name(KUBECTL_133).await;
}

#[tokio::test]
async fn kubectl_1_27_apply_merges_containers_by_name() {
    apply_merges_containers_by_name(KUBECTL_127).await;
}

/// `kubectl explain` knows every kind the table serves, with its upstream description's first
/// words (over v3 with 1.33, over v2 with 1.27).
#[tokio::test]
async fn every_served_kind_explains() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let kinds = capstan_apiserver::kinds::KindTable::default();
    for kind in kinds.all() {
        // explain reads `a.b.c` as resource a, fields b.c: the group goes in --api-version,
        // as users pick events.k8s.io's Event over core's.
        let resource = kind.plural;
        let api_version = format!("--api-version={}", kind.api_version());
        for (binary, over_v2) in [(KUBECTL_133, false), (KUBECTL_127, true)] {
            let out = explain(binary, &url, &[resource, &api_version], over_v2).await;
            let first_line = out.lines().find(|l| l.starts_with("KIND:"));
            assert_eq!(
                first_line.map(|l| l.trim_start_matches("KIND:").trim()),
                Some(kind.kind),
                "{resource}: {out}"
            );
            assert!(
                out.contains("DESCRIPTION:") && out.contains("metadata"),
                "{resource}: {out}"
            );
        }
    }
}

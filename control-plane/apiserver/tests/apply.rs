//! Server-side apply and managedFields over HTTP, through kube-rs and the python client: the
//! PatchOptions checks, dry run, the status subresource, clearing and invalid managedFields,
//! the default manager from the User-Agent, and fieldValidation of patches.

mod common;

use bytes::Bytes;
use capstan_apiserver::{ApiServer, RequestUser};
use http::Request;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

const APPLY: &str = "application/apply-patch+yaml";
const MERGE: &str = "application/merge-patch+json";
const CMS: &str = "/api/v1/namespaces/default/configmaps";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

/// One request with a User-Agent; returns the code, the Warning headers and the body.
async fn send(
    server: &ApiServer,
    method: &str,
    uri: &str,
    content_type: &str,
    body: &str,
) -> (u16, Vec<String>, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .header("user-agent", "mytool/1.0 (linux/amd64) capstan-test")
        .body(Full::new(Bytes::from(body.to_string())));
    let Ok(request) = request else {
        panic!("request")
    };
    let response = server.handle(request, &RequestUser::admin()).await;
    let code = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let bytes = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    (
        code,
        warnings,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn entries(object: &Value) -> Vec<(String, String, String)> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or("").to_string(),
                        e["operation"].as_str().unwrap_or("").to_string(),
                        e["subresource"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: \"1\"\n";

#[tokio::test]
async fn patch_options_are_checked_as_upstream() {
    let (server, _) = common::server().await;
    let (code, _, status) = send(&server, "PATCH", &format!("{CMS}/c"), APPLY, CM).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    assert_eq!(status["details"]["causes"][0]["field"], "fieldManager");
    let cbor = send(
        &server,
        "PATCH",
        &format!("{CMS}/c?fieldManager=m"),
        "application/apply-patch+cbor",
        "",
    )
    .await;
    assert_eq!(cbor.0, 415, "{}", cbor.2);
    assert!(
        cbor.2["message"]
            .as_str()
            .is_some_and(|m| m.contains("accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")),
        "{}",
        cbor.2
    );
    let forced = send(
        &server,
        "PATCH",
        &format!("{CMS}/c?force=true"),
        MERGE,
        "{}",
    )
    .await;
    assert_eq!(forced.0, 422);
    assert_eq!(
        forced.2["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch"
    );
    let with_managed = CM.replace("  name: c\n", "  name: c\n  managedFields: []\n");
    let refused = send(
        &server,
        "PATCH",
        &format!("{CMS}/c?fieldManager=m"),
        APPLY,
        &with_managed,
    )
    .await;
    assert_eq!(
        (refused.0, refused.2["message"].clone()),
        (400, json!("metadata.managedFields must be nil"))
    );
    let wrong_version = CM.replace("apiVersion: v1", "apiVersion: v2");
    let refused = send(
        &server,
        "PATCH",
        &format!("{CMS}/c?fieldManager=m"),
        APPLY,
        &wrong_version,
    )
    .await;
    assert_eq!(refused.0, 400, "{}", refused.2);
    let unknown = format!("{CM}bogus: 1\n");
    let refused = send(
        &server,
        "PATCH",
        &format!("{CMS}/c?fieldManager=m"),
        APPLY,
        &unknown,
    )
    .await;
    assert_eq!(refused.0, 500);
    assert_eq!(
        refused.2["message"],
        "failed to create typed patch object (default/c; /v1, Kind=ConfigMap): .bogus: field not declared in schema"
    );
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  template:\n    spec:\n      containers:\n      - {name: c, image: i, bogus: 1}\n";
    let refused = send(
        &server,
        "PATCH",
        &format!("{DEPLOYS}/d?fieldManager=m"),
        APPLY,
        deploy,
    )
    .await;
    assert_eq!(
        refused.2["message"],
        "failed to create typed patch object (default/d; apps/v1, Kind=Deployment): .spec.template.spec.containers[name=\"c\"].bogus: field not declared in schema"
    );
    let keyless = deploy.replace("bogus: 1", "env: [{value: v}]");
    let refused = send(
        &server,
        "PATCH",
        &format!("{DEPLOYS}/d?fieldManager=m"),
        APPLY,
        &keyless,
    )
    .await;
    assert_eq!(
        refused.2["message"],
        "failed to create typed patch object (default/d; apps/v1, Kind=Deployment): .spec.template.spec.containers[name=\"c\"].env: element 0: associative list with keys has an element that omits key field \"name\" (and doesn't have default value)"
    );
}

#[tokio::test]
async fn apply_creates_with_dry_run_and_records_the_manager() {
    let (server, _) = common::server().await;
    let dry = send(
        &server,
        "PATCH",
        &format!("{CMS}/c?fieldManager=m&dryRun=All"),
        APPLY,
        CM,
    )
    .await;
    assert_eq!(dry.0, 201, "{}", dry.2);
    assert_eq!(
        entries(&dry.2),
        vec![("m".into(), "Apply".into(), "".into())]
    );
    let (code, _, _) = send(&server, "GET", &format!("{CMS}/c"), "", "").await;
    assert_eq!(code, 404, "dry run stored nothing");

    let (code, _, created) = send(
        &server,
        "PATCH",
        &format!("{CMS}/c?fieldManager=m"),
        APPLY,
        CM,
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert!(created["metadata"]["uid"].is_string());
    let again = send(
        &server,
        "PATCH",
        &format!("{CMS}/c?fieldManager=m"),
        APPLY,
        CM,
    )
    .await;
    assert_eq!(again.0, 200);
    assert_eq!(
        again.2["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"],
        "applying the same configuration writes nothing"
    );

    // A merge patch without fieldManager is the User-Agent's first segment's.
    let patched = send(
        &server,
        "PATCH",
        &format!("{CMS}/c"),
        MERGE,
        r#"{"data":{"b":"2"}}"#,
    )
    .await;
    assert_eq!(patched.0, 200, "{}", patched.2);
    assert_eq!(
        entries(&patched.2),
        vec![
            ("m".into(), "Apply".into(), "".into()),
            ("mytool".into(), "Update".into(), "".into())
        ]
    );

    // `[{}]` clears them; an invalid entry in a PUT keeps the stored ones.
    let mut invalid = patched.2.clone();
    invalid["metadata"]["managedFields"] = json!([{"manager": "x", "operation": "Sideways"}]);
    let kept = send(
        &server,
        "PUT",
        &format!("{CMS}/c"),
        "application/json",
        &invalid.to_string(),
    )
    .await;
    assert_eq!(kept.0, 200, "{}", kept.2);
    assert_eq!(entries(&kept.2).len(), 2, "{}", kept.2);
    let cleared = send(
        &server,
        "PATCH",
        &format!("{CMS}/c"),
        MERGE,
        r#"{"metadata":{"managedFields":[{}]}}"#,
    )
    .await;
    assert_eq!(cleared.0, 200);
    assert_eq!(
        cleared.2["metadata"].get("managedFields"),
        None,
        "{}",
        cleared.2
    );
}

#[tokio::test]
async fn apply_to_status_owns_status_only() {
    let (server, _) = common::server().await;
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: d}\n  template:\n    metadata:\n      labels: {app: d}\n    spec:\n      containers:\n      - {name: c, image: i}\n";
    let (code, _, _) = send(
        &server,
        "PATCH",
        &format!("{DEPLOYS}/d?fieldManager=owner"),
        APPLY,
        deploy,
    )
    .await;
    assert_eq!(code, 201);
    let status = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  replicas: 9\nstatus:\n  replicas: 1\n  readyReplicas: 1\n";
    let (code, _, object) = send(
        &server,
        "PATCH",
        &format!("{DEPLOYS}/d/status?fieldManager=controller"),
        APPLY,
        status,
    )
    .await;
    assert_eq!(code, 200, "{object}");
    assert_eq!(object["status"]["readyReplicas"], 1);
    assert_eq!(
        object["spec"]["replicas"], 1,
        "status writes leave the spec"
    );
    assert!(
        entries(&object).contains(&("controller".into(), "Apply".into(), "status".into())),
        "{object}"
    );
    let controller = object["metadata"]["managedFields"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["manager"] == "controller"))
        .map(|e| e["fieldsV1"].clone());
    assert_eq!(
        controller,
        Some(json!({"f:status": {"f:readyReplicas": {}, "f:replicas": {}}}))
    );
    let (code, _, object) = send(
        &server,
        "PATCH",
        &format!("{DEPLOYS}/d/status?fieldManager=ctl"),
        MERGE,
        r#"{"status":{"availableReplicas":1}}"#,
    )
    .await;
    assert_eq!(code, 200, "{object}");
    assert!(
        entries(&object).contains(&("ctl".into(), "Update".into(), "status".into())),
        "{object}"
    );
}

#[tokio::test]
async fn patches_honour_field_validation() {
    let (server, _) = common::server().await;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "v"}});
    let (code, _) = common::json(&server, "POST", CMS, &cm).await;
    assert_eq!(code, 201);
    let unknown = r#"{"spec":{"foo":1}}"#;
    let strict = send(
        &server,
        "PATCH",
        &format!("{CMS}/v?fieldValidation=Strict"),
        "application/strategic-merge-patch+json",
        unknown,
    )
    .await;
    assert_eq!(strict.0, 422, "{}", strict.2);
    assert_eq!(
        strict.2["message"],
        " \"\" is invalid: patch: Invalid value: \"map[spec:map[foo:1]]\": strict decoding error: unknown field \"spec\""
    );
    let warned = send(
        &server,
        "PATCH",
        &format!("{CMS}/v?fieldValidation=Warn"),
        MERGE,
        unknown,
    )
    .await;
    assert_eq!(warned.0, 200);
    assert_eq!(
        warned.1,
        vec!["299 - \"unknown field \\\"spec\\\"\"".to_string()]
    );
    let ignored = send(
        &server,
        "PATCH",
        &format!("{CMS}/v?fieldValidation=Ignore"),
        MERGE,
        r#"{"data":{"x":"1"}}"#,
    )
    .await;
    assert_eq!((ignored.0, ignored.1.len()), (200, 0));
}

#[tokio::test]
async fn kube_rs_server_side_apply() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let Ok(uri) = url.parse() else { panic!("url") };
    let client = match kube::Client::try_from(kube::Config::new(uri)) {
        Ok(client) => client,
        Err(error) => panic!("client: {error}"),
    };
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kr"}, "data": {"k": "v"}});
    let created = api
        .patch("kr", &PatchParams::apply("mgr"), &Patch::Apply(&config))
        .await;
    let Ok(created) = created else {
        panic!("apply: {created:?}")
    };
    let managed = created.metadata.managed_fields.unwrap_or_default();
    assert_eq!(managed.len(), 1);
    assert_eq!(managed[0].manager.as_deref(), Some("mgr"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));

    let other = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kr"}, "data": {"k": "w"}});
    let conflict = api
        .patch("kr", &PatchParams::apply("other"), &Patch::Apply(&other))
        .await;
    match conflict {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 409);
            assert_eq!(status.reason, "Conflict");
            assert_eq!(
                status.message,
                "Apply failed with 1 conflict: conflict with \"mgr\": .data.k"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let forced = api
        .patch(
            "kr",
            &PatchParams::apply("other").force(),
            &Patch::Apply(&other),
        )
        .await;
    let Ok(forced) = forced else {
        panic!("force: {forced:?}")
    };
    assert_eq!(
        forced.data.and_then(|d| d.get("k").cloned()).as_deref(),
        Some("w")
    );
    let managers: Vec<String> = forced
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.manager)
        .collect();
    assert_eq!(
        managers,
        vec!["other".to_string()],
        "mgr lost its only field"
    );
}

/// The python `kubernetes` client's apply: a patch with `application/apply-patch+yaml` and a
/// field manager, then a conflicting one from another manager, which it raises as a 409.
const PYTHON: &str = "/var/cache/capstan-py/bin/python";
const PYTHON_APPLY: &str = r#"
import sys
from kubernetes import client
from kubernetes.client.rest import ApiException
conf = client.Configuration()
conf.host = sys.argv[1]
api = client.CoreV1Api(client.ApiClient(conf))
body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "py"}, "data": {"k": "1"}}
cm = api.patch_namespaced_config_map("py", "default", body, field_manager="py-mgr",
                                     _content_type="application/apply-patch+yaml")
entry = cm.metadata.managed_fields[0]
print("applied", entry.manager, entry.operation, cm.data["k"])
body["data"]["k"] = "2"
try:
    api.patch_namespaced_config_map("py", "default", body, field_manager="other",
                                    _content_type="application/apply-patch+yaml")
    print("no conflict")
except ApiException as e:
    print("conflict", e.status)
"#;

#[tokio::test]
async fn python_client_server_side_apply() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let output = tokio::process::Command::new(PYTHON)
        .arg("-c")
        .arg(PYTHON_APPLY)
        .arg(&url)
        .kill_on_drop(true)
        .output()
        .await;
    let Ok(output) = output else {
        panic!("cannot run {PYTHON}")
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout, "applied py-mgr Apply 1\nconflict 409\n");
}

#[tokio::test]
async fn service_ports_merge_by_port_and_protocol() {
    let (server, _) = common::server().await;
    let svcs = "/api/v1/namespaces/default/services/web?fieldManager=owner";
    let two = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80}\n  - {name: https, port: 443}\n";
    let (code, _, created) = send(&server, "PATCH", svcs, APPLY, two).await;
    assert_eq!(code, 201, "{created}");
    // Another writer adds a port; the owner then drops https from its configuration.
    let (code, _, _) = send(
        &server,
        "PATCH",
        "/api/v1/namespaces/default/services/web?fieldManager=ops",
        "application/strategic-merge-patch+json",
        r#"{"spec":{"ports":[{"name":"metrics","port":9090}]}}"#,
    )
    .await;
    assert_eq!(code, 200);
    let one = two.replace("  - {name: https, port: 443}\n", "");
    let (code, _, object) = send(&server, "PATCH", svcs, APPLY, &one).await;
    assert_eq!(code, 200, "{object}");
    let ports: Vec<i64> = object["spec"]["ports"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["port"].as_i64()).collect())
        .unwrap_or_default();
    assert_eq!(ports, vec![80, 9090], "{object}");
    let owner = object["metadata"]["managedFields"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["manager"] == "owner"))
        .map(|e| e["fieldsV1"]["f:spec"]["f:ports"].clone())
        .unwrap_or_default();
    assert_eq!(
        owner,
        json!({"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}}})
    );
}

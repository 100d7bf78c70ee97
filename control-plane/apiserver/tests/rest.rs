//! Object semantics through `ApiServer::handle`, as kube-apiserver answers them.

mod common;

use std::time::Duration;

use bytes::Bytes;
use capstan_apiserver::RequestUser;
use capstan_store::Store;
use common::{call, json, server};
use futures::StreamExt;
use http::Request;
use http_body_util::{BodyExt, BodyStream, Full};
use serde_json::{Value, json};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn cm(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

#[tokio::test]
async fn create_get_update_conflict_delete() {
    let (server, _) = server().await;
    let (code, created) = json(&server, "POST", CMS, &cm("a", json!({}))).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["namespace"], "default");
    assert_eq!(created["metadata"]["uid"].as_str().map(str::len), Some(36));
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(rv.parse::<i64>().is_ok(), "{rv}");

    let (code, again) = json(&server, "POST", CMS, &cm("a", json!({}))).await;
    assert_eq!(
        (code, again["reason"].clone()),
        (409, json!("AlreadyExists"))
    );

    let mut changed = created.clone();
    changed["data"]["k"] = json!("w");
    let (code, updated) = json(&server, "PUT", &format!("{CMS}/a"), &changed).await;
    assert_eq!(code, 200, "{updated}");
    assert_ne!(updated["metadata"]["resourceVersion"], json!(rv));
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);

    // The same stale resourceVersion again: kube's optimistic-concurrency Conflict.
    let (code, conflict) = json(&server, "PUT", &format!("{CMS}/a"), &changed).await;
    assert_eq!(code, 409);
    assert_eq!(conflict["reason"], "Conflict");
    assert_eq!(
        conflict["message"],
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let (code, gone) = call(&server, "DELETE", &format!("{CMS}/a"), "", "").await;
    assert_eq!((code, gone["status"].clone()), (200, json!("Success")));
    assert_eq!(gone["details"]["kind"], "configmaps");
    let (code, missing) = call(&server, "GET", &format!("{CMS}/a"), "", "").await;
    assert_eq!(code, 404);
    assert_eq!(missing["message"], "configmaps \"a\" not found");
    assert_eq!(
        missing["details"],
        json!({"name": "a", "kind": "configmaps"})
    );
}

#[tokio::test]
async fn bad_input_gets_kube_errors_and_stores_nothing() {
    let (server, store) = server().await;
    let before = store.revision().await;
    let (code, status) = call(&server, "POST", CMS, "application/json", "{not json").await;
    assert_eq!((code, status["reason"].clone()), (400, json!("BadRequest")));
    let big = format!("{{\"data\":\"{}\"}}", "x".repeat(3 * 1024 * 1024 + 1));
    let (code, status) = call(&server, "POST", CMS, "application/json", &big).await;
    assert_eq!(
        (code, status["reason"].clone()),
        (413, json!("RequestEntityTooLarge"))
    );
    let (code, status) = call(&server, "POST", CMS, "application/cbor", "x").await;
    assert_eq!(
        (code, status["reason"].clone()),
        (415, json!("UnsupportedMediaType"))
    );
    // Protobuf is decoded now: bytes that are not protobuf are a bad request.
    let (code, status) = call(
        &server,
        "POST",
        CMS,
        "application/vnd.kubernetes.protobuf",
        "x",
    )
    .await;
    assert_eq!((code, status["reason"].clone()), (400, json!("BadRequest")));
    let pod = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c"}]}});
    let (code, status) = json(&server, "POST", "/api/v1/namespaces/default/pods", &pod).await;
    assert_eq!(code, 422);
    assert_eq!(
        status["message"],
        "Pod \"web\" is invalid: spec.containers[0].image: Required value"
    );
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.containers[0].image"
    );
    let (code, status) = json(&server, "POST", CMS, &cm("Bad_Name", json!({}))).await;
    assert_eq!((code, status["reason"].clone()), (422, json!("Invalid")));
    let (code, status) = json(
        &server,
        "POST",
        "/api/v1/namespaces/nope/configmaps",
        &cm("a", json!({})),
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(status["message"], "namespaces \"nope\" not found");
    let (code, _) = call(
        &server,
        "GET",
        "/api/v1/configmaps?labelSelector=a+in+b",
        "",
        "",
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(store.revision().await, before, "nothing was stored");
}

#[tokio::test]
async fn generate_name_status_subresource_and_generation() {
    let (server, _) = server().await;
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"generateName": "web-"}, "spec": {"replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
        "status": {"replicas": 9}});
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let (code, created) = json(&server, "POST", deployments, &deploy).await;
    assert_eq!(code, 201, "{created}");
    let name = created["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert_eq!(created["status"], json!({}), "create resets status");
    assert_eq!(created["metadata"]["generation"], 1);

    let mut status = created.clone();
    status["status"] = json!({"replicas": 1});
    status["spec"]["replicas"] = json!(7);
    let (code, after) = json(
        &server,
        "PUT",
        &format!("{deployments}/{name}/status"),
        &status,
    )
    .await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["status"]["replicas"], 1);
    assert_eq!(after["spec"]["replicas"], 1, "status PUT ignores the spec");

    let mut spec = after.clone();
    spec["spec"]["replicas"] = json!(3);
    spec["status"] = json!({"replicas": 100});
    let (code, after) = json(&server, "PUT", &format!("{deployments}/{name}"), &spec).await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["status"]["replicas"], 1, "main PUT ignores status");
    assert_eq!(after["metadata"]["generation"], 2);
}

#[tokio::test]
async fn finalizers_and_namespace_termination() {
    let (server, _) = server().await;
    let mut held = cm("held", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    json(&server, "POST", CMS, &held).await;
    let (code, deleting) = call(&server, "DELETE", &format!("{CMS}/held"), "", "").await;
    assert_eq!(code, 200);
    assert!(
        deleting["metadata"]["deletionTimestamp"].is_string(),
        "{deleting}"
    );
    let (code, _) = call(&server, "GET", &format!("{CMS}/held"), "", "").await;
    assert_eq!(code, 200, "still there until its finalizer goes");
    let patch = r#"{"metadata":{"finalizers":null}}"#;
    let (code, _) = call(
        &server,
        "PATCH",
        &format!("{CMS}/held"),
        "application/merge-patch+json",
        patch,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = call(&server, "GET", &format!("{CMS}/held"), "", "").await;
    assert_eq!(code, 404, "removing the last finalizer deleted it");

    let ns = json!({"metadata": {"name": "doomed"}});
    json(&server, "POST", "/api/v1/namespaces", &ns).await;
    json(
        &server,
        "POST",
        "/api/v1/namespaces/doomed/configmaps",
        &cm("x", json!({})),
    )
    .await;
    let (code, ns) = call(&server, "DELETE", "/api/v1/namespaces/doomed", "", "").await;
    assert_eq!(
        (code, ns["status"]["phase"].clone()),
        (200, json!("Terminating"))
    );
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]), "{ns}");
    // Until the namespace controller finalizes it, it stays, refusing new content.
    let (code, status) = json(
        &server,
        "POST",
        "/api/v1/namespaces/doomed/configmaps",
        &cm("y", json!({})),
    )
    .await;
    assert_eq!((code, status["reason"].clone()), (403, json!("Forbidden")));
    let (code, again) = call(&server, "DELETE", "/api/v1/namespaces/doomed", "", "").await;
    assert_eq!(
        (code, again["status"]["phase"].clone()),
        (200, json!("Terminating"))
    );
    let mut finalized = ns.clone();
    finalized["spec"] = json!({"finalizers": []});
    let (code, body) = json(
        &server,
        "PUT",
        "/api/v1/namespaces/doomed/finalize",
        &finalized,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, _) = call(&server, "GET", "/api/v1/namespaces/doomed", "", "").await;
    assert_eq!(code, 404, "finalized, the terminating namespace went");
}

#[tokio::test]
async fn list_selectors_and_pages() {
    let (server, store) = server().await;
    for i in 0..5 {
        let tier = if i % 2 == 0 { "front" } else { "back" };
        json(
            &server,
            "POST",
            CMS,
            &cm(&format!("c{i}"), json!({"tier": tier})),
        )
        .await;
    }
    let names = |list: &Value| -> Vec<String> {
        list["items"].as_array().map_or(vec![], |items| {
            items
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str().map(String::from))
                .collect()
        })
    };
    let (_, front) = call(
        &server,
        "GET",
        &format!("{CMS}?labelSelector=tier%3Dfront"),
        "",
        "",
    )
    .await;
    assert_eq!(names(&front), ["c0", "c2", "c4"]);
    assert_eq!(front["kind"], "ConfigMapList");
    let (_, not_back) = call(
        &server,
        "GET",
        &format!("{CMS}?labelSelector=tier+notin+(back),tier"),
        "",
        "",
    )
    .await;
    assert_eq!(names(&not_back), ["c0", "c2", "c4"]);
    let (_, by_name) = call(
        &server,
        "GET",
        "/api/v1/configmaps?fieldSelector=metadata.name%3Dc3",
        "",
        "",
    )
    .await;
    assert_eq!(names(&by_name), ["c3"]);

    let (_, page1) = call(&server, "GET", &format!("{CMS}?limit=2"), "", "").await;
    assert_eq!(names(&page1), ["c0", "c1"]);
    assert_eq!(page1["metadata"]["remainingItemCount"], 3);
    let token = page1["metadata"]["continue"]
        .as_str()
        .unwrap_or("")
        .to_string();
    // A write between pages is not seen: every page reads at the first page's revision.
    json(&server, "POST", CMS, &cm("c10", json!({}))).await;
    let (_, page2) = call(
        &server,
        "GET",
        &format!("{CMS}?limit=10&continue={token}"),
        "",
        "",
    )
    .await;
    assert_eq!(names(&page2), ["c2", "c3", "c4"]);
    assert_eq!(
        page2["metadata"]["resourceVersion"],
        page1["metadata"]["resourceVersion"]
    );

    let revision = store.revision().await.unwrap_or(0);
    let _ = store.compact(revision).await;
    let (code, expired) = call(
        &server,
        "GET",
        &format!("{CMS}?limit=10&continue={token}"),
        "",
        "",
    )
    .await;
    assert_eq!((code, expired["reason"].clone()), (410, json!("Expired")));
}

/// Reads watch events from a streaming response until `count` arrived or the deadline.
async fn watch_events(
    server: &capstan_apiserver::ApiServer,
    uri: &str,
) -> BodyStream<capstan_apiserver::body::ApiBody> {
    let request = Request::builder().uri(uri).body(Full::new(Bytes::new()));
    let Ok(request) = request else {
        panic!("request")
    };
    let response = server.handle(request, &RequestUser::admin()).await;
    assert_eq!(response.status().as_u16(), 200);
    BodyStream::new(response.into_body())
}

async fn next_event(stream: &mut BodyStream<capstan_apiserver::body::ApiBody>) -> Value {
    let frame = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    let Ok(Some(Ok(frame))) = frame else {
        panic!("no watch event in time")
    };
    let Ok(data) = frame.into_data() else {
        panic!("not a data frame")
    };
    serde_json::from_slice(&data).unwrap_or(Value::Null)
}

#[tokio::test]
async fn watch_follows_selectors_bookmarks_and_expires() {
    let (server, store) = server().await;
    let (_, created) = json(&server, "POST", CMS, &cm("w", json!({"app": "a"}))).await;
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let mut events = watch_events(
        &server,
        &format!(
            "{CMS}?watch=true&labelSelector=app%3Da&resourceVersion={rv}&allowWatchBookmarks=true"
        ),
    )
    .await;
    let mut relabel = created.clone();
    relabel["metadata"]["labels"]["app"] = json!("b");
    relabel["metadata"]["resourceVersion"] = json!(null);
    json(&server, "PUT", &format!("{CMS}/w"), &relabel).await;
    let left = next_event(&mut events).await;
    assert_eq!(
        left["type"], "DELETED",
        "leaving the selector is a DELETED: {left}"
    );
    relabel["metadata"]["labels"]["app"] = json!("a");
    json(&server, "PUT", &format!("{CMS}/w"), &relabel).await;
    assert_eq!(next_event(&mut events).await["type"], "ADDED");
    let bookmark = next_event(&mut events).await;
    assert_eq!(bookmark["type"], "BOOKMARK", "{bookmark}");

    // Without a resourceVersion the watch starts with the current state.
    let mut fresh = watch_events(&server, &format!("{CMS}?watch=1")).await;
    assert_eq!(next_event(&mut fresh).await["type"], "ADDED");

    let revision = store.revision().await.unwrap_or(0);
    let _ = store.compact(revision).await;
    let mut old = watch_events(&server, &format!("{CMS}?watch=true&resourceVersion=1")).await;
    let error = next_event(&mut old).await;
    assert_eq!(error["type"], "ERROR");
    assert_eq!(
        (
            error["object"]["code"].clone(),
            error["object"]["reason"].clone()
        ),
        (json!(410), json!("Expired"))
    );

    let mut timed = watch_events(
        &server,
        &format!("{CMS}?watch=true&resourceVersion={revision}&timeoutSeconds=1"),
    )
    .await;
    let ended = tokio::time::timeout(Duration::from_secs(5), timed.next()).await;
    assert!(matches!(ended, Ok(None)), "timeoutSeconds ends the watch");
}

#[tokio::test]
async fn discovery_documents() {
    let (server, _) = server().await;
    let (_, api) = call(&server, "GET", "/api", "", "").await;
    assert_eq!(api["versions"], json!(["v1"]));
    let (_, v1) = call(&server, "GET", "/api/v1", "", "").await;
    let names: Vec<&str> = v1["resources"].as_array().map_or(vec![], |r| {
        r.iter().filter_map(|r| r["name"].as_str()).collect()
    });
    assert!(
        names.contains(&"pods/status") && names.contains(&"configmaps"),
        "{names:?}"
    );
    let (_, apis) = call(&server, "GET", "/apis", "", "").await;
    assert_eq!(apis["groups"][0]["name"], "apps");
    let (code, version) = call(&server, "GET", "/version", "", "").await;
    assert_eq!(
        (code, version["gitVersion"].clone()),
        (200, json!("v1.33.0-capstan"))
    );
    let request = Request::builder()
        .uri("/apis")
        .header(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .body(Full::new(Bytes::new()));
    let Ok(request) = request else {
        panic!("request")
    };
    let response = server.handle(request, &RequestUser::admin()).await;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    assert_eq!(
        content_type.as_deref(),
        Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    );
    let body = match response.into_body().collect().await {
        Ok(body) => body,
        Err(never) => match never {},
    };
    let list: Value = serde_json::from_slice(&body.to_bytes()).unwrap_or(Value::Null);
    assert_eq!(list["kind"], "APIGroupDiscoveryList");
    assert_eq!(
        list["items"][0]["versions"][0]["resources"][0]["resource"],
        "deployments"
    );
}

#[tokio::test]
async fn created_pods_get_their_qos_class() {
    let (server, _) = server().await;
    let pods = "/api/v1/namespaces/default/pods";
    let pod = |name: &str, resources: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}})
    };
    let cases = [
        ("none", json!({}), "BestEffort"),
        // Requests default to the limits, so limits alone are Guaranteed.
        (
            "limits",
            json!({"limits": {"cpu": "500m", "memory": "64Mi"}}),
            "Guaranteed",
        ),
        ("some", json!({"requests": {"cpu": "100m"}}), "Burstable"),
    ];
    for (name, resources, expected) in cases {
        let (code, created) = json(&server, "POST", pods, &pod(name, resources)).await;
        assert_eq!(code, 201, "{created}");
        assert_eq!(created["status"]["qosClass"], expected, "{name}");
    }
}

#[tokio::test]
async fn a_client_taking_protobuf_only_is_told_what_is_served() {
    let (server, _) = server().await;
    let get = |accept: &'static str| {
        let server = &server;
        async move {
            let request = Request::builder()
                .uri(CMS)
                .header("accept", accept)
                .body(Full::new(Bytes::new()));
            let Ok(request) = request else {
                panic!("request")
            };
            let response = server.handle(request, &RequestUser::admin()).await;
            let code = response.status().as_u16();
            let bytes = match response.into_body().collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let status: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (code, status)
        }
    };
    let (code, status) = get("application/vnd.kubernetes.protobuf").await;
    assert_eq!(
        (code, status["reason"].clone()),
        (406, json!("NotAcceptable"))
    );
    assert_eq!(
        status["message"],
        "only the following media types are accepted: application/json, application/yaml"
    );
    // client-go's default for components: protobuf first, JSON as the fallback.
    let (code, list) = get("application/vnd.kubernetes.protobuf, application/json").await;
    assert_eq!((code, list["kind"].clone()), (200, json!("ConfigMapList")));
    let (code, _) = get("*/*").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn propagation_policies_set_the_garbage_collectors_finalizers() {
    let (server, _) = server().await;
    let delete = |name: &str, body: &str| {
        let path = format!("{CMS}/{name}");
        let body = body.to_string();
        let server = &server;
        async move { call(server, "DELETE", &path, "application/json", &body).await }
    };
    for name in ["fg", "orphaned", "bg", "legacy", "bad"] {
        json(&server, "POST", CMS, &cm(name, json!({}))).await;
    }
    let (code, fg) = delete("fg", r#"{"propagationPolicy":"Foreground"}"#).await;
    assert_eq!(code, 200, "{fg}");
    assert_eq!(fg["metadata"]["finalizers"], json!(["foregroundDeletion"]));
    assert!(fg["metadata"]["deletionTimestamp"].is_string(), "{fg}");
    let (code, _) = call(&server, "GET", &format!("{CMS}/fg"), "", "").await;
    assert_eq!(code, 200, "kept until the collector removes the finalizer");
    let (_, orphaned) = delete("orphaned", r#"{"propagationPolicy":"Orphan"}"#).await;
    assert_eq!(orphaned["metadata"]["finalizers"], json!(["orphan"]));
    // A second delete with another policy switches the finalizer.
    let (_, switched) = delete("orphaned", r#"{"propagationPolicy":"Foreground"}"#).await;
    assert_eq!(
        switched["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    let (code, _) = delete("bg", r#"{"propagationPolicy":"Background"}"#).await;
    assert_eq!(code, 200);
    let (code, _) = call(&server, "GET", &format!("{CMS}/bg"), "", "").await;
    assert_eq!(code, 404, "background deletes at once");
    let (code, legacy) = delete("legacy", r#"{"orphanDependents":false}"#).await;
    assert_eq!(code, 200, "deleted at once: {legacy}");
    let (code, bad) = delete("bad", r#"{"propagationPolicy":"Sideways"}"#).await;
    assert_eq!(code, 422, "{bad}");
    let (code, both) = delete(
        "bad",
        r#"{"propagationPolicy":"Orphan","orphanDependents":true}"#,
    )
    .await;
    assert_eq!(code, 422, "{both}");

    // ReplicationControllers orphan by default (upstream's DefaultGarbageCollectionPolicy).
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "rc"},
        "spec": {"replicas": 0, "selector": {"app": "x"}, "template": {
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let (code, created) = json(&server, "POST", rcs, &rc).await;
    assert_eq!(code, 201, "{created}");
    let (code, marked) = call(&server, "DELETE", &format!("{rcs}/rc"), "", "").await;
    assert_eq!(code, 200, "{marked}");
    assert_eq!(marked["metadata"]["finalizers"], json!(["orphan"]));
}

/// Merge patches that do not name a resourceVersion never fail for one another: a conflict
/// with a concurrent write is retried on the newer object, as kube-apiserver's patcher does.
/// One that names a stale resourceVersion is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_merge_patches_all_land() {
    let (server, _) = server().await;
    let uri = "/api/v1/namespaces/default/configmaps";
    let (code, body) = json(
        &server,
        "POST",
        uri,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared"}}),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    for round in 0..10 {
        let writers = (0..4).map(|writer| {
            let server = server.clone();
            tokio::spawn(async move {
                let patch = json!({"data": {format!("k{round}-{writer}"): "v"}}).to_string();
                call(
                    &server,
                    "PATCH",
                    "/api/v1/namespaces/default/configmaps/shared",
                    "application/merge-patch+json",
                    &patch,
                )
                .await
            })
        });
        for (code, body) in futures::future::join_all(writers)
            .await
            .into_iter()
            .map(Result::unwrap)
        {
            assert_eq!(code, 200, "{body}");
        }
    }
    let (_, map) = json(&server, "GET", &format!("{uri}/shared"), &Value::Null).await;
    assert_eq!(map["data"].as_object().map(|d| d.len()), Some(40), "{map}");
    let stale = json!({"metadata": {"resourceVersion": "1"}, "data": {"late": "v"}}).to_string();
    let (code, _) = call(
        &server,
        "PATCH",
        &format!("{uri}/shared"),
        "application/merge-patch+json",
        &stale,
    )
    .await;
    assert_eq!(code, 409);
}

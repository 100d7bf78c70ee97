//! Per-kind validation and defaults of the commonly written kinds, as kubectl users see them:
//! workload selectors against template labels, Job defaults and generated labels, CronJob
//! schedules, ConfigMap and Secret keys and sizes, Secrets' stringData.

mod common;

use serde_json::{Value, json};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn workload(kind: &str, api: &str, selector: Value, labels: Value, restart: &str) -> Value {
    json!({"apiVersion": api, "kind": kind, "metadata": {"name": "w"},
        "spec": {"selector": selector, "template": {"metadata": {"labels": labels},
            "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "nginx"}]}}}})
}

#[tokio::test]
async fn workload_selectors_must_match_their_templates() {
    let (server, _) = common::server().await;
    for (kind, plural) in [
        ("Deployment", "deployments"),
        ("ReplicaSet", "replicasets"),
        ("StatefulSet", "statefulsets"),
        ("DaemonSet", "daemonsets"),
    ] {
        let path = format!("/apis/apps/v1/namespaces/default/{plural}");
        let bad = workload(
            kind,
            "apps/v1",
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "db"}),
            "Always",
        );
        let (code, error) = common::json(&server, "POST", &path, &bad).await;
        assert_eq!(code, 422, "{kind}: {error}");
        assert_eq!(
            error["message"],
            format!(
                "{kind}.apps \"w\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{{\"app\":\"db\"}}: `selector` does not match template `labels`"
            )
        );
        let mut none = bad.clone();
        none["spec"].as_object_mut().map(|s| s.remove("selector"));
        let (code, error) = common::json(&server, "POST", &path, &none).await;
        assert_eq!(code, 422);
        assert_eq!(
            error["details"]["causes"][0]["field"], "spec.selector",
            "{error}"
        );
        let good = workload(
            kind,
            "apps/v1",
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web", "tier": "x"}),
            "Always",
        );
        let (code, created) = common::json(&server, "POST", &path, &good).await;
        assert_eq!(code, 201, "{kind}: {created}");
    }
    let (_, deploy) = common::json(&server, "GET", &format!("{DEPLOYMENTS}/w"), &Value::Null).await;
    assert_eq!(deploy["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(deploy["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(deploy["spec"]["progressDeadlineSeconds"], 600);
    let never = workload(
        "Deployment",
        "apps/v1",
        json!({"matchLabels": {"app": "web"}}),
        json!({"app": "web"}),
        "Never",
    );
    let mut never = never;
    never["metadata"]["name"] = json!("never");
    let (code, error) = common::json(&server, "POST", DEPLOYMENTS, &never).await;
    assert_eq!(code, 422);
    assert_eq!(
        error["details"]["causes"][0]["field"],
        "spec.template.spec.restartPolicy"
    );
    // A replication controller without a selector selects its template's labels.
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"},
        "spec": {"template": {"metadata": {"labels": {"app": "rc"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}});
    let (code, created) = common::json(
        &server,
        "POST",
        "/api/v1/namespaces/default/replicationcontrollers",
        &rc,
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["selector"], json!({"app": "rc"}));
    assert_eq!(created["spec"]["replicas"], 1);
}

#[tokio::test]
async fn jobs_get_upstream_defaults_and_generated_labels() {
    let (server, _) = common::server().await;
    let jobs = "/apis/batch/v1/namespaces/default/jobs";
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "pi"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}}}});
    let (code, created) = common::json(&server, "POST", jobs, &job).await;
    assert_eq!(code, 201, "{created}");
    let uid = created["metadata"]["uid"].clone();
    let spec = &created["spec"];
    assert_eq!(spec["completions"], 1);
    assert_eq!(spec["parallelism"], 1);
    assert_eq!(spec["backoffLimit"], 6);
    assert_eq!(spec["completionMode"], "NonIndexed");
    assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
    assert_eq!(spec["suspend"], false);
    assert_eq!(
        spec["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    );
    let labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid);
    assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
    assert_eq!(labels["job-name"], "pi");
    let mut always = job.clone();
    always["metadata"]["name"] = json!("always");
    always["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    let (code, error) = common::json(&server, "POST", jobs, &always).await;
    assert_eq!(code, 422);
    assert_eq!(
        error["message"],
        "Job.batch \"always\" is invalid: spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
    );
}

#[tokio::test]
async fn cronjob_schedules_are_parsed() {
    let (server, _) = common::server().await;
    let cronjobs = "/apis/batch/v1/namespaces/default/cronjobs";
    let cronjob = |name: &str, schedule: &str| {
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
            "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}})
    };
    let (code, created) =
        common::json(&server, "POST", cronjobs, &cronjob("ok", "*/5 * * * *")).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(created["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(created["spec"]["failedJobsHistoryLimit"], 1);
    let (code, error) =
        common::json(&server, "POST", cronjobs, &cronjob("bad", "61 * * * *")).await;
    assert_eq!(code, 422);
    assert_eq!(
        error["message"],
        "CronJob.batch \"bad\" is invalid: spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61"
    );
    let (code, error) = common::json(&server, "POST", cronjobs, &cronjob("few", "* *")).await;
    assert_eq!(code, 422);
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("expected exactly 5 fields, found 2: [* *]")),
        "{error}"
    );
}

#[tokio::test]
async fn configmap_and_secret_keys_and_sizes() {
    let (server, _) = common::server().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let (code, error) = common::json(
        &server,
        "POST",
        cms,
        &json!({"metadata": {"name": "bad"}, "data": {"a b": "x"}}),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(error["details"]["causes"][0]["field"], "data[a b]");
    assert!(
        error["message"].as_str().is_some_and(|m| m.contains(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"
        )),
        "{error}"
    );
    let big = "x".repeat(1024 * 1024 + 1);
    let (code, error) = common::json(
        &server,
        "POST",
        cms,
        &json!({"metadata": {"name": "big"}, "data": {"k": big}}),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        error["message"],
        "ConfigMap \"big\" is invalid: []: Too long: may not be more than 1048576 bytes"
    );
    let secrets = "/api/v1/namespaces/default/secrets";
    let (code, secret) = common::json(
        &server,
        "POST",
        secrets,
        &json!({"metadata": {"name": "s"}, "stringData": {"user": "admin"}}),
    )
    .await;
    assert_eq!(code, 201, "{secret}");
    assert_eq!(secret["data"], json!({"user": "YWRtaW4="}));
    assert_eq!(secret["type"], "Opaque");
    assert!(secret.get("stringData").is_none());
    // Immutable data stays.
    let (code, _) = common::json(
        &server,
        "POST",
        cms,
        &json!({"metadata": {"name": "frozen"}, "data": {"a": "1"}, "immutable": true}),
    )
    .await;
    assert_eq!(code, 201);
    let (code, error) = common::call(
        &server,
        "PATCH",
        &format!("{cms}/frozen"),
        "application/merge-patch+json",
        r#"{"data":{"a":"2"}}"#,
    )
    .await;
    assert_eq!(code, 422, "{error}");
    assert_eq!(
        error["details"]["causes"][0]["message"],
        "Forbidden: field is immutable when `immutable` is set"
    );
}

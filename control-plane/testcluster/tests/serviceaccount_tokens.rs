//! `serviceaccount-token` (token Secrets of missing ServiceAccounts are deleted) and
//! `legacy-serviceaccount-token-cleaner` (unused auto-generated legacy tokens are labelled
//! invalid, then deleted), with a short clean-up period.

use std::time::Duration;

use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

async fn token_secret(cluster: &TestCluster, name: &str, account: &str, uid: &str, labels: &str) {
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n  \
             annotations: {{kubernetes.io/service-account.name: {account}, \
             kubernetes.io/service-account.uid: \"{uid}\"}}\n\
             type: kubernetes.io/service-account-token\n"
        ))
        .await;
}

async fn account_uid(cluster: &TestCluster, name: &str, secrets: &[&str]) -> String {
    let listed: Vec<String> = secrets.iter().map(|s| format!("{{name: {s}}}")).collect();
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {name}}}\nsecrets: [{}]\n",
            listed.join(", ")
        ))
        .await;
    let accounts: Api<ServiceAccount> = cluster.api("default");
    match accounts.get(name).await {
        Ok(account) => account.metadata.uid.unwrap_or_default(),
        Err(error) => panic!("get {name}: {error}"),
    }
}

async fn gone(cluster: &TestCluster, name: &str) {
    let secrets: Api<Secret> = cluster.api("default");
    eventually(WAIT, &format!("{name} deleted"), || async {
        matches!(secrets.get_opt(name).await, Ok(None)).then_some(())
    })
    .await;
}

/// Tokens naming a missing account, or an account with another uid, are deleted; the token of
/// a live account stays until the account is deleted.
#[tokio::test]
async fn tokens_of_missing_service_accounts_are_deleted() {
    let cluster = TestCluster::with(ClusterOptions {
        nodes: 0,
        scheduler: false,
        controllers: vec!["serviceaccount-token".into()],
        ..ClusterOptions::default()
    })
    .await;
    let uid = account_uid(&cluster, "builder", &[]).await;
    token_secret(&cluster, "builder-token", "builder", &uid, "").await;
    token_secret(&cluster, "nobody-token", "nobody", "", "").await;
    token_secret(
        &cluster,
        "stale-token",
        "builder",
        "11111111-2222-3333-4444-555555555555",
        "",
    )
    .await;
    gone(&cluster, "nobody-token").await;
    gone(&cluster, "stale-token").await;
    let secrets: Api<Secret> = cluster.api("default");
    assert!(matches!(
        secrets.get_opt("builder-token").await,
        Ok(Some(_))
    ));
    cluster
        .kubectl_ok(&["delete", "serviceaccount", "builder"])
        .await;
    gone(&cluster, "builder-token").await;
}

/// With a one-second period: an auto-generated, unmounted, unused token is labelled
/// invalid-since today, and deleted once that label is a period old; one used recently,
/// one mounted by a pod and one its account does not list are left alone.
#[tokio::test]
async fn legacy_tokens_unused_for_the_period_are_invalidated_then_deleted() {
    let mut options = ClusterOptions {
        nodes: 0,
        scheduler: false,
        controllers: vec!["legacy-serviceaccount-token-cleaner".into()],
        ..ClusterOptions::default()
    };
    options.controller_options.legacy_token_clean_up_period = Duration::from_secs(1);
    options.controller_options.legacy_token_sync_interval = Duration::from_millis(300);
    let cluster = TestCluster::with(options).await;
    cluster
        .kubectl_ok(&[
            "create",
            "configmap",
            "-n",
            "kube-system",
            "kube-apiserver-legacy-service-account-token-tracking",
            "--from-literal=since=2020-01-01",
        ])
        .await;
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    let uid = account_uid(
        &cluster,
        "legacy",
        &["old-token", "used-token", "mounted-token"],
    )
    .await;
    // The pod is there before its Secret, so no round sees the Secret unmounted.
    cluster
        .apply(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: user}\n\
             spec: {containers: [{name: c, image: busybox}], \
             volumes: [{name: t, secret: {secretName: mounted-token}}]}\n",
        )
        .await;
    token_secret(&cluster, "old-token", "legacy", &uid, "").await;
    token_secret(
        &cluster,
        "used-token",
        "legacy",
        &uid,
        &format!("kubernetes.io/legacy-token-last-used: \"{today}\""),
    )
    .await;
    token_secret(&cluster, "mounted-token", "legacy", &uid, "").await;
    token_secret(&cluster, "unlisted-token", "legacy", &uid, "").await;
    let secrets: Api<Secret> = cluster.api("default");
    let label = "kubernetes.io/legacy-token-invalid-since";
    let invalid_since = eventually(WAIT, "old-token marked invalid", || async {
        let secret = secrets.get("old-token").await.ok()?;
        secret.metadata.labels?.get(label).cloned()
    })
    .await;
    assert_eq!(invalid_since, today);
    // A few more rounds: the others stay unmarked.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in ["used-token", "mounted-token", "unlisted-token"] {
        let secret = match secrets.get(name).await {
            Ok(secret) => secret,
            Err(error) => panic!("get {name}: {error}"),
        };
        let labels = secret.metadata.labels.unwrap_or_default();
        assert!(!labels.contains_key(label), "{name}: {labels:?}");
    }
    // Marked today, the token lives on until the mark is a period old.
    assert!(matches!(secrets.get_opt("old-token").await, Ok(Some(_))));
    let patch = json!({"metadata": {"labels": {label: "2021-06-01"}}});
    if let Err(error) = secrets
        .patch("old-token", &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        panic!("relabel: {error}");
    }
    gone(&cluster, "old-token").await;
}

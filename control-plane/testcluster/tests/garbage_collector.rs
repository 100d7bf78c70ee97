//! The garbage collector, driven as users drive it: ConfigMaps own ConfigMaps and Secrets
//! (no other controller is involved), and `kubectl delete` picks the cascade.

use std::time::Duration;

use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, PostParams};
use serde_json::json;

async fn cluster() -> TestCluster {
    TestCluster::with(ClusterOptions {
        nodes: 0,
        scheduler: false,
        controllers: vec!["garbagecollector".into()],
        ..ClusterOptions::default()
    })
    .await
}

fn parse<T: k8s_openapi::serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    match serde_json::from_value(value) {
        Ok(object) => object,
        Err(error) => panic!("object: {error}"),
    }
}

/// Creates ConfigMap `name`; its UID.
async fn owner(cms: &Api<ConfigMap>, name: &str) -> String {
    let cm: ConfigMap = parse(json!({"metadata": {"name": name}}));
    match cms.create(&PostParams::default(), &cm).await {
        Ok(created) => created.metadata.uid.unwrap_or_default(),
        Err(error) => panic!("create {name}: {error}"),
    }
}

fn reference(name: &str, uid: &str, block: bool) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid,
           "blockOwnerDeletion": block})
}

/// Creates ConfigMap `name` owned through `references`.
async fn dependent(cms: &Api<ConfigMap>, name: &str, references: Vec<serde_json::Value>) {
    let cm: ConfigMap = parse(json!({"metadata": {"name": name, "ownerReferences": references}}));
    if let Err(error) = cms.create(&PostParams::default(), &cm).await {
        panic!("create {name}: {error}");
    }
}

async fn gone(cms: &Api<ConfigMap>, name: &str) {
    eventually(
        Duration::from_secs(15),
        &format!("{name} collected"),
        || async { matches!(cms.get_opt(name).await, Ok(None)).then_some(()) },
    )
    .await;
}

/// Background (kubectl's default): the owner goes at once, its dependents after; a dependent
/// with another owner still there keeps it and loses only the reference to the one gone; a
/// Secret owned by a ConfigMap is collected too; a dependent of an owner that never existed is
/// collected.
#[tokio::test]
async fn background_deletion_collects_dependents_whose_owners_are_gone() {
    let cluster = cluster().await;
    let cms: Api<ConfigMap> = cluster.api("default");
    let secrets: Api<Secret> = cluster.api("default");
    let uid = owner(&cms, "owner").await;
    let other = owner(&cms, "other").await;
    dependent(&cms, "child", vec![reference("owner", &uid, false)]).await;
    dependent(
        &cms,
        "shared",
        vec![
            reference("owner", &uid, false),
            reference("other", &other, false),
        ],
    )
    .await;
    let secret: Secret = parse(json!({"metadata": {"name": "token",
        "ownerReferences": [reference("owner", &uid, false)]}}));
    if let Err(error) = secrets.create(&PostParams::default(), &secret).await {
        panic!("secret: {error}");
    }
    dependent(
        &cms,
        "orphan-from-birth",
        vec![reference("ghost", "0000-not-there", false)],
    )
    .await;

    let out = cluster.kubectl_ok(&["delete", "configmap", "owner"]).await;
    assert!(out.contains("deleted"), "{out}");
    gone(&cms, "child").await;
    gone(&cms, "orphan-from-birth").await;
    eventually(Duration::from_secs(15), "the secret collected", || async {
        matches!(secrets.get_opt("token").await, Ok(None)).then_some(())
    })
    .await;
    let shared = eventually(
        Duration::from_secs(15),
        "shared loses its reference to owner",
        || async {
            let cm = cms.get("shared").await.ok()?;
            let references = cm.metadata.owner_references.clone().unwrap_or_default();
            (references.len() == 1).then_some(references)
        },
    )
    .await;
    assert_eq!(shared[0].name, "other");
    assert!(matches!(cms.get_opt("other").await, Ok(Some(_))));
}

/// `kubectl delete --cascade=orphan`: the owner goes once its dependents have lost their
/// references to it; the dependents stay.
#[tokio::test]
async fn orphan_cascade_leaves_dependents_without_the_reference() {
    let cluster = cluster().await;
    let cms: Api<ConfigMap> = cluster.api("default");
    let uid = owner(&cms, "owner").await;
    let other = owner(&cms, "other").await;
    dependent(&cms, "a", vec![reference("owner", &uid, true)]).await;
    dependent(
        &cms,
        "b",
        vec![
            reference("owner", &uid, false),
            reference("other", &other, false),
        ],
    )
    .await;
    let out = cluster
        .kubectl_ok(&[
            "delete",
            "configmap",
            "owner",
            "--cascade=orphan",
            "--timeout=20s",
        ])
        .await;
    assert!(out.contains("deleted"), "{out}");
    assert!(matches!(cms.get_opt("owner").await, Ok(None)), "owner gone");
    let a = cms.get("a").await;
    let a = match a {
        Ok(a) => a,
        Err(error) => panic!("a: {error}"),
    };
    assert!(
        a.metadata.owner_references.unwrap_or_default().is_empty(),
        "a's reference to owner removed"
    );
    let b = match cms.get("b").await {
        Ok(b) => b,
        Err(error) => panic!("b: {error}"),
    };
    let left: Vec<String> = b
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(left, vec!["other".to_string()]);
    // The collector does not take them later either.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(cms.get_opt("a").await, Ok(Some(_))));
}

/// `kubectl delete --cascade=foreground`: the owner waits, marked with `foregroundDeletion`,
/// while a blocking dependent is held by a finalizer; the other dependents go first, the owner
/// last, as a watch sees it.
#[tokio::test]
async fn foreground_cascade_deletes_dependents_first_and_the_owner_last() {
    use futures::StreamExt;
    use kube::runtime::watcher::{self, Event};

    let cluster = cluster().await;
    let cms: Api<ConfigMap> = cluster.api("default");
    let uid = owner(&cms, "owner").await;
    dependent(&cms, "first", vec![reference("owner", &uid, true)]).await;
    dependent(&cms, "loose", vec![reference("owner", &uid, false)]).await;
    let held: ConfigMap = parse(json!({"metadata": {"name": "held",
        "finalizers": ["example.com/hold"],
        "ownerReferences": [reference("owner", &uid, true)]}}));
    if let Err(error) = cms.create(&PostParams::default(), &held).await {
        panic!("held: {error}");
    }
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let stream = watcher::watcher(cms.clone(), watcher::Config::default());
    let watching = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(Event::Delete(cm)) = event {
                let _ = seen_tx.send(cm.metadata.name.unwrap_or_default());
            }
        }
    });
    // Let the watch start before anything is deleted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = cluster
        .kubectl_ok(&[
            "delete",
            "configmap",
            "owner",
            "--cascade=foreground",
            "--wait=false",
        ])
        .await;
    assert!(out.contains("deleted"), "{out}");
    gone(&cms, "first").await;
    let marked = match cms.get("owner").await {
        Ok(owner) => owner,
        Err(error) => panic!("the owner waits for its blocking dependents: {error}"),
    };
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(
        marked
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string())
    );
    let waiting = match cms.get("held").await {
        Ok(held) => held,
        Err(error) => panic!("held: {error}"),
    };
    assert!(
        waiting.metadata.deletion_timestamp.is_some(),
        "held is being deleted"
    );
    cluster
        .kubectl_ok(&[
            "patch",
            "configmap",
            "held",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["foregroundDeletion"]}}"#,
        ])
        .await;
    gone(&cms, "owner").await;
    gone(&cms, "loose").await;
    let mut order = Vec::new();
    while order.len() < 4 {
        match tokio::time::timeout(Duration::from_secs(10), seen.recv()).await {
            Ok(Some(name)) => order.push(name),
            other => panic!("deletions seen {order:?}, then {other:?}"),
        }
    }
    watching.abort();
    let at = |name: &str| order.iter().position(|n| n == name);
    assert!(at("first") < at("owner"), "{order:?}");
    assert!(at("held") < at("owner"), "{order:?}");
}

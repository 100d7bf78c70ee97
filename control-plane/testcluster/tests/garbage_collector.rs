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

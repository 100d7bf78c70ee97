//! The namespace controller: `kubectl delete ns` returns once the namespace and everything in
//! it are gone (custom objects too, found through discovery); content held by a finalizer
//! keeps the namespace Terminating with upstream's conditions until the finalizer goes.

use std::time::Duration;

use capstan_store::{ListOptions, Store};
use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

async fn cluster() -> TestCluster {
    TestCluster::with(ClusterOptions {
        nodes: 0,
        scheduler: false,
        controllers: vec!["namespace".into()],
        ..ClusterOptions::default()
    })
    .await
}

const GADGETS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

const CONTENT: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: team}
data: {a: "1"}
---
apiVersion: v1
kind: Secret
metadata: {name: token, namespace: team}
stringData: {t: x}
---
apiVersion: v1
kind: Pod
metadata: {name: loose, namespace: team}
spec:
  containers: [{name: c, image: busybox}]
---
apiVersion: example.com/v1
kind: Gadget
metadata: {name: g, namespace: team}
spec: {size: 1}
"#;

/// Keys the store still holds under `prefix`.
async fn stored(cluster: &TestCluster, prefix: &str) -> usize {
    match cluster.store.list(prefix, ListOptions::default()).await {
        Ok(page) => page.items.len(),
        Err(error) => panic!("list {prefix}: {error}"),
    }
}

#[tokio::test]
async fn kubectl_delete_namespace_returns_when_it_and_its_objects_are_gone() {
    let cluster = cluster().await;
    cluster.apply(GADGETS).await;
    eventually(Duration::from_secs(10), "gadgets served", || async {
        cluster
            .kubectl(&["get", "gadgets", "-A"])
            .await
            .success
            .then_some(())
    })
    .await;
    cluster.kubectl_ok(&["create", "namespace", "team"]).await;
    cluster.apply(CONTENT).await;
    let out = cluster
        .kubectl_ok(&["delete", "namespace", "team", "--timeout=25s"])
        .await;
    assert!(out.contains("namespace \"team\" deleted"), "{out}");
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    assert!(matches!(namespaces.get_opt("team").await, Ok(None)));
    for prefix in [
        "/registry/configmaps/team/",
        "/registry/secrets/team/",
        "/registry/pods/team/",
        "/registry/example.com/gadgets/team/",
    ] {
        assert_eq!(stored(&cluster, prefix).await, 0, "{prefix} emptied");
    }
}

#[tokio::test]
async fn content_held_by_a_finalizer_keeps_the_namespace_terminating_with_conditions() {
    let cluster = cluster().await;
    cluster.kubectl_ok(&["create", "namespace", "held"]).await;
    cluster
        .apply(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kept\n  namespace: held\n  finalizers: [example.com/hold]\n",
        )
        .await;
    cluster
        .kubectl_ok(&["create", "configmap", "plain", "-n", "held"])
        .await;
    cluster
        .kubectl_ok(&["delete", "namespace", "held", "--wait=false"])
        .await;
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let status = eventually(
        Duration::from_secs(15),
        "the namespace's conditions",
        || async {
            let status = namespaces.get("held").await.ok()?.status?;
            let conditions = status.conditions.clone()?;
            conditions
                .iter()
                .any(|c| c.type_ == "NamespaceFinalizersRemaining" && c.status == "True")
                .then_some(status)
        },
    )
    .await;
    assert_eq!(status.phase.as_deref(), Some("Terminating"));
    let conditions = status.conditions.unwrap_or_default();
    let find = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    assert_eq!(
        find("NamespaceContentRemaining"),
        Some((
            "True".into(),
            Some("SomeResourcesRemain".into()),
            Some("Some resources are remaining: configmaps. has 1 resource instances".into())
        ))
    );
    assert_eq!(
        find("NamespaceFinalizersRemaining"),
        Some((
            "True".into(),
            Some("SomeFinalizersRemain".into()),
            Some(
                "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
                    .into()
            )
        ))
    );
    assert_eq!(
        find("NamespaceDeletionDiscoveryFailure"),
        Some((
            "False".into(),
            Some("ResourcesDiscovered".into()),
            Some("All resources successfully discovered".into())
        ))
    );
    let out = cluster
        .kubectl(&["get", "configmap", "plain", "-n", "held"])
        .await;
    assert!(!out.success, "the unheld ConfigMap went: {out:?}");
    let out = cluster
        .kubectl(&["create", "configmap", "late", "-n", "held"])
        .await;
    assert!(
        out.stderr.contains("because it is being terminated"),
        "{out:?}"
    );
    cluster
        .kubectl_ok(&[
            "patch",
            "configmap",
            "kept",
            "-n",
            "held",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ])
        .await;
    eventually(Duration::from_secs(15), "the namespace gone", || async {
        matches!(namespaces.get_opt("held").await, Ok(None)).then_some(())
    })
    .await;
}

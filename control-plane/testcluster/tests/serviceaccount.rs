//! Every namespace gets a `default` ServiceAccount and the `kube-root-ca.crt` ConfigMap, from
//! the controllers, and gets them back when they are deleted or changed.

use std::time::Duration;

use capstan_testcluster::{ClusterOptions, TestCluster, eventually};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{Api, DeleteParams};

const FAKE_CA: &str = "-----BEGIN CERTIFICATE-----\nZmFrZQ==\n-----END CERTIFICATE-----\n";

#[tokio::test]
async fn a_new_namespace_gets_the_default_account_and_the_root_ca_back_after_deletion() {
    let mut options = ClusterOptions {
        nodes: 0,
        scheduler: false,
        controllers: vec![
            "serviceaccount".into(),
            "root-ca-certificate-publisher".into(),
        ],
        ..ClusterOptions::default()
    };
    options.controller_options.root_ca_pem = Some(FAKE_CA.into());
    let cluster = TestCluster::with(options).await;
    cluster.kubectl_ok(&["create", "namespace", "fresh"]).await;
    let accounts: Api<ServiceAccount> = cluster.api("fresh");
    let maps: Api<ConfigMap> = cluster.api("fresh");
    let ca = || async {
        let map = maps.get_opt("kube-root-ca.crt").await.ok()??;
        map.data?.get("ca.crt").cloned()
    };
    let pem = eventually(Duration::from_secs(10), "kube-root-ca.crt", ca).await;
    assert_eq!(pem, FAKE_CA);
    let out = cluster
        .kubectl_ok(&["get", "serviceaccount", "default", "-n", "fresh"])
        .await;
    assert!(out.contains("default"), "{out}");

    // Deleted, both come back.
    let deleted = accounts.delete("default", &DeleteParams::default()).await;
    assert!(deleted.is_ok(), "{deleted:?}");
    cluster
        .kubectl_ok(&["delete", "configmap", "kube-root-ca.crt", "-n", "fresh"])
        .await;
    eventually(Duration::from_secs(10), "default recreated", || async {
        accounts.get_opt("default").await.ok()?
    })
    .await;
    eventually(Duration::from_secs(10), "kube-root-ca.crt recreated", ca).await;

    // Changed, the CA is restored.
    cluster
        .kubectl_ok(&[
            "patch",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "fresh",
            "--type=merge",
            "-p",
            r#"{"data":{"ca.crt":"tampered"}}"#,
        ])
        .await;
    eventually(Duration::from_secs(10), "the CA restored", || async {
        (ca().await? == FAKE_CA).then_some(())
    })
    .await;
    // Existing namespaces get them too.
    let system: Api<ConfigMap> = cluster.api("kube-system");
    eventually(Duration::from_secs(10), "kube-system's CA", || async {
        system.get_opt("kube-root-ca.crt").await.ok()?
    })
    .await;
}

//! The etcd store against a real etcd (Debian's etcd-server) on loopback.

use capstan_store::etcd::EtcdStore;
use capstan_store::{Store, StoreError};
use capstan_testkit::etcd::EtcdCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_store_passes_the_conformance_checks() {
    let etcd = EtcdCluster::start().unwrap();
    let endpoints = etcd.endpoints();
    let counter = std::sync::atomic::AtomicUsize::new(0);
    // Each check gets a prefix of its own in the one etcd; it measures revisions from where
    // the store starts.
    capstan_store::conformance::check_all(|| {
        let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let endpoints = endpoints.clone();
        async move {
            EtcdStore::connect(&endpoints, &format!("/conformance-{n}"))
                .await
                .unwrap()
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_live_under_the_prefix_and_a_stopped_etcd_is_unavailable() {
    let etcd = EtcdCluster::start().unwrap();
    let ours = EtcdStore::connect(&etcd.endpoints(), "/registry")
        .await
        .unwrap();
    let theirs = EtcdStore::connect(&etcd.endpoints(), "/other")
        .await
        .unwrap();
    ours.create("/pods/a", b"1".to_vec()).await.unwrap();
    assert_eq!(theirs.get("/pods/a").await.unwrap(), None);
    let everything = EtcdStore::connect(&etcd.endpoints(), "").await.unwrap();
    theirs.create("/x", b"2".to_vec()).await.unwrap();
    let listed = everything.list("", Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), 2, "an empty prefix lists every key");
    let listed = everything
        .list("/registry/", Default::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        listed.items[0].key, "/registry/pods/a",
        "stored under the prefix"
    );
    let listed = ours.list("", Default::default()).await.unwrap();
    assert_eq!(listed.items[0].key, "/pods/a", "read back without it");

    drop(etcd);
    let failed = ours.get("/pods/a").await.unwrap_err();
    assert!(matches!(failed, StoreError::Unavailable(_)), "{failed:?}");
}

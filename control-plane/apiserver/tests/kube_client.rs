//! A kube-rs client (kube 5, k8s-openapi 0.29) against a server on a loopback port: typed
//! create, list and watch, and a runtime watcher that relists after its resourceVersion was
//! compacted away (410 Gone).

mod common;

use std::time::Duration;

use capstan_store::Store;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;

fn configmap(name: &str) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.into());
    cm.data = Some([("k".to_string(), "v".to_string())].into());
    cm
}

async fn client(url: &str) -> kube::Client {
    let Ok(uri) = url.parse() else { panic!("url") };
    let config = kube::Config::new(uri);
    match kube::Client::try_from(config) {
        Ok(client) => client,
        Err(error) => panic!("client: {error}"),
    }
}

#[tokio::test]
async fn create_list_watch() {
    let (server, _) = common::server().await;
    let url = common::listen(server).await;
    let api: Api<ConfigMap> = Api::namespaced(client(&url).await, "default");
    let created = api.create(&PostParams::default(), &configmap("one")).await;
    let Ok(created) = created else {
        panic!("create: {created:?}")
    };
    assert!(created.metadata.uid.is_some());
    let listed = api.list(&ListParams::default()).await;
    let Ok(listed) = listed else {
        panic!("list: {listed:?}")
    };
    assert_eq!(listed.items.len(), 1);
    let rv = listed.metadata.resource_version.unwrap_or_default();

    let stream = api.watch(&WatchParams::default().timeout(10), &rv).await;
    let stream = match stream {
        Ok(stream) => stream,
        Err(error) => panic!("watch: {error}"),
    };
    let mut stream = stream.boxed();
    let _ = api.create(&PostParams::default(), &configmap("two")).await;
    let event = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    match event {
        Ok(Some(Ok(WatchEvent::Added(cm)))) => assert_eq!(cm.metadata.name.as_deref(), Some("two")),
        other => panic!("expected ADDED two, got {other:?}"),
    }
    let missing = api.get("nope").await;
    match missing {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 404),
        other => panic!("expected a 404 Status, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_relists_after_compaction() {
    let (server, store) = common::server().await;
    let url = common::listen(server).await;
    let client = client(&url).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let _ = api.create(&PostParams::default(), &configmap("seen")).await;
    // Short watches, so the watcher re-watches from its resourceVersion soon.
    let config = watcher::Config::default().timeout(1);
    let mut events = watcher(api.clone(), config).boxed();
    let mut inits = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut compacted = false;
    while inits < 2 {
        let next = tokio::time::timeout_at(deadline, events.next()).await;
        let Ok(Some(event)) = next else {
            panic!("watcher did not relist in time ({inits} inits)")
        };
        match event {
            Ok(watcher::Event::Init) => inits += 1,
            Ok(watcher::Event::InitDone) if !compacted => {
                // Move the store past the watcher's resourceVersion (another resource), then
                // forget that history: the next watch must get 410 Gone and relist.
                let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
                let mut secret = Secret::default();
                secret.metadata.name = Some("bump".into());
                let _ = secrets.create(&PostParams::default(), &secret).await;
                let revision = store.revision().await.unwrap_or(0);
                assert!(store.compact(revision).await.is_ok());
                compacted = true;
            }
            _ => {}
        }
    }
    assert!(compacted && inits == 2, "relisted after 410");
}

//! A kube-rs `reflector` on ConfigMaps through API server restarts: after a plain restart it
//! resumes its watch (the new server's cache did not exist at its resourceVersion, so a store
//! watch serves it) without relisting; after a restart across a compaction it gets 410, relists,
//! and converges on the store's state.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use capstan_apiserver::{AllowAllAsAdmin, ApiServer, Config, serve};
use capstan_store::Store;
use capstan_store::memory::MemoryStore;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;
use tokio::sync::oneshot;

const CMS: &str = "/api/v1/namespaces/default/configmaps";

/// An API server over `store` on `port`, on a runtime of its own so that stopping it drops
/// every connection, as a process exit does.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(store: Arc<MemoryStore>, port: u16) -> Running {
        let (stop, stopped) = oneshot::channel();
        let (ready, is_ready) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            else {
                panic!("runtime")
            };
            runtime.block_on(async move {
                let store: Arc<dyn Store> = store;
                let Ok(server) = ApiServer::new(store, config()).await else {
                    panic!("server")
                };
                let listener = loop {
                    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(listener) => break listener,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
                let _ = ready.send(());
                tokio::select! {
                    _ = serve(listener, server, Arc::new(AllowAllAsAdmin)) => {}
                    _ = stopped => {}
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        let _ = is_ready.recv_timeout(Duration::from_secs(10));
        Running {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

fn config() -> Config {
    Config {
        bookmark_interval: Duration::from_millis(300),
        ..Config::default()
    }
}

/// Writes through an API server that serves no port, while none does.
async fn offline(store: &Arc<MemoryStore>) -> Arc<ApiServer> {
    let store: Arc<dyn Store> = store.clone();
    match ApiServer::new(store, config()).await {
        Ok(server) => server,
        Err(error) => panic!("server: {error}"),
    }
}

async fn create(server: &ApiServer, name: &str) {
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": name}});
    let (code, created) = common::json(server, "POST", CMS, &body).await;
    assert_eq!(code, 201, "{created}");
}

async fn delete(server: &ApiServer, name: &str) {
    let (code, _) = common::json(server, "DELETE", &format!("{CMS}/{name}"), &json!({})).await;
    assert_eq!(code, 200);
}

/// Waits until the reflector's store holds exactly `names`.
async fn converges(reader: &reflector::Store<ConfigMap>, names: &[&str]) {
    let want: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let have: BTreeSet<String> = reader
            .state()
            .iter()
            .filter_map(|cm| cm.metadata.name.clone())
            .collect();
        if have == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reflector holds {have:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_reflector_survives_restarts_and_relists_after_compaction() {
    let store = Arc::new(MemoryStore::new());
    let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(address) => address.port(),
        Err(error) => panic!("port: {error}"),
    };
    let mut running = Running::start(store.clone(), port);
    let server = offline(&store).await;
    create(&server, "a").await;
    create(&server, "b").await;

    let Ok(uri) = format!("http://127.0.0.1:{port}").parse() else {
        panic!("url")
    };
    let Ok(client) = kube::Client::try_from(kube::Config::new(uri)) else {
        panic!("client")
    };
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store();
    let lists = Arc::new(AtomicUsize::new(0));
    let counted = lists.clone();
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::Init)) {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
    let stream = reflector(writer, events);
    let task = tokio::spawn(stream.for_each(|_| async {}));
    converges(&reader, &["a", "b"]).await;

    // A restart: the changes made meanwhile arrive by resuming the watch, no relist.
    running.stop();
    create(&server, "c").await;
    delete(&server, "a").await;
    let mut running = Running::start(store.clone(), port);
    converges(&reader, &["b", "c"]).await;
    assert_eq!(lists.load(Ordering::SeqCst), 1, "resumed, not relisted");

    // A restart across a compaction of everything the reflector last saw: 410, relist.
    running.stop();
    create(&server, "d").await;
    delete(&server, "b").await;
    let revision = store.revision().await.unwrap_or(0);
    assert!(store.compact(revision).await.is_ok());
    let _running = Running::start(store.clone(), port);
    converges(&reader, &["c", "d"]).await;
    assert_eq!(lists.load(Ordering::SeqCst), 2, "relisted after 410 Gone");
    // And it follows live changes again.
    create(&server, "e").await;
    converges(&reader, &["c", "d", "e"]).await;
    task.abort();
}

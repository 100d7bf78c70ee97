//! The watch cache: one store watch per kind however many watch, recent resourceVersions
//! replayed from memory and older ones expired as upstream, WatchList's initial events and
//! their closing bookmark, per-watcher selectors, slow watchers closed without holding back
//! others, `resourceVersion=0` lists from memory, and a store watch that breaks (resumed
//! without a gap) or falls behind compaction (listed again, watchers closed).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use capstan_apiserver::body::ApiBody;
use capstan_apiserver::{ApiServer, Config, RequestUser};
use capstan_store::memory::MemoryStore;
use capstan_store::{
    KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, WatchStream,
};
use common::{call, json};
use futures::StreamExt;
use futures::future::BoxFuture;
use http::Request;
use http_body_util::{BodyStream, Full};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

const PODS: &str = "/api/v1/namespaces/default/pods";
const CMS: &str = "/api/v1/namespaces/default/configmaps";

/// The storage prefixes of the kinds these tests watch.
const WATCHED_KINDS: &[&str] = &["/registry/pods/", "/registry/configmaps/"];

/// A MemoryStore that counts lists and watches of [`WATCHED_KINDS`], and can break its watches and hold new ones
/// back, as an etcd member going away does.
struct Probe {
    inner: MemoryStore,
    watches: AtomicUsize,
    lists: AtomicUsize,
    breaks: broadcast::Sender<()>,
    open: watch::Sender<bool>,
}

impl Probe {
    fn new() -> Arc<Probe> {
        Arc::new(Probe {
            inner: MemoryStore::new(),
            watches: AtomicUsize::new(0),
            lists: AtomicUsize::new(0),
            breaks: broadcast::channel(4).0,
            open: watch::channel(true).0,
        })
    }

    fn watches(&self) -> usize {
        self.watches.load(Ordering::SeqCst)
    }

    fn lists(&self) -> usize {
        self.lists.load(Ordering::SeqCst)
    }

    /// Ends every open watch with `Unavailable`; new ones wait until `reopen`.
    fn break_watches(&self) {
        self.open.send_replace(false);
        let _ = self.breaks.send(());
    }

    fn reopen(&self) {
        self.open.send_replace(true);
    }
}

impl Store for Probe {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>>> {
        self.inner.get(key)
    }
    fn list(&self, prefix: &str, options: ListOptions) -> BoxFuture<'_, Result<ListResult>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix, options)
    }
    fn create(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<KeyValue>> {
        self.inner.create(key, value)
    }
    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> BoxFuture<'_, Result<KeyValue>> {
        self.inner.update(key, value, expected)
    }
    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> BoxFuture<'_, Result<(KeyValue, Revision)>> {
        self.inner.delete(key, expected)
    }
    fn watch(&self, prefix: &str, after: Revision) -> BoxFuture<'_, Result<WatchStream>> {
        let prefix = prefix.to_string();
        Box::pin(async move {
            let mut open = self.open.subscribe();
            let _ = open.wait_for(|o| *o).await;
            // The server's own followers (RBAC, definitions, quota recount) watch other
            // prefixes, from tasks that start whenever they do: only the watched kinds count.
            if WATCHED_KINDS.iter().any(|kind| prefix.starts_with(kind)) {
                self.watches.fetch_add(1, Ordering::SeqCst);
            }
            let mut broken = self.breaks.subscribe();
            let stream = self.inner.watch(&prefix, after).await?;
            let ended = futures::stream::once(async {
                Err(StoreError::Unavailable("the test broke the watch".into()))
            });
            let stream: WatchStream = stream
                .take_until(async move {
                    let _ = broken.recv().await;
                })
                .chain(ended)
                .boxed();
            Ok(stream)
        })
    }
    fn revision(&self) -> BoxFuture<'_, Result<Revision>> {
        self.inner.revision()
    }
    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        self.inner.compact(revision)
    }
}

async fn server_with(window: usize) -> (Arc<ApiServer>, Arc<Probe>) {
    let probe = Probe::new();
    let config = Config {
        bookmark_interval: Duration::from_millis(200),
        watch_cache_events: window,
        ..Config::default()
    };
    let store: Arc<dyn Store> = probe.clone();
    match ApiServer::new(store, config).await {
        Ok(server) => (server, probe),
        Err(error) => panic!("server did not start: {error}"),
    }
}

type Events = BodyStream<ApiBody>;

async fn watch_events(server: &ApiServer, uri: &str) -> Events {
    let request = Request::builder().uri(uri).body(Full::new(Bytes::new()));
    let Ok(request) = request else {
        panic!("request")
    };
    let response = server.handle(request, &RequestUser::admin()).await;
    assert_eq!(response.status().as_u16(), 200, "{uri}");
    BodyStream::new(response.into_body())
}

/// The next event, `None` when the watch ended; panics when none comes in 5 s.
async fn next(events: &mut Events) -> Option<Value> {
    let frame = tokio::time::timeout(Duration::from_secs(5), events.next()).await;
    let Ok(frame) = frame else {
        panic!("no watch event in time")
    };
    let data = frame?.ok()?.into_data().ok()?;
    Some(serde_json::from_slice(&data).unwrap_or(Value::Null))
}

/// The next event that is not a bookmark.
async fn next_change(events: &mut Events) -> Value {
    loop {
        match next(events).await {
            Some(event) if event["type"] == "BOOKMARK" => continue,
            Some(event) => return event,
            None => panic!("the watch ended"),
        }
    }
}

fn name(event: &Value) -> String {
    event["object"]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn rv(object: &Value) -> i64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

fn cm(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "labels": labels}, "data": {"k": name}})
}

async fn create(server: &ApiServer, uri: &str, object: &Value) -> Value {
    let (code, created) = json(server, "POST", uri, object).await;
    assert_eq!(code, 201, "{created}");
    created
}

#[tokio::test]
async fn a_hundred_watchers_of_pods_cost_one_store_watch() {
    let (server, probe) = server_with(64).await;
    let before = probe.watches();
    let mut watchers = Vec::new();
    for _ in 0..100 {
        watchers.push(watch_events(&server, &format!("{PODS}?watch=true")).await);
    }
    let created = create(&server, PODS, &pod("one")).await;
    for events in &mut watchers {
        let event = next_change(events).await;
        assert_eq!(
            (event["type"].clone(), name(&event)),
            (json!("ADDED"), "one".into())
        );
        assert_eq!(rv(&event["object"]), rv(&created));
    }
    // All namespaces, other namespaces and selectors share it too.
    let mut all = watch_events(&server, "/api/v1/pods?watch=true&resourceVersion=0").await;
    assert_eq!(name(&next_change(&mut all).await), "one");
    assert_eq!(
        probe.watches() - before,
        1,
        "one store watch for every pod watcher"
    );
}

#[tokio::test]
async fn recent_resource_versions_replay_from_memory_and_older_ones_expire() {
    let (server, probe) = server_with(5).await;
    let mut live = watch_events(&server, &format!("{CMS}?watch=true")).await;
    let mut rvs = Vec::new();
    for i in 0..10 {
        rvs.push(rv(
            &create(&server, CMS, &cm(&format!("c{i}"), json!({}))).await
        ));
    }
    for i in 0..10 {
        assert_eq!(name(&next_change(&mut live).await), format!("c{i}"));
    }
    let watches = probe.watches();
    // The window holds the last five creations: a watch after the fifth replays them.
    let mut replay = watch_events(
        &server,
        &format!("{CMS}?watch=true&resourceVersion={}", rvs[4]),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 5..10 {
        let event = next_change(&mut replay).await;
        seen.push((name(&event), rv(&event["object"])));
    }
    let expected: Vec<(String, i64)> = (5..10).map(|i| (format!("c{i}"), rvs[i])).collect();
    assert_eq!(seen, expected);
    assert_eq!(
        probe.watches(),
        watches,
        "replayed from memory, not from the store"
    );

    let mut old = watch_events(
        &server,
        &format!("{CMS}?watch=true&resourceVersion={}", rvs[1]),
    )
    .await;
    let error = next_change(&mut old).await;
    assert_eq!(error["type"], "ERROR");
    assert_eq!(
        (
            error["object"]["code"].clone(),
            error["object"]["reason"].clone(),
            error["object"]["message"].clone()
        ),
        (
            json!(410),
            json!("Expired"),
            json!(format!("too old resource version: {} ({})", rvs[1], rvs[4]))
        )
    );
    assert!(next(&mut old).await.is_none(), "the expired watch ends");
}

#[tokio::test]
async fn watch_list_sends_the_state_then_a_bookmark_ending_the_initial_events() {
    let (server, _) = server_with(64).await;
    create(&server, CMS, &cm("a", json!({"app": "x"}))).await;
    create(&server, CMS, &cm("b", json!({"app": "y"}))).await;
    for rv_param in ["", "0", "1"] {
        let uri = format!(
            "{CMS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion={rv_param}"
        );
        let mut events = watch_events(&server, &uri).await;
        let mut names = Vec::new();
        let end = loop {
            let Some(event) = next(&mut events).await else {
                panic!("ended before the initial events were done")
            };
            match event["type"].as_str() {
                Some("ADDED") => names.push(name(&event)),
                Some("BOOKMARK") => break event,
                other => panic!("unexpected {other:?}: {event}"),
            }
        };
        names.sort();
        assert_eq!(names, ["a", "b"], "resourceVersion={rv_param:?}");
        assert_eq!(
            end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true",
            "{end}"
        );
        assert_eq!(end["object"]["kind"], "ConfigMap");
        let at = rv(&end["object"]);
        let later = create(
            &server,
            CMS,
            &cm(
                &format!("after-{}", rv_param.len() + at as usize),
                json!({}),
            ),
        )
        .await;
        let event = next_change(&mut events).await;
        assert_eq!(
            (event["type"].clone(), rv(&event["object"])),
            (json!("ADDED"), rv(&later))
        );
        assert!(rv(&later) > at);
        let (code, _) = json(
            &server,
            "DELETE",
            &format!("{CMS}/{}", name(&event)),
            &json!({}),
        )
        .await;
        assert_eq!(code, 200);
    }

    let (code, refused) = call(
        &server,
        "GET",
        &format!("{CMS}?watch=true&sendInitialEvents=true"),
        "",
        "",
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        refused["message"],
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
    );
    assert_eq!(
        refused["details"]["causes"][0]["reason"],
        "FieldValueForbidden"
    );
    let (code, refused) = call(
        &server,
        "GET",
        &format!("{CMS}?watch=true&resourceVersionMatch=NotOlderThan"),
        "",
        "",
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        refused["details"]["causes"][0]["message"],
        "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
    );
}

#[tokio::test]
async fn each_watcher_gets_what_its_selectors_pick() {
    let (server, probe) = server_with(64).await;
    let before = probe.watches();
    // The cache first, so that the revision listed next is one it holds: the server's own
    // background writes (RBAC aggregation, default service accounts) move the revision on, and
    // a watch from before the cache existed would rightly get a store watch of its own.
    let _first = watch_events(&server, &format!("{CMS}?watch=true")).await;
    // From a known revision: the watchers' tasks may start after the writes below.
    let (_, listed) = call(&server, "GET", CMS, "", "").await;
    let at = rv(&listed);
    let mut x = watch_events(
        &server,
        &format!("{CMS}?watch=true&resourceVersion={at}&labelSelector=app%3Dx"),
    )
    .await;
    let mut y = watch_events(
        &server,
        &format!("{CMS}?watch=true&resourceVersion={at}&labelSelector=app%3Dy"),
    )
    .await;
    let mut named = watch_events(
        &server,
        &format!("{CMS}?watch=true&resourceVersion={at}&fieldSelector=metadata.name%3Dm"),
    )
    .await;
    let mut elsewhere = watch_events(
        &server,
        &format!("/api/v1/namespaces/kube-system/configmaps?watch=true&resourceVersion={at}"),
    )
    .await;
    let m = create(&server, CMS, &cm("m", json!({"app": "x"}))).await;
    create(&server, CMS, &cm("n", json!({"app": "y"}))).await;
    let mut moved = m.clone();
    moved["metadata"]["labels"]["app"] = json!("y");
    let (code, _) = json(&server, "PUT", &format!("{CMS}/m"), &moved).await;
    assert_eq!(code, 200);

    let summary = |e: &Value| (e["type"].as_str().unwrap_or("").to_string(), name(e));
    let s = |t: &str, n: &str| (t.to_string(), n.to_string());
    assert_eq!(summary(&next_change(&mut x).await), s("ADDED", "m"));
    assert_eq!(
        summary(&next_change(&mut x).await),
        s("DELETED", "m"),
        "leaving x's selector"
    );
    assert_eq!(summary(&next_change(&mut y).await), s("ADDED", "n"));
    assert_eq!(
        summary(&next_change(&mut y).await),
        s("ADDED", "m"),
        "entering y's selector"
    );
    assert_eq!(summary(&next_change(&mut named).await), s("ADDED", "m"));
    assert_eq!(summary(&next_change(&mut named).await), s("MODIFIED", "m"));
    create(
        &server,
        "/api/v1/namespaces/kube-system/configmaps",
        &cm("sys", json!({})),
    )
    .await;
    assert_eq!(
        summary(&next_change(&mut elsewhere).await),
        s("ADDED", "sys"),
        "only its namespace"
    );
    assert_eq!(probe.watches() - before, 1);
}

#[tokio::test]
async fn a_watcher_that_does_not_read_is_closed_and_holds_back_no_other() {
    let (server, _) = server_with(4096).await;
    let mut slow = watch_events(&server, &format!("{CMS}?watch=true&resourceVersion=0")).await;
    let mut fast = watch_events(&server, &format!("{CMS}?watch=true&resourceVersion=0")).await;
    let total = 1300;
    let mut fast_seen = 0;
    for i in 0..total {
        create(&server, CMS, &cm(&format!("c{i}"), json!({}))).await;
        // The fast watcher keeps up as the writes go.
        while fast_seen <= i {
            let event = next_change(&mut fast).await;
            assert_eq!(name(&event), format!("c{fast_seen}"));
            fast_seen += 1;
        }
    }
    // The slow one gets what it had queued, in order, then its stream ends: it re-watches
    // from the last resourceVersion it got, as client-go's reflector does.
    let mut slow_seen = 0;
    let mut last = 0;
    while let Some(event) = next(&mut slow).await {
        if event["type"] == "BOOKMARK" {
            continue;
        }
        assert_eq!(name(&event), format!("c{slow_seen}"), "no gap");
        last = rv(&event["object"]);
        slow_seen += 1;
    }
    assert!(
        slow_seen < total,
        "the slow watcher was closed ({slow_seen} events)"
    );
    let mut resumed =
        watch_events(&server, &format!("{CMS}?watch=true&resourceVersion={last}")).await;
    assert_eq!(
        name(&next_change(&mut resumed).await),
        format!("c{slow_seen}")
    );
}

#[tokio::test]
async fn lists_at_resource_version_zero_are_served_from_the_cache() {
    let (server, probe) = server_with(64).await;
    for i in 0..5 {
        create(
            &server,
            CMS,
            &cm(&format!("c{i}"), json!({"n": i.to_string()})),
        )
        .await;
    }
    let (_, first) = call(&server, "GET", &format!("{CMS}?resourceVersion=0"), "", "").await;
    let lists = probe.lists();
    let (_, again) = call(
        &server,
        "GET",
        &format!("{CMS}?resourceVersion=0&labelSelector=n%3D3"),
        "",
        "",
    )
    .await;
    let (_, paged) = call(
        &server,
        "GET",
        &format!("{CMS}?resourceVersion=0&limit=2"),
        "",
        "",
    )
    .await;
    assert_eq!(probe.lists(), lists, "no store read");
    let names = |list: &Value| -> Vec<String> {
        list["items"].as_array().map_or(vec![], |items| {
            items
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
                .collect()
        })
    };
    let (_, consistent) = call(&server, "GET", CMS, "", "").await;
    assert!(
        probe.lists() > lists,
        "resourceVersion=\"\" reads the store"
    );
    assert_eq!(names(&first), names(&consistent));
    assert_eq!(first["items"], consistent["items"]);
    assert_eq!(names(&again), ["c3"]);
    assert_eq!(names(&paged), ["c0", "c1"]);
    assert_eq!(paged["metadata"]["remainingItemCount"], 3);
    let token = paged["metadata"]["continue"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let (_, rest) = call(
        &server,
        "GET",
        &format!("{CMS}?limit=10&continue={token}"),
        "",
        "",
    )
    .await;
    assert_eq!(
        names(&rest),
        ["c2", "c3", "c4"],
        "the store continues the cache's page"
    );
}

#[tokio::test]
async fn a_broken_store_watch_is_resumed_without_a_gap() {
    let (server, probe) = server_with(64).await;
    let mut events = watch_events(&server, &format!("{CMS}?watch=true")).await;
    create(&server, CMS, &cm("before", json!({}))).await;
    assert_eq!(name(&next_change(&mut events).await), "before");
    let watches = probe.watches();
    probe.break_watches();
    for i in 0..3 {
        create(&server, CMS, &cm(&format!("during-{i}"), json!({}))).await;
    }
    probe.reopen();
    create(&server, CMS, &cm("after", json!({}))).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(name(&next_change(&mut events).await));
    }
    assert_eq!(seen, ["during-0", "during-1", "during-2", "after"]);
    assert_eq!(
        probe.watches(),
        watches + 1,
        "the cache reopened its one store watch"
    );
}

#[tokio::test]
async fn a_cache_behind_compaction_lists_again_and_closes_its_watchers() {
    let (server, probe) = server_with(64).await;
    let mut events = watch_events(&server, &format!("{CMS}?watch=true")).await;
    let first = create(&server, CMS, &cm("first", json!({}))).await;
    assert_eq!(name(&next_change(&mut events).await), "first");
    probe.break_watches();
    create(&server, CMS, &cm("missed", json!({}))).await;
    let revision = probe.revision().await.unwrap_or(0);
    assert!(probe.compact(revision).await.is_ok());
    probe.reopen();
    // The cache cannot resume after "first": it lists again and closes its watchers rather
    // than skip "missed".
    loop {
        match next(&mut events).await {
            Some(event) if event["type"] == "BOOKMARK" => continue,
            Some(event) => panic!("an event across the gap: {event}"),
            None => break,
        }
    }
    let mut resumed = watch_events(
        &server,
        &format!("{CMS}?watch=true&resourceVersion={}", rv(&first)),
    )
    .await;
    let error = next_change(&mut resumed).await;
    assert_eq!(
        (error["type"].clone(), error["object"]["code"].clone()),
        (json!("ERROR"), json!(410))
    );
    // A fresh watch (what the client does after 410) has the missed object and goes on.
    let mut fresh = watch_events(&server, &format!("{CMS}?watch=true&resourceVersion=0")).await;
    let mut names = vec![
        name(&next_change(&mut fresh).await),
        name(&next_change(&mut fresh).await),
    ];
    names.sort();
    assert_eq!(names, ["first", "missed"]);
    create(&server, CMS, &cm("later", json!({}))).await;
    assert_eq!(name(&next_change(&mut fresh).await), "later");
}

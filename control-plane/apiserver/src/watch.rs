//! WATCH: newline-delimited JSON events (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`)
//! from a resourceVersion, through the request's selectors. An object that stops matching is a
//! `DELETED` to the watcher, one that starts matching an `ADDED`, as upstream.
//!
//! Watchers read the kind's watch cache ([`crate::cache`]): one store watch per kind however
//! many watch it. A resourceVersion older than the cache's window is one `ERROR` event with a
//! 410 `Expired` Status, as upstream's cacher answers; one from before the cache was made (it
//! is made on first use) is served by a store watch of its own, which answers 410 only when the
//! store's history is compacted. `sendInitialEvents=true` (WatchList) sends the state first,
//! then a bookmark annotated `k8s.io/initial-events-end`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capstan_store::{KeyValue, ListOptions, Revision, StoreError, WatchStream};
use futures::StreamExt;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::body::ApiBody;
use crate::cache::{CachedEvent, Cacher, Miss, Refused, Subscription, event};
use crate::kinds::Kind;
use crate::rest::{self, Call};
use crate::route::Target;
use crate::selectors::Selectors;
use crate::status::{ApiError, ApiResult, Cause};
use crate::{list, table};

/// Event lines buffered per watcher before the stream waits for the client.
const CHANNEL_DEPTH: usize = 64;

/// Where a watch starts, from `resourceVersion` and `sendInitialEvents`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The current state (a consistent read) as ADDED events, then what follows.
    StateLatest,
    /// The state at any recent revision (the cache's) as ADDED events, then what follows.
    StateAny,
    /// The state at a revision at least this one, then what follows.
    StateNotOlderThan(Revision),
    /// Only the changes after this revision.
    After(Revision),
    /// Only the changes after the current revision.
    Now,
}

/// The events a watcher reads.
enum Source {
    Cache(Subscription),
    Store(WatchStream),
}

impl Source {
    /// The next event; `None` when the feed ended (the cache dropped the watcher, or the store
    /// watch ended), `Some(Err)` when the store refused to go on.
    async fn next(&mut self) -> Option<Result<Arc<CachedEvent>, StoreError>> {
        match self {
            Source::Cache(subscription) => {
                if let Some(event) = subscription.replay.pop_front() {
                    return Some(Ok(event));
                }
                subscription.live.recv().await.map(Ok)
            }
            Source::Store(stream) => match stream.next().await? {
                Ok(event) => Some(Ok(Arc::new(CachedEvent::from_store(event)))),
                Err(error) => Some(Err(error)),
            },
        }
    }
}

/// What one watcher needs, owned by its task.
struct Watcher {
    kind: Kind,
    /// The keys it watches (the kind's, or one namespace's).
    prefix: String,
    selectors: Selectors,
    table: bool,
    bookmarks: bool,
    bookmark_interval: Duration,
    timeout: Duration,
    start: Start,
    initial_events_end: bool,
    out: mpsc::Sender<Bytes>,
}

fn forbidden(field: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueForbidden".into(),
        message: format!("Forbidden: {detail}"),
        field: field.into(),
    }
}

/// The start the request asks for, checked as upstream's `validateWatchOptions`.
fn start(call: &Call<'_>) -> ApiResult<Start> {
    let rv = call.param("resourceVersion").filter(|rv| !rv.is_empty());
    let matching = call.param("resourceVersionMatch").filter(|m| !m.is_empty());
    let send_initial = call
        .param("sendInitialEvents")
        .map(|v| v == "true" || v == "1");
    let mut causes = Vec::new();
    if send_initial.is_some() && matching != Some("NotOlderThan") {
        causes.push(forbidden(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if let Some(m) = matching {
        if send_initial.is_none() {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if m != "NotOlderThan" {
            causes.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "Unsupported value: {}: supported values: \"NotOlderThan\"",
                    json!(m)
                ),
                field: "resourceVersionMatch".into(),
            });
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("meta.k8s.io", "ListOptions", "", causes));
    }
    let revision = match rv {
        Some(rv) => Some(rest::parse_revision(rv)?),
        None => None,
    };
    Ok(match (send_initial, revision) {
        (Some(true), None) => Start::StateLatest,
        (Some(true), Some(0)) => Start::StateAny,
        (Some(true), Some(r)) => Start::StateNotOlderThan(r),
        (Some(false), None | Some(0)) => Start::Now,
        (None, None) => Start::StateLatest,
        (None, Some(0)) => Start::StateAny,
        (_, Some(r)) => Start::After(r),
    })
}

/// GET on a collection with `watch=true`.
pub async fn serve(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let selectors = list::selectors(call, target)?;
    let prefix = list::prefix(target, &selectors);
    let start = start(call)?;
    let timeout = match call.param("timeoutSeconds").filter(|t| !t.is_empty()) {
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t:?}")))?,
        ),
        None => call.server.config.default_watch_timeout,
    };
    let (out, receiver) = mpsc::channel(CHANNEL_DEPTH);
    let watcher = Watcher {
        kind: target.kind.clone(),
        prefix,
        selectors,
        table: call.table,
        bookmarks: call.flag("allowWatchBookmarks"),
        bookmark_interval: call.server.config.bookmark_interval,
        timeout,
        start,
        initial_events_end: call.flag("sendInitialEvents"),
        out,
    };
    let store = Arc::clone(&call.server.store);
    let cacher = call
        .server
        .caches
        .ready(&store, &target.kind.prefix())
        .await;
    tokio::spawn(watcher.run(store, cacher));
    let frames = futures::stream::unfold(receiver, |mut receiver| async move {
        let bytes = receiver.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), receiver))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The initial state of a watch, where it was read, and the feed after it.
struct Opened {
    initial: Vec<Arc<KeyValue>>,
    revision: Revision,
    source: Source,
}

impl Watcher {
    /// Streams events until the client goes, the timeout passes or the feed ends.
    async fn run(self, store: Arc<dyn capstan_store::Store>, cacher: Option<Arc<Cacher>>) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let _ = tokio::time::timeout_at(deadline, self.stream(store, cacher)).await;
    }

    async fn send_line(&self, line: Bytes) -> bool {
        self.out.send(line).await.is_ok()
    }

    async fn send(&self, kind: &str, object: Value) -> bool {
        let object = if self.table && kind != "ERROR" && kind != "BOOKMARK" {
            table::of_objects(&self.kind, std::slice::from_ref(&object), None)
        } else {
            object
        };
        self.send_line(event::line(kind, &object)).await
    }

    async fn send_error(&self, error: ApiError) {
        self.send("ERROR", error.to_status()).await;
    }

    fn bookmark(&self, revision: i64, initial_end: bool) -> Value {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": self.kind.kind, "apiVersion": self.kind.api_version(), "metadata": metadata})
    }

    fn decoded(&self, kv: &KeyValue, revision: i64) -> Option<Value> {
        // Undecodable bytes were logged by decode_at; the watcher skips them.
        let object = rest::decode_at(kv, revision).ok()?;
        let mut object = crate::events::to_view(&self.kind, object);
        crate::crd::read(&self.kind, &mut object);
        Some(object)
    }

    /// The feed after `revision`: the cache's when it reaches back that far, else a store watch
    /// of this watcher's own.
    async fn feed(
        &self,
        store: &Arc<dyn capstan_store::Store>,
        cacher: Option<&Arc<Cacher>>,
        revision: Revision,
    ) -> Result<Source, ApiError> {
        if let Some(cacher) = cacher {
            match cacher.subscribe(revision) {
                Ok(subscription) => return Ok(Source::Cache(subscription)),
                Err(Refused::Miss(Miss::Expired { floor })) => {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {revision} ({floor})"
                    )));
                }
                Err(Refused::Miss(Miss::BeforeList) | Refused::NotReady) => {}
            }
        }
        store
            .watch(&self.prefix, revision)
            .await
            .map(Source::Store)
            .map_err(|e| watch_error(e, &self.kind))
    }

    /// The state read from the store (a consistent read), and the feed after it.
    async fn state_from_store(
        &self,
        store: &Arc<dyn capstan_store::Store>,
        cacher: Option<&Arc<Cacher>>,
    ) -> Result<Opened, ApiError> {
        let page = store
            .list(&self.prefix, ListOptions::default())
            .await
            .map_err(|e| watch_error(e, &self.kind))?;
        let source = self.feed(store, cacher, page.revision).await?;
        Ok(Opened {
            initial: page.items.into_iter().map(Arc::new).collect(),
            revision: page.revision,
            source,
        })
    }

    async fn open(
        &self,
        store: &Arc<dyn capstan_store::Store>,
        cacher: Option<&Arc<Cacher>>,
    ) -> Result<Opened, ApiError> {
        let from_cache = |min: Revision| {
            let cacher = cacher?;
            if cacher.revision()? < min {
                return None;
            }
            let (initial, revision, subscription) = cacher.snapshot(&self.prefix, true)?;
            Some(Opened {
                initial,
                revision,
                source: Source::Cache(subscription?),
            })
        };
        match self.start {
            Start::StateLatest => self.state_from_store(store, cacher).await,
            Start::StateAny => match from_cache(0) {
                Some(opened) => Ok(opened),
                None => self.state_from_store(store, cacher).await,
            },
            Start::StateNotOlderThan(min) => match from_cache(min) {
                Some(opened) => Ok(opened),
                None => self.state_from_store(store, cacher).await,
            },
            Start::After(revision) => Ok(Opened {
                initial: Vec::new(),
                revision,
                source: self.feed(store, cacher, revision).await?,
            }),
            Start::Now => {
                let revision = store
                    .revision()
                    .await
                    .map_err(|e| watch_error(e, &self.kind))?;
                Ok(Opened {
                    initial: Vec::new(),
                    revision,
                    source: self.feed(store, cacher, revision).await?,
                })
            }
        }
    }

    async fn stream(&self, store: Arc<dyn capstan_store::Store>, cacher: Option<Arc<Cacher>>) {
        let opened = match self.open(&store, cacher.as_ref()).await {
            Ok(opened) => opened,
            Err(error) => return self.send_error(error).await,
        };
        drop(cacher);
        let Opened {
            initial,
            mut revision,
            mut source,
        } = opened;
        let sends_initial = !matches!(self.start, Start::After(_) | Start::Now);
        if sends_initial {
            for kv in &initial {
                let Some(object) = self.decoded(kv, kv.mod_revision) else {
                    continue;
                };
                if self.selectors.matches(&object) && !self.send("ADDED", object).await {
                    return;
                }
            }
            drop(initial);
            if self.initial_events_end
                && self.bookmarks
                && !self.send("BOOKMARK", self.bookmark(revision, true)).await
            {
                return;
            }
        }
        let mut ticker = tokio::time::interval(self.bookmark_interval);
        ticker.reset();
        loop {
            tokio::select! {
                next = source.next() => {
                    let event = match next {
                        Some(Ok(event)) => event,
                        Some(Err(StoreError::Unavailable(why))) => {
                            // The client re-watches from its last resourceVersion.
                            tracing::debug!(%why, "watch ended by the store");
                            return;
                        }
                        Some(Err(error)) => return self.send_error(watch_error(error, &self.kind)).await,
                        // Dropped by the cache (too slow, or the cache listed again): the
                        // client re-watches from the last resourceVersion it got.
                        None => return,
                    };
                    if event.revision <= revision {
                        continue;
                    }
                    revision = event.revision;
                    if let Some(line) = self.translate(&event) {
                        if !self.send_line(line).await {
                            return;
                        }
                    }
                }
                _ = ticker.tick(), if self.bookmarks => {
                    if !self.send("BOOKMARK", self.bookmark(revision, false)).await {
                        return;
                    }
                }
                _ = self.out.closed() => return,
            }
        }
    }

    /// The line a change is to this watcher, if any.
    fn translate(&self, event: &CachedEvent) -> Option<Bytes> {
        if !event.key.starts_with(&self.prefix) {
            return None;
        }
        if self.selectors.is_empty() && !self.table {
            return event.plain_line().cloned();
        }
        let revision = event.revision;
        let (kind, object) = match &event.object {
            Some(kv) => {
                let new = self.decoded(kv, revision)?;
                let new_matches = self.selectors.matches(&new);
                let old_matches = event
                    .prev
                    .as_ref()
                    .and_then(|p| self.decoded(p, revision))
                    .map(|old| (self.selectors.matches(&old), old));
                match (old_matches, new_matches) {
                    (None, true) | (Some((false, _)), true) => ("ADDED", new),
                    (Some((true, _)), true) => ("MODIFIED", new),
                    (Some((true, old)), false) => ("DELETED", old),
                    _ => return None,
                }
            }
            None => {
                let old = self.decoded(event.prev.as_ref()?, revision)?;
                if !self.selectors.matches(&old) {
                    return None;
                }
                ("DELETED", old)
            }
        };
        let object = if self.table {
            table::of_objects(&self.kind, std::slice::from_ref(&object), None)
        } else {
            object
        };
        Some(event::line(kind, &object))
    }
}

/// The Status error of a watch that cannot go on.
fn watch_error(error: StoreError, kind: &Kind) -> ApiError {
    match error {
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::expired(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        other => rest::store_error(other, kind, ""),
    }
}

//! WATCH: newline-delimited JSON events (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`)
//! from a resourceVersion, through the request's selectors. An object that stops matching is a
//! `DELETED` to the watcher, one that starts matching an `ADDED`, as upstream. A compacted
//! resourceVersion is one `ERROR` event with a 410 `Expired` Status.
//!
//! Each watcher reads its own store watch for now; a watch cache per resource, so N watchers
//! cost one store watch, is the follow-up.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use capstan_store::{KeyValue, ListOptions, Store, StoreError, WatchEvent};
use futures::StreamExt;
use http::{HeaderValue, Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::body::ApiBody;
use crate::kinds::Kind;
use crate::rest::{self, Call};
use crate::route::Target;
use crate::selectors::Selectors;
use crate::status::{ApiError, ApiResult};
use crate::{list, table};

/// Events buffered per watcher before the stream waits for the client.
const CHANNEL_DEPTH: usize = 64;

/// What one watcher needs, owned by its task.
struct Watcher {
    store: Arc<dyn Store>,
    kind: Kind,
    prefix: String,
    selectors: Selectors,
    table: bool,
    bookmarks: bool,
    bookmark_interval: Duration,
    timeout: Duration,
    /// Revision to watch after; `None`: list the current state first as ADDED events.
    from: Option<i64>,
    initial_events_end: bool,
    out: mpsc::Sender<Bytes>,
}

/// GET on a collection with `watch=true`.
pub async fn serve(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let selectors = list::selectors(call, target)?;
    let prefix = list::prefix(target, &selectors);
    let from = match call
        .param("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
    {
        Some(rv) => Some(rest::parse_revision(rv)?),
        None => None,
    };
    let send_initial = call.flag("sendInitialEvents");
    let timeout = match call.param("timeoutSeconds").filter(|t| !t.is_empty()) {
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t:?}")))?,
        ),
        None => call.server.config.default_watch_timeout,
    };
    let (out, receiver) = mpsc::channel(CHANNEL_DEPTH);
    let watcher = Watcher {
        store: Arc::clone(&call.server.store),
        kind: target.kind.clone(),
        prefix,
        selectors,
        table: call.table,
        bookmarks: call.flag("allowWatchBookmarks"),
        bookmark_interval: call.server.config.bookmark_interval,
        timeout,
        from: if send_initial { None } else { from },
        initial_events_end: send_initial,
        out,
    };
    tokio::spawn(watcher.run());
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

impl Watcher {
    /// Streams events until the client goes, the timeout passes or the store watch ends.
    async fn run(self) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let _ = tokio::time::timeout_at(deadline, self.stream()).await;
    }

    async fn send(&self, kind: &str, object: Value) -> bool {
        let object = if self.table && kind != "ERROR" && kind != "BOOKMARK" {
            table::of_objects(&self.kind, std::slice::from_ref(&object), None)
        } else {
            object
        };
        let mut line = json!({"type": kind, "object": object}).to_string();
        line.push('\n');
        self.out.send(Bytes::from(line)).await.is_ok()
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
        rest::decode_at(kv, revision)
            .ok()
            .map(|object| crate::events::to_view(&self.kind, object))
    }

    async fn stream(&self) {
        let mut revision = match self.from {
            Some(rv) => rv,
            None => match self.initial().await {
                Some(rv) => rv,
                None => return,
            },
        };
        let mut events = match self.store.watch(&self.prefix, revision).await {
            Ok(events) => events,
            Err(error) => return self.send_error(watch_error(error, &self.kind)).await,
        };
        let mut ticker = tokio::time::interval(self.bookmark_interval);
        ticker.reset();
        loop {
            tokio::select! {
                next = events.next() => {
                    let event = match next {
                        Some(Ok(event)) => event,
                        Some(Err(StoreError::Unavailable(why))) => {
                            // The client re-watches from its last resourceVersion.
                            tracing::debug!(%why, "watch ended by the store");
                            return;
                        }
                        Some(Err(error)) => return self.send_error(watch_error(error, &self.kind)).await,
                        None => return,
                    };
                    revision = event.revision();
                    if let Some((kind, object)) = self.translate(&event) {
                        if !self.send(kind, object).await {
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

    /// Sends the current state as ADDED events; returns the revision it was read at.
    async fn initial(&self) -> Option<i64> {
        let page = match self.store.list(&self.prefix, ListOptions::default()).await {
            Ok(page) => page,
            Err(error) => {
                self.send_error(watch_error(error, &self.kind)).await;
                return None;
            }
        };
        for kv in &page.items {
            let Some(object) = self.decoded(kv, kv.mod_revision) else {
                continue;
            };
            if self.selectors.matches(&object) && !self.send("ADDED", object).await {
                return None;
            }
        }
        if self.initial_events_end
            && self.bookmarks
            && !self
                .send("BOOKMARK", self.bookmark(page.revision, true))
                .await
        {
            return None;
        }
        Some(page.revision)
    }

    /// The event a store change is to this watcher, if any.
    fn translate(&self, event: &WatchEvent) -> Option<(&'static str, Value)> {
        let revision = event.revision();
        match event {
            WatchEvent::Put { kv, prev } => {
                let new = self.decoded(kv, revision)?;
                let new_matches = self.selectors.matches(&new);
                let old_matches = prev
                    .as_ref()
                    .and_then(|p| self.decoded(p, revision))
                    .map(|old| (self.selectors.matches(&old), old));
                match (old_matches, new_matches) {
                    (None, true) | (Some((false, _)), true) => Some(("ADDED", new)),
                    (Some((true, _)), true) => Some(("MODIFIED", new)),
                    (Some((true, old)), false) => Some(("DELETED", old)),
                    _ => None,
                }
            }
            WatchEvent::Delete { prev, .. } => {
                let old = self.decoded(prev, revision)?;
                self.selectors.matches(&old).then_some(("DELETED", old))
            }
        }
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

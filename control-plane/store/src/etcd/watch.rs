//! Watches on etcd that survive a member going away: a task holds etcd's watch stream and
//! opens a new one from the revision after the last event it delivered whenever the stream
//! breaks, so the watcher sees every revision once, in order.

use std::time::Duration;

use etcd_client::{EventType, WatchClient, WatchOptions, WatchResponse};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::EtcdStore;
use super::errors::{Failure, classify};
use crate::{KeyValue, Result, Revision, StoreError, WatchEvent, WatchStream};

/// How long a watch keeps trying to reopen before it ends with `Unavailable`.
const RECONNECT_WINDOW: Duration = Duration::from_secs(30);

/// Events buffered between the task and the watcher.
const BUFFER: usize = 256;

/// Starts the task watching `key` (the full etcd key, range in `options`) after `after`.
pub(super) fn spawn(
    store: EtcdStore,
    key: Vec<u8>,
    options: WatchOptions,
    after: Revision,
) -> WatchStream {
    let (sender, receiver) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let task = WatchTask {
            store,
            key,
            options,
            after,
            sender,
        };
        task.run().await;
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
    .boxed()
}

struct WatchTask {
    store: EtcdStore,
    key: Vec<u8>,
    options: WatchOptions,
    /// Every revision up to here has been delivered.
    after: Revision,
    sender: mpsc::Sender<Result<WatchEvent>>,
}

/// Why one etcd watch stream ended.
enum Ended {
    /// The watcher went away, or the watch ended for good (the error has been sent).
    Done,
    /// The stream broke; another may work.
    Broken(String),
}

impl WatchTask {
    async fn run(mut self) {
        let mut broken_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            let before = self.after;
            match self.follow().await {
                Ended::Done => return,
                Ended::Broken(reason) => {
                    if self.after > before {
                        broken_since = None;
                        backoff = Duration::from_millis(50);
                    }
                    let since = *broken_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > RECONNECT_WINDOW {
                        let _ = self
                            .sender
                            .send(Err(StoreError::Unavailable(format!(
                                "etcd: the watch could not be reopened for {RECONNECT_WINDOW:?}: \
                                 {reason}"
                            ))))
                            .await;
                        return;
                    }
                    tracing::debug!(%reason, after = self.after, "reopening an etcd watch");
                    tokio::select! {
                        _ = self.sender.closed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Opens one etcd watch from `after + 1` and forwards its events until it ends.
    async fn follow(&mut self) -> Ended {
        let options = self.options.clone().with_start_revision(self.after + 1);
        let mut client = self.store.watch.clone();
        let opened = tokio::select! {
            _ = self.sender.closed() => return Ended::Done,
            opened = client.watch(self.key.clone(), Some(options)) => opened,
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(e) => return self.failed("open a watch", e).await,
        };
        loop {
            let message = tokio::select! {
                _ = self.sender.closed() => return Ended::Done,
                message = stream.message() => message,
            };
            let response = match message {
                Ok(Some(response)) => response,
                Ok(None) => return Ended::Broken("etcd ended the watch stream".into()),
                Err(e) => return self.failed("follow a watch", e).await,
            };
            if response.compact_revision() != 0 {
                return self
                    .finish(StoreError::Compacted {
                        requested: self.after,
                        compacted: response.compact_revision(),
                    })
                    .await;
            }
            if let Some(ended) = self.forward(&response).await {
                return ended;
            }
            if response.canceled() {
                return Ended::Broken(format!(
                    "etcd cancelled the watch: {}",
                    response.cancel_reason()
                ));
            }
        }
    }

    async fn forward(&mut self, response: &WatchResponse) -> Option<Ended> {
        // Compared with where the response started: one revision can carry several events
        // (another client's multi-key transaction).
        let floor = self.after;
        for event in response.events() {
            let converted = match self.convert(event) {
                Ok(converted) => converted,
                Err(e) => return Some(self.finish(e).await),
            };
            let revision = converted.revision();
            if revision <= floor {
                continue;
            }
            if self.sender.send(Ok(converted)).await.is_err() {
                return Some(Ended::Done);
            }
            self.after = revision;
        }
        None
    }

    fn convert(&self, event: &etcd_client::Event) -> Result<WatchEvent> {
        let kv = event.kv().ok_or_else(|| {
            StoreError::Internal("etcd sent a watch event without its key".into())
        })?;
        let prev = event.prev_kv().map(|p| self.store.convert(p)).transpose()?;
        Ok(match event.event_type() {
            EventType::Put => WatchEvent::Put {
                kv: self.store.convert(kv)?,
                prev,
            },
            EventType::Delete => WatchEvent::Delete {
                // etcd leaves out the previous value only when it was compacted away.
                prev: match prev {
                    Some(prev) => prev,
                    None => KeyValue {
                        key: self.store.local_key(kv.key())?,
                        value: Vec::new(),
                        create_revision: 0,
                        mod_revision: 0,
                    },
                },
                revision: kv.mod_revision(),
            },
        })
    }

    async fn failed(&mut self, what: &str, error: etcd_client::Error) -> Ended {
        match classify(what, error) {
            Failure::Plain(StoreError::Unavailable(reason)) => Ended::Broken(reason),
            Failure::Plain(e) => self.finish(e).await,
            Failure::Compacted => {
                let compacted = compaction_point(self.store.watch.clone(), &self.store.prefix)
                    .await
                    .unwrap_or(self.after + 1);
                self.finish(StoreError::Compacted {
                    requested: self.after,
                    compacted,
                })
                .await
            }
            other => {
                self.finish(StoreError::Internal(format!("etcd: {what}: {other:?}")))
                    .await
            }
        }
    }

    async fn finish(&mut self, error: StoreError) -> Ended {
        let _ = self.sender.send(Err(error)).await;
        Ended::Done
    }
}

/// etcd's compaction point, which it tells only a watch that starts below it: a watch of a key
/// nobody writes from revision 1. `None` when nothing is compacted or etcd does not answer
/// soon.
pub(super) async fn compaction_point(mut client: WatchClient, prefix: &str) -> Option<Revision> {
    let probe = format!("{prefix}\u{0}compaction-probe");
    let options = WatchOptions::new().with_start_revision(1);
    let ask = async {
        let mut stream = client.watch(probe, Some(options)).await.ok()?;
        loop {
            let response = stream.message().await.ok()??;
            if response.compact_revision() != 0 {
                return Some(response.compact_revision());
            }
            if response.canceled() {
                return None;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .ok()
        .flatten()
}

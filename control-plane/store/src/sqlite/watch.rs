//! Watches: the log replayed from the table, then the writer's live events, with no gap and no
//! duplicate between the two. The watch subscribes to the live events before it reads the
//! table, so every commit after the read arrives live; live events at or below what the table
//! gave are skipped. A watcher that falls behind the live feed goes back to the table, which has
//! everything, instead of losing events.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::broadcast;

use super::Shared;
use super::read::log_page;
use crate::{Result, Revision, StoreError, WatchEvent, WatchStream};

/// Log rows one table read replays at most, so an old watch does not load all history at once.
const PAGE: usize = 512;

/// A watch between two events.
pub(super) struct Cursor {
    shared: Arc<Shared>,
    prefix: String,
    /// Every change up to here has been delivered or queued.
    reached: Revision,
    queued: VecDeque<WatchEvent>,
    live: Option<broadcast::Receiver<Arc<WatchEvent>>>,
    /// Whether the table has been read up to where the live feed starts.
    caught_up: bool,
}

impl Cursor {
    /// A watch of `prefix` after `after`, with its first page read, so that a compacted start
    /// fails here rather than in the stream.
    pub(super) async fn open(shared: Arc<Shared>, prefix: String, after: Revision) -> Result<Self> {
        let mut cursor = Cursor {
            shared,
            prefix,
            reached: after,
            queued: VecDeque::new(),
            live: None,
            caught_up: false,
        };
        cursor.read_table().await?;
        Ok(cursor)
    }

    /// The watch as a stream.
    pub(super) fn into_stream(self) -> WatchStream {
        futures::stream::unfold(Some(self), |cursor| async move {
            let mut cursor = cursor?;
            match cursor.next().await {
                Ok(Some(event)) => Some((Ok(event), Some(cursor))),
                Ok(None) => None,
                // An error ends the watch: the next poll finds no cursor.
                Err(e) => Some((Err(e), None)),
            }
        })
        .boxed()
    }

    async fn read_table(&mut self) -> Result<()> {
        if self.live.is_none() {
            self.live = Some(self.shared.subscribe().ok_or_else(closed)?);
        }
        let shared = self.shared.clone();
        let prefix = self.prefix.clone();
        let after = self.reached;
        let page = tokio::task::spawn_blocking(move || {
            shared
                .readers
                .with(|conn| log_page(conn, &prefix, after, PAGE))
        })
        .await
        .map_err(|e| StoreError::Internal(format!("a watch's read failed: {e}")))??;
        self.caught_up = page.events.len() < PAGE;
        self.reached = page.reached;
        self.queued.extend(page.events);
        Ok(())
    }

    async fn next(&mut self) -> Result<Option<WatchEvent>> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Ok(Some(event));
            }
            if !self.caught_up {
                self.read_table().await?;
                continue;
            }
            let Some(live) = self.live.as_mut() else {
                return Err(closed());
            };
            match live.recv().await {
                Ok(event) => {
                    if event.revision() <= self.reached {
                        continue;
                    }
                    self.reached = event.revision();
                    if event.key().starts_with(&self.prefix) {
                        return Ok(Some(WatchEvent::clone(&event)));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "a watch fell behind; reading the store's log");
                    self.live = None;
                    self.caught_up = false;
                }
                Err(broadcast::error::RecvError::Closed) => return Err(closed()),
            }
        }
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("the store was closed".into())
}

//! One kind's cache: a single store watch feeding the kind's current objects, a window of
//! recent events and every watcher of the kind, as kube-apiserver's cacher.
//!
//! The task lists the prefix, then follows one store watch from the list's revision. A store
//! watch that ends is reopened from the last revision seen, so watchers see no gap; one that
//! cannot be reopened because the history was compacted makes the cache list afresh, and then
//! every watcher is closed (a client re-watches from its last resourceVersion, and gets
//! `410 Expired` if that is older than the new list).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use capstan_store::{KeyValue, ListOptions, Revision, Store, StoreError, WatchEvent};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::event::CachedEvent;
use super::window::{Miss, Window};

/// Events a watcher may have queued before the cache gives up on it and closes it (upstream
/// closes a watcher whose buffer stays full, so that one slow client cannot hold back others).
pub const WATCHER_BUFFER: usize = 1024;

/// A watcher's feed from the cache.
pub struct Subscription {
    /// Events from the window the watcher starts with, oldest first.
    pub replay: VecDeque<Arc<CachedEvent>>,
    /// Live events; the channel closes when the cache drops the watcher.
    pub live: mpsc::Receiver<Arc<CachedEvent>>,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The window does not reach back that far.
    Miss(Miss),
    /// The cache has not listed yet (or is listing again).
    NotReady,
}

/// The cache of one storage prefix.
pub struct Cacher {
    prefix: String,
    state: Mutex<State>,
    ready: watch::Sender<bool>,
}

struct State {
    objects: BTreeMap<String, Arc<KeyValue>>,
    /// The revision `objects` is at.
    revision: Revision,
    window: Window,
    watchers: Vec<mpsc::Sender<Arc<CachedEvent>>>,
    ready: bool,
}

impl Cacher {
    /// A cache of `prefix` (not yet filled) and the task that fills it and keeps it current;
    /// the task ends when the cache is dropped.
    pub fn start(
        store: Arc<dyn Store>,
        prefix: String,
        window: usize,
    ) -> (Arc<Cacher>, tokio::task::JoinHandle<()>) {
        let cacher = Arc::new(Cacher {
            prefix,
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                revision: 0,
                window: Window::new(window, 0),
                watchers: Vec::new(),
                ready: false,
            }),
            ready: watch::channel(false).0,
        });
        let task = tokio::spawn(follow(store, Arc::downgrade(&cacher)));
        (cacher, task)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change to the state is complete before the lock is let go.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits up to `limit` for the cache's first list; whether it is ready.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let mut ready = self.ready.subscribe();
        let waited = tokio::time::timeout(limit, ready.wait_for(|r| *r)).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// The revision the cache is at, once ready.
    pub fn revision(&self) -> Option<Revision> {
        let state = self.state();
        state.ready.then_some(state.revision)
    }

    /// A watcher of every event after `after`: those in the window, then the live ones.
    pub fn subscribe(&self, after: Revision) -> Result<Subscription, Refused> {
        let mut state = self.state();
        if !state.ready {
            return Err(Refused::NotReady);
        }
        let replay = state.window.since(after).map_err(Refused::Miss)?;
        let (sender, live) = mpsc::channel(WATCHER_BUFFER);
        state.watchers.push(sender);
        Ok(Subscription {
            replay: replay.into(),
            live,
        })
    }

    /// The objects under `prefix` (within the cache's) and the revision they are at, with a
    /// watcher of every later event when `subscribe`.
    pub fn snapshot(
        &self,
        prefix: &str,
        subscribe: bool,
    ) -> Option<(Vec<Arc<KeyValue>>, Revision, Option<Subscription>)> {
        let mut state = self.state();
        if !state.ready {
            return None;
        }
        let objects = state
            .objects
            .range(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(_, kv)| Arc::clone(kv))
            .collect();
        let subscription = subscribe.then(|| {
            let (sender, live) = mpsc::channel(WATCHER_BUFFER);
            state.watchers.push(sender);
            Subscription {
                replay: VecDeque::new(),
                live,
            }
        });
        Some((objects, state.revision, subscription))
    }

    /// How many watchers it feeds.
    pub fn watchers(&self) -> usize {
        self.state().watchers.len()
    }

    /// Replaces the state with a fresh list; every watcher is closed, since what it saw may not
    /// lead to the new state without a gap.
    fn relisted(&self, items: Vec<KeyValue>, revision: Revision) {
        let mut state = self.state();
        state.objects = items
            .into_iter()
            .map(|kv| (kv.key.clone(), Arc::new(kv)))
            .collect();
        state.revision = revision;
        state.window.reset(revision);
        let closed = std::mem::take(&mut state.watchers).len();
        state.ready = true;
        drop(state);
        if closed > 0 {
            tracing::info!(prefix = %self.prefix, closed, revision, "watch cache listed again; closed its watchers");
        }
        self.ready.send_replace(true);
    }

    fn not_ready(&self) {
        self.state().ready = false;
        self.ready.send_replace(false);
    }

    /// Applies one store event and hands it to every watcher; a watcher whose buffer is full
    /// is dropped (its stream ends after what it has queued).
    fn apply(&self, event: WatchEvent) {
        let revision = event.revision();
        let mut state = self.state();
        if revision <= state.revision {
            return;
        }
        let cached = match event {
            WatchEvent::Put { kv, prev } => {
                let key = kv.key.clone();
                let kv = Arc::new(kv);
                let old = state.objects.insert(key.clone(), Arc::clone(&kv));
                CachedEvent::new(revision, key, Some(kv), old.or(prev.map(Arc::new)))
            }
            WatchEvent::Delete { prev, .. } => {
                let old = state.objects.remove(&prev.key);
                let key = prev.key.clone();
                CachedEvent::new(revision, key, None, Some(old.unwrap_or(Arc::new(prev))))
            }
        };
        let cached = Arc::new(cached);
        state.revision = revision;
        state.window.push(Arc::clone(&cached));
        state.watchers.retain(|watcher| {
            match watcher.try_send(Arc::clone(&cached)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(prefix = %self.prefix, revision, "a watcher fell too far behind; closing it");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

/// Pause between failed attempts to list or to open the store watch.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The cache's task: list, follow, reopen, list again after compaction.
async fn follow(store: Arc<dyn Store>, cacher: Weak<Cacher>) {
    let Some(prefix) = cacher.upgrade().map(|c| c.prefix.clone()) else {
        return;
    };
    let mut backoff = RETRY_MIN;
    'list: loop {
        let page = match store.list(&prefix, ListOptions::default()).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%prefix, %error, "watch cache cannot list; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
        };
        let mut after = page.revision;
        match cacher.upgrade() {
            Some(c) => c.relisted(page.items, page.revision),
            None => return,
        }
        tracing::debug!(%prefix, revision = after, "watch cache listed");
        loop {
            let mut events = match store.watch(&prefix, after).await {
                Ok(events) => events,
                Err(StoreError::Compacted { .. }) => {
                    mark_not_ready(&cacher);
                    continue 'list;
                }
                Err(error) => {
                    tracing::warn!(%prefix, %error, "watch cache cannot watch; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                    if cacher.strong_count() == 0 {
                        return;
                    }
                    continue;
                }
            };
            while let Some(item) = events.next().await {
                let Some(c) = cacher.upgrade() else {
                    return;
                };
                match item {
                    Ok(event) => {
                        backoff = RETRY_MIN;
                        after = after.max(event.revision());
                        c.apply(event);
                    }
                    Err(StoreError::Compacted {
                        requested,
                        compacted,
                    }) => {
                        tracing::info!(%prefix, requested, compacted, "watch cache fell behind compaction; listing again");
                        c.not_ready();
                        continue 'list;
                    }
                    Err(error) => {
                        tracing::debug!(%prefix, %error, "store watch ended; reopening");
                        break;
                    }
                }
            }
            if cacher.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }
}

fn mark_not_ready(cacher: &Weak<Cacher>) {
    if let Some(c) = cacher.upgrade() {
        c.not_ready();
    }
}

//! A store in memory: nothing survives the process. For tests of what is built on the store,
//! and the reference the durable implementations are checked against.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::broadcast;

use crate::{
    KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, WatchEvent,
    WatchStream, check_size,
};

/// Live events a watcher may fall behind by before its stream ends with `Unavailable`.
const WATCH_BUFFER: usize = 4096;

/// A [`Store`] in memory.
pub struct MemoryStore {
    state: Mutex<State>,
    events: broadcast::Sender<WatchEvent>,
}

struct State {
    revision: Revision,
    compacted: Revision,
    current: BTreeMap<String, KeyValue>,
    /// Every change above `compacted`, oldest first.
    history: Vec<WatchEvent>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        MemoryStore {
            state: Mutex::new(State {
                revision: 0,
                compacted: 0,
                current: BTreeMap::new(),
                history: Vec::new(),
            }),
            events: broadcast::channel(WATCH_BUFFER).0,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves no half-written state: every write changes
        // the maps only after all checks passed.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self, state: &mut State, event: WatchEvent) {
        match &event {
            WatchEvent::Put { kv, .. } => {
                state.current.insert(kv.key.clone(), kv.clone());
            }
            WatchEvent::Delete { prev, .. } => {
                state.current.remove(&prev.key);
            }
        }
        state.history.push(event.clone());
        // No receiver is no error: nobody watches.
        let _ = self.events.send(event);
    }
}

impl State {
    /// The keys as they were at `revision`, undoing the later history.
    fn at(&self, revision: Revision) -> Result<BTreeMap<String, KeyValue>> {
        if revision > self.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        if revision < self.compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted: self.compacted,
            });
        }
        let mut keys = self.current.clone();
        for event in self.history.iter().rev() {
            if event.revision() <= revision {
                break;
            }
            match event {
                WatchEvent::Put { kv, prev } => match prev {
                    Some(prev) => {
                        keys.insert(kv.key.clone(), prev.clone());
                    }
                    None => {
                        keys.remove(&kv.key);
                    }
                },
                WatchEvent::Delete { prev, .. } => {
                    keys.insert(prev.key.clone(), prev.clone());
                }
            }
        }
        Ok(keys)
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>>> {
        let found = self.state().current.get(key).cloned();
        Box::pin(async move { Ok(found) })
    }

    fn list(&self, prefix: &str, options: ListOptions) -> BoxFuture<'_, Result<ListResult>> {
        let outcome = (|| {
            let state = self.state();
            let revision = options.revision.unwrap_or(state.revision);
            let snapshot;
            let keys = if revision == state.revision {
                &state.current
            } else {
                snapshot = state.at(revision)?;
                &snapshot
            };
            let matching = keys
                .range(prefix.to_string()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .filter(|(key, _)| {
                    options
                        .start_after
                        .as_ref()
                        .is_none_or(|after| key.as_str() > after.as_str())
                })
                .map(|(_, kv)| kv);
            let all: Vec<&KeyValue> = matching.collect();
            let limit = options.limit.filter(|&l| l > 0).unwrap_or(all.len());
            let items: Vec<KeyValue> = all.iter().take(limit).map(|kv| (*kv).clone()).collect();
            Ok(ListResult {
                remaining: all.len() - items.len(),
                items,
                revision,
            })
        })();
        Box::pin(async move { outcome })
    }

    fn create(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<KeyValue>> {
        let outcome = (|| {
            check_size(key, &value)?;
            let mut state = self.state();
            if state.current.contains_key(key) {
                return Err(StoreError::AlreadyExists(key.to_string()));
            }
            state.revision += 1;
            let kv = KeyValue {
                key: key.to_string(),
                value,
                create_revision: state.revision,
                mod_revision: state.revision,
            };
            self.write(
                &mut state,
                WatchEvent::Put {
                    kv: kv.clone(),
                    prev: None,
                },
            );
            Ok(kv)
        })();
        Box::pin(async move { outcome })
    }

    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> BoxFuture<'_, Result<KeyValue>> {
        let outcome = (|| {
            check_size(key, &value)?;
            let mut state = self.state();
            let prev = state
                .current
                .get(key)
                .cloned()
                .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
            if prev.mod_revision != expected {
                return Err(StoreError::Conflict {
                    key: key.to_string(),
                    expected,
                    current: Some(Box::new(prev)),
                });
            }
            state.revision += 1;
            let kv = KeyValue {
                key: key.to_string(),
                value,
                create_revision: prev.create_revision,
                mod_revision: state.revision,
            };
            self.write(
                &mut state,
                WatchEvent::Put {
                    kv: kv.clone(),
                    prev: Some(prev),
                },
            );
            Ok(kv)
        })();
        Box::pin(async move { outcome })
    }

    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> BoxFuture<'_, Result<(KeyValue, Revision)>> {
        let outcome = (|| {
            let mut state = self.state();
            let prev = state
                .current
                .get(key)
                .cloned()
                .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
            if let Some(expected) = expected.filter(|&e| e != prev.mod_revision) {
                return Err(StoreError::Conflict {
                    key: key.to_string(),
                    expected,
                    current: Some(Box::new(prev)),
                });
            }
            state.revision += 1;
            let revision = state.revision;
            self.write(
                &mut state,
                WatchEvent::Delete {
                    prev: prev.clone(),
                    revision,
                },
            );
            Ok((prev, revision))
        })();
        Box::pin(async move { outcome })
    }

    fn watch(&self, prefix: &str, after: Revision) -> BoxFuture<'_, Result<WatchStream>> {
        let outcome = (|| {
            let state = self.state();
            if after < state.compacted {
                return Err(StoreError::Compacted {
                    requested: after,
                    compacted: state.compacted,
                });
            }
            // Subscribed under the lock: no write falls between the replay and the live feed.
            let live = self.events.subscribe();
            let replay: Vec<Result<WatchEvent>> = state
                .history
                .iter()
                .filter(|e| e.revision() > after && e.key().starts_with(prefix))
                .cloned()
                .map(Ok)
                .collect();
            let prefix = prefix.to_string();
            let live = live_events(live);
            let filtered = live.filter(move |item| {
                let keep = match item {
                    Ok(event) => event.key().starts_with(&prefix),
                    Err(_) => true,
                };
                futures::future::ready(keep)
            });
            let stream: WatchStream = futures::stream::iter(replay).chain(filtered).boxed();
            Ok(stream)
        })();
        Box::pin(async move { outcome })
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision>> {
        let revision = self.state().revision;
        Box::pin(async move { Ok(revision) })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        let outcome = (|| {
            let mut state = self.state();
            if revision > state.revision {
                return Err(StoreError::FutureRevision {
                    requested: revision,
                    current: state.revision,
                });
            }
            if revision <= state.compacted {
                return Err(StoreError::Compacted {
                    requested: revision,
                    compacted: state.compacted,
                });
            }
            state.history.retain(|e| e.revision() > revision);
            state.compacted = revision;
            Ok(())
        })();
        Box::pin(async move { outcome })
    }
}

/// The live events of a broadcast receiver; falling behind ends the stream with `Unavailable`
/// (the events missed cannot be had again: the watcher must list afresh).
fn live_events(
    receiver: broadcast::Receiver<WatchEvent>,
) -> impl futures::Stream<Item = Result<WatchEvent>> {
    futures::stream::unfold(Some(receiver), |receiver| async move {
        let mut receiver = receiver?;
        match receiver.recv().await {
            Ok(event) => Some((Ok(event), Some(receiver))),
            Err(broadcast::error::RecvError::Closed) => None,
            Err(broadcast::error::RecvError::Lagged(missed)) => Some((
                Err(StoreError::Unavailable(format!(
                    "the watch fell {missed} events behind"
                ))),
                None,
            )),
        }
    })
}

#[cfg(test)]
mod tests;

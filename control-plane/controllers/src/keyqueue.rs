//! A work queue of object keys, as client-go's rate-limited workqueue: a key queued while
//! already waiting is queued once, failures come back after a growing delay, and a key is
//! never handed out twice at once (one worker takes them in order).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

/// The first retry delay after a failed sync.
const BASE_DELAY: Duration = Duration::from_millis(50);
/// The longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(100);

/// A de-duplicating queue of keys (`namespace/name`).
#[derive(Clone)]
pub struct KeyQueue {
    sender: mpsc::UnboundedSender<String>,
    state: Arc<Mutex<QueueState>>,
}

#[derive(Default)]
struct QueueState {
    waiting: HashSet<String>,
    failures: HashMap<String, u32>,
}

/// The receiving end, owned by the worker.
pub struct KeyReceiver {
    receiver: mpsc::UnboundedReceiver<String>,
    state: Arc<Mutex<QueueState>>,
}

impl KeyQueue {
    /// A queue and its receiver.
    pub fn new() -> (KeyQueue, KeyReceiver) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(QueueState::default()));
        (
            KeyQueue {
                sender,
                state: Arc::clone(&state),
            },
            KeyReceiver { receiver, state },
        )
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: String) {
        let fresh = self
            .state
            .lock()
            .map(|mut state| state.waiting.insert(key.clone()))
            .unwrap_or(true);
        if fresh {
            // The receiver gone means the controller stopped: nothing to do.
            let _ = self.sender.send(key);
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: String, delay: Duration) {
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// Queues `key` again after the back-off its failures so far earn.
    pub fn retry(&self, key: String) {
        let failures = self
            .state
            .lock()
            .map(|mut state| {
                let count = state.failures.entry(key.clone()).or_default();
                *count = count.saturating_add(1);
                *count
            })
            .unwrap_or(1);
        let delay = BASE_DELAY
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(20)))
            .min(MAX_DELAY);
        self.add_after(key, delay);
    }

    /// Forgets the failures of `key`, after a successful sync.
    pub fn forget(&self, key: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.failures.remove(key);
        }
    }
}

impl KeyReceiver {
    /// The next key; `None` when every sender is gone.
    pub async fn next(&mut self) -> Option<String> {
        let key = self.receiver.recv().await?;
        // Taken off the waiting set before the sync: a change during it queues it again.
        if let Ok(mut state) = self.state.lock() {
            state.waiting.remove(&key);
        }
        Some(key)
    }
}

/// `namespace/name` of a namespaced object.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Splits a `namespace/name` key.
pub fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiting_key_is_queued_once() {
        let (queue, mut receiver) = KeyQueue::new();
        queue.add("a/b".into());
        queue.add("a/b".into());
        queue.add("a/c".into());
        assert_eq!(receiver.next().await.as_deref(), Some("a/b"));
        assert_eq!(receiver.next().await.as_deref(), Some("a/c"));
        queue.add("a/b".into());
        assert_eq!(receiver.next().await.as_deref(), Some("a/b"));
    }
}

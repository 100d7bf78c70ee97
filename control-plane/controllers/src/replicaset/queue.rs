//! A work queue of object keys with client-go's semantics: a key is queued at most once, is
//! handled by one worker at a time (added again while being handled, it is handled once more
//! afterwards), can be added after a delay, and failing keys back off exponentially.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A namespaced object's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl Key {
    /// The key of `namespace/name`.
    pub fn new(namespace: &str, name: &str) -> Key {
        Key {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of an object's metadata.
    pub fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
        Key::new(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// client-go's per-item exponential failure back-off: 5 ms doubling, at most 1000 s.
const BASE_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_secs(1000);

#[derive(Default)]
struct State {
    queue: VecDeque<Key>,
    dirty: HashSet<Key>,
    processing: HashSet<Key>,
    delayed: BinaryHeap<Reverse<(Instant, Key)>>,
    failures: HashMap<Key, u32>,
}

/// The queue; shared by the event handlers (producers) and the workers.
#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    wake: Notify,
}

impl WorkQueue {
    /// An empty queue.
    pub fn new() -> WorkQueue {
        WorkQueue::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` unless it is queued already.
    pub fn add(&self, key: Key) {
        let mut state = self.lock();
        if !state.dirty.insert(key.clone()) {
            return;
        }
        if state.processing.contains(&key) {
            return;
        }
        state.queue.push_back(key);
        drop(state);
        self.wake.notify_one();
    }

    /// Queues `key` once `delay` has passed.
    pub fn add_after(&self, key: Key, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        self.lock()
            .delayed
            .push(Reverse((Instant::now() + delay, key)));
        // A waiting worker recomputes its wake-up time.
        self.wake.notify_one();
    }

    /// Queues `key` after its back-off, which doubles with each failure until [`forget`].
    ///
    /// [`forget`]: WorkQueue::forget
    pub fn add_rate_limited(&self, key: Key) {
        let failures = {
            let mut state = self.lock();
            let failures = state.failures.entry(key.clone()).or_insert(0);
            *failures += 1;
            *failures
        };
        let delay = BASE_DELAY
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(30)))
            .min(MAX_DELAY);
        self.add_after(key, delay);
    }

    /// Clears `key`'s failure count.
    pub fn forget(&self, key: &Key) {
        self.lock().failures.remove(key);
    }

    /// The next key to handle; the caller must call [`done`](WorkQueue::done) after it.
    pub async fn next(&self) -> Key {
        loop {
            let woken = self.wake.notified();
            let next_delay = {
                let mut state = self.lock();
                let now = Instant::now();
                while let Some(Reverse((at, _))) = state.delayed.peek() {
                    if *at > now {
                        break;
                    }
                    if let Some(Reverse((_, key))) = state.delayed.pop()
                        && state.dirty.insert(key.clone())
                        && !state.processing.contains(&key)
                    {
                        state.queue.push_back(key);
                    }
                }
                if let Some(key) = state.queue.pop_front() {
                    state.dirty.remove(&key);
                    state.processing.insert(key.clone());
                    if !state.queue.is_empty() {
                        // Let another worker pick up the rest.
                        self.wake.notify_one();
                    }
                    return key;
                }
                state.delayed.peek().map(|Reverse((at, _))| *at)
            };
            match next_delay {
                Some(at) => {
                    tokio::select! {
                        _ = woken => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => woken.await,
            }
        }
    }

    /// Marks `key` handled; queued again if it was added meanwhile.
    pub fn done(&self, key: &Key) {
        let mut state = self.lock();
        state.processing.remove(key);
        if state.dirty.contains(key) {
            state.queue.push_back(key.clone());
            drop(state);
            self.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_queued_once_and_requeued_when_added_while_processing() {
        let queue = WorkQueue::new();
        let a = Key::new("ns", "a");
        queue.add(a.clone());
        queue.add(a.clone());
        assert_eq!(queue.next().await, a);
        queue.add(a.clone());
        // Not handed out twice at once.
        let second = tokio::time::timeout(Duration::from_millis(50), queue.next()).await;
        assert!(second.is_err());
        queue.done(&a);
        assert_eq!(queue.next().await, a);
    }

    #[tokio::test]
    async fn delayed_keys_come_out_after_their_delay() {
        let queue = WorkQueue::new();
        let started = Instant::now();
        queue.add_after(Key::new("ns", "late"), Duration::from_millis(60));
        queue.add_after(Key::new("ns", "early"), Duration::from_millis(20));
        assert_eq!(queue.next().await.name, "early");
        assert_eq!(queue.next().await.name, "late");
        assert!(started.elapsed() >= Duration::from_millis(60));
    }
}

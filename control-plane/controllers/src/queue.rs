//! The controllers' work queue, with client-go's semantics: a key is queued at most once, is
//! handled by one worker at a time (added again while being handled, it is handled once more
//! afterwards), can be added after a delay, and failing keys back off exponentially.
//!
//! Generic over the key: most controllers queue a namespaced object's [`Key`], the endpoint
//! controllers its `namespace/name` string, the garbage collector its own jobs.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
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

impl Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `namespace/name` of a namespaced object, for queues of string keys.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Splits a `namespace/name` key.
pub fn split(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// Per-key exponential failure back-off: `base` doubling with each failure, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// client-go's default controller rate limiter: 5 ms doubling, at most 1000 s.
    pub const CLIENT_GO: Backoff = Backoff {
        base: Duration::from_millis(5),
        max: Duration::from_secs(1000),
    };

    /// The delay after the `failures`-th consecutive failure (counted from 1).
    pub fn delay(&self, failures: u32) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(30)))
            .min(self.max)
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::CLIENT_GO
    }
}

struct State<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    processing: HashSet<K>,
    delayed: BTreeMap<Instant, Vec<K>>,
    failures: HashMap<K, u32>,
}

impl<K> Default for State<K> {
    fn default() -> State<K> {
        State {
            queue: VecDeque::new(),
            dirty: HashSet::new(),
            processing: HashSet::new(),
            delayed: BTreeMap::new(),
            failures: HashMap::new(),
        }
    }
}

/// The queue; shared by the event handlers (producers) and the workers.
pub struct WorkQueue<K = Key> {
    state: Mutex<State<K>>,
    wake: Notify,
    backoff: Backoff,
}

impl<K: Clone + Eq + Hash> Default for WorkQueue<K> {
    fn default() -> WorkQueue<K> {
        WorkQueue::with_backoff(Backoff::default())
    }
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    /// An empty queue with client-go's back-off.
    pub fn new() -> WorkQueue<K> {
        WorkQueue::default()
    }

    /// An empty queue whose failing keys back off by `backoff`.
    pub fn with_backoff(backoff: Backoff) -> WorkQueue<K> {
        WorkQueue {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            backoff,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // A panic while holding the lock leaves consistent data: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` unless it is queued already.
    pub fn add(&self, key: K) {
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
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        self.lock()
            .delayed
            .entry(Instant::now() + delay)
            .or_default()
            .push(key);
        // A waiting worker recomputes its wake-up time.
        self.wake.notify_one();
    }

    /// Queues `key` after its back-off, which doubles with each failure until [`forget`].
    ///
    /// [`forget`]: WorkQueue::forget
    pub fn add_rate_limited(&self, key: K) {
        let failures = {
            let mut state = self.lock();
            let failures = state.failures.entry(key.clone()).or_insert(0);
            *failures = failures.saturating_add(1);
            *failures
        };
        self.add_after(key, self.backoff.delay(failures));
    }

    /// Clears `key`'s failure count.
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// The next key to handle; the caller must call [`done`](WorkQueue::done) after it.
    pub async fn next(&self) -> K {
        loop {
            let woken = self.wake.notified();
            let next_delay = {
                let mut state = self.lock();
                let now = Instant::now();
                while let Some(entry) = state.delayed.first_entry() {
                    if *entry.key() > now {
                        break;
                    }
                    for key in entry.remove() {
                        if state.dirty.insert(key.clone()) && !state.processing.contains(&key) {
                            state.queue.push_back(key);
                        }
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
                state.delayed.keys().next().copied()
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
    pub fn done(&self, key: &K) {
        let mut state = self.lock();
        state.processing.remove(key);
        if state.dirty.contains(key) {
            state.queue.push_back(key.clone());
            drop(state);
            self.wake.notify_one();
        }
    }
}

impl<K: Clone + Eq + Hash + Display> WorkQueue<K> {
    /// One worker: forever takes a key and runs `sync` on it; `Ok(Some(d))` queues it again
    /// after `d`, an error queues it again after its back-off.
    pub async fn work<F, Fut, E>(&self, sync: F)
    where
        F: Fn(K) -> Fut,
        Fut: Future<Output = Result<Option<Duration>, E>>,
        E: Display,
    {
        loop {
            let key = self.next().await;
            match sync(key.clone()).await {
                Ok(again) => {
                    self.forget(&key);
                    if let Some(delay) = again {
                        self.add_after(key.clone(), delay);
                    }
                }
                Err(error) => {
                    tracing::info!(object = %key, %error, "sync failed; retrying");
                    self.add_rate_limited(key.clone());
                }
            }
            self.done(&key);
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

    #[tokio::test]
    async fn keys_of_any_type_are_deduplicated() {
        let queue: WorkQueue<String> = WorkQueue::new();
        queue.add("a/b".into());
        queue.add("a/b".into());
        queue.add("a/c".into());
        assert_eq!(queue.next().await, "a/b");
        assert_eq!(queue.next().await, "a/c");
        let third = tokio::time::timeout(Duration::from_millis(30), queue.next()).await;
        assert!(third.is_err());
    }

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let backoff = Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_secs(1),
        };
        assert_eq!(backoff.delay(1), Duration::from_millis(50));
        assert_eq!(backoff.delay(2), Duration::from_millis(100));
        assert_eq!(backoff.delay(5), Duration::from_millis(800));
        assert_eq!(backoff.delay(6), Duration::from_secs(1));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
    }
}

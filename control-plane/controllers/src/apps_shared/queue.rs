//! A work queue of object keys: deduplicated, processed one at a time, with delayed re-adds
//! and per-key exponential back-off on failure (as client-go's rate-limited queue).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// A namespaced object's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
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
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The sending side, cheap to clone into the watch feeds.
#[derive(Debug, Clone)]
pub struct Queue {
    tx: mpsc::UnboundedSender<(Key, Option<Duration>)>,
}

/// The receiving side, consumed by [`Worker::run`].
#[derive(Debug)]
pub struct Worker {
    rx: mpsc::UnboundedReceiver<(Key, Option<Duration>)>,
}

/// A new queue.
pub fn queue() -> (Queue, Worker) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Queue { tx }, Worker { rx })
}

impl Queue {
    /// Queues `key` now.
    pub fn add(&self, key: Key) {
        let _ = self.tx.send((key, None));
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: Key, delay: Duration) {
        let _ = self.tx.send((key, Some(delay)));
    }
}

/// The first retry delay; doubled per consecutive failure up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(50);
/// The longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Worker {
    /// Runs `sync` for each queued key, one at a time; `Ok(Some(d))` re-queues after `d`, an
    /// error re-queues with back-off. Runs until every [`Queue`] is dropped.
    pub async fn run<F, Fut, E>(mut self, sync: F)
    where
        F: Fn(Key) -> Fut,
        Fut: Future<Output = Result<Option<Duration>, E>>,
        E: std::fmt::Display,
    {
        let mut ready: VecDeque<Key> = VecDeque::new();
        let mut queued: HashSet<Key> = HashSet::new();
        let mut delayed: BTreeMap<Instant, Vec<Key>> = BTreeMap::new();
        let mut failures: HashMap<Key, u32> = HashMap::new();
        loop {
            let now = Instant::now();
            while let Some(entry) = delayed.first_entry() {
                if *entry.key() > now {
                    break;
                }
                for key in entry.remove() {
                    if queued.insert(key.clone()) {
                        ready.push_back(key);
                    }
                }
            }
            let Some(key) = ready.pop_front() else {
                let next = delayed.keys().next().copied();
                let message = match next {
                    Some(at) => tokio::select! {
                        message = self.rx.recv() => message.map(Some),
                        _ = tokio::time::sleep_until(at) => Some(None),
                    },
                    None => self.rx.recv().await.map(Some),
                };
                match message {
                    None => return,
                    Some(None) => {}
                    Some(Some((key, delay))) => {
                        enqueue(&mut ready, &mut queued, &mut delayed, key, delay)
                    }
                }
                continue;
            };
            // Take everything else already sent, so that duplicates collapse.
            while let Ok((other, delay)) = self.rx.try_recv() {
                if other == key && delay.is_none() {
                    continue;
                }
                enqueue(&mut ready, &mut queued, &mut delayed, other, delay);
            }
            queued.remove(&key);
            match sync(key.clone()).await {
                Ok(again) => {
                    failures.remove(&key);
                    if let Some(delay) = again {
                        enqueue(&mut ready, &mut queued, &mut delayed, key, Some(delay));
                    }
                }
                Err(error) => {
                    let count = failures.entry(key.clone()).or_insert(0);
                    let delay = BASE_BACKOFF
                        .saturating_mul(1u32 << (*count).min(20))
                        .min(MAX_BACKOFF);
                    *count += 1;
                    tracing::info!(object = %key, %error, ?delay, "sync failed; retrying");
                    enqueue(&mut ready, &mut queued, &mut delayed, key, Some(delay));
                }
            }
        }
    }
}

fn enqueue(
    ready: &mut VecDeque<Key>,
    queued: &mut HashSet<Key>,
    delayed: &mut BTreeMap<Instant, Vec<Key>>,
    key: Key,
    delay: Option<Duration>,
) {
    match delay {
        Some(delay) if !delay.is_zero() => {
            delayed.entry(Instant::now() + delay).or_default().push(key)
        }
        _ => {
            if queued.insert(key.clone()) {
                ready.push_back(key);
            }
        }
    }
}

//! The control plane's storage: a revisioned key–value store in the manner of etcd v3, behind
//! one trait with an embedded implementation (the default) and an etcd one (for several API
//! servers).
//!
//! Every write gets the next revision of the whole store; a key remembers the revision that
//! created it and the one that last changed it. Reads are at the latest revision or at an older
//! one still in the history; watches deliver every change after a revision, in order, until the
//! history they need has been compacted away. The API server turns revisions into
//! resourceVersions, so these rules are the ones Kubernetes clients see.

use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub mod compactor;
pub mod conformance;
pub mod etcd;
pub mod memory;
pub mod sqlite;

/// A store revision: increases by one with every write. An embedded store starts at 0 and gives
/// its first write 1; an etcd-backed one shares etcd's counter (which starts at 1, and which
/// writes under other prefixes advance too), so only the order of one store's writes is
/// guaranteed, not their absolute numbers.
pub type Revision = i64;

/// A stored key and its value, with the revisions that created and last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, e.g. `/registry/pods/default/web`.
    pub key: String,
    /// The stored bytes.
    pub value: Vec<u8>,
    /// The revision of the write that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// The revision of the write that last changed it.
    pub mod_revision: Revision,
}

/// How a list reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Read at this revision; `None` reads at the latest one.
    pub revision: Option<Revision>,
    /// Only keys after this one (exclusive), for paging: the last key of the previous page.
    pub start_after: Option<String>,
    /// At most this many items; `None` or 0 for all.
    pub limit: Option<usize>,
}

/// A page of keys under a prefix, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// The items of this page.
    pub items: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// How many keys under the prefix (at that revision) come after this page.
    pub remaining: usize,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed; `prev` is what it held before, if it existed.
    Put {
        /// The new value.
        kv: KeyValue,
        /// The previous value, when the key existed.
        prev: Option<KeyValue>,
    },
    /// The key was deleted at `revision`; `prev` is what it held.
    Delete {
        /// The last value before the deletion.
        prev: KeyValue,
        /// The revision of the deletion.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The revision of the write this event reports.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put { kv, .. } => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }

    /// The key it concerns.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put { kv, .. } => &kv.key,
            WatchEvent::Delete { prev, .. } => &prev.key,
        }
    }
}

/// What can go wrong in the store.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The key does not exist.
    #[error("key {0} not found")]
    NotFound(String),
    /// A create found the key there already.
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// An update or delete expected another revision; `current` is what the key holds now.
    #[error("key {key} was changed: expected revision {expected}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// What the key holds now (`None`: it is gone).
        current: Option<Box<KeyValue>>,
    },
    /// The revision asked for is older than the history kept.
    #[error("revision {requested} has been compacted; the oldest kept is {compacted}")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The store's compaction point: revisions at or below it are gone.
        compacted: Revision,
    },
    /// The revision asked for is newer than the store's.
    #[error("revision {requested} is in the future; the store is at {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's revision.
        current: Revision,
    },
    /// The value is larger than the store takes.
    #[error("value of {key} is {size} bytes, more than the {limit} the store takes")]
    TooLarge {
        /// The key.
        key: String,
        /// The value's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The store cannot be reached or cannot answer now (a client may retry).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a corrupt file, a failed disk.
    #[error("storage error: {0}")]
    Internal(String),
}

/// A store result.
pub type Result<T> = std::result::Result<T, StoreError>;

/// The changes under a prefix, in revision order. An error ends the stream: `Compacted` when the
/// watch fell behind the history kept, `Unavailable` when the store went away.
pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

/// The largest value a store takes by default (etcd's default request limit is 1.5 MiB; the API
/// server refuses bodies over 3 MiB before they get here).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 3 * 1024 * 1024;

/// A revisioned key–value store. Every method that writes is durable when it returns `Ok`.
pub trait Store: Send + Sync + 'static {
    /// The key's value at the latest revision, `None` when it does not exist.
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>>>;

    /// The keys under `prefix` as `options` asks, in key order.
    fn list(&self, prefix: &str, options: ListOptions) -> BoxFuture<'_, Result<ListResult>>;

    /// Creates `key`; `AlreadyExists` when it exists.
    fn create(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<KeyValue>>;

    /// Replaces the value of `key` if it was last changed at `expected`; `Conflict` (with what it
    /// holds now) otherwise, `NotFound` when it does not exist.
    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> BoxFuture<'_, Result<KeyValue>>;

    /// Deletes `key`, if `expected` is given only when it was last changed then. Returns the
    /// value it held and the revision of the deletion.
    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> BoxFuture<'_, Result<(KeyValue, Revision)>>;

    /// Every change under `prefix` with a revision above `after`, then every later one as it
    /// happens. `Compacted` (at once or later in the stream) when `after` is older than the
    /// history kept.
    fn watch(&self, prefix: &str, after: Revision) -> BoxFuture<'_, Result<WatchStream>>;

    /// The latest revision.
    fn revision(&self) -> BoxFuture<'_, Result<Revision>>;

    /// Forgets the history at and below `revision` (the values current then stay readable).
    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>>;
}

/// `TooLarge` for a value over [`DEFAULT_MAX_VALUE_BYTES`], checked before a write touches
/// storage.
pub(crate) fn check_size(key: &str, value: &[u8]) -> Result<()> {
    if value.len() > DEFAULT_MAX_VALUE_BYTES {
        return Err(StoreError::TooLarge {
            key: key.to_string(),
            size: value.len(),
            limit: DEFAULT_MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// The first key after every key that starts with `prefix` (what etcd calls the range end),
/// `None` when no key is (an empty prefix, or one of only 0xff bytes).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

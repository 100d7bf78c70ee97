//! The embedded store: one SQLite file in WAL mode, every write fsynced before it is
//! acknowledged, history kept as a log table so reads at old revisions and watches from them
//! are queries. Writes go through one connection on a thread of its own; reads use a small pool
//! of connections on tokio's blocking threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::sync::broadcast;

use crate::{
    KeyValue, ListOptions, ListResult, Result, Revision, Store, StoreError, WatchEvent,
    WatchStream, check_size,
};

mod checkpoint;
mod read;
mod schema;
mod watch;
mod writer;

use read::Readers;
use writer::{Op, Outcome, Writer};

/// Live events a watcher may fall behind by before it goes back to reading the table.
const WATCH_BUFFER: usize = 1024;

/// Revisions one compaction transaction forgets at most.
const COMPACT_STEP: Revision = 500;

/// A [`Store`] in one SQLite file.
pub struct SqliteStore {
    shared: Arc<Shared>,
    writer: Writer,
    _checkpointer: checkpoint::Checkpointer,
}

/// What the store, its writer thread and its watches share.
pub(crate) struct Shared {
    readers: Readers,
    /// The revision of the last commit (what `revision()` answers without a query).
    revision: AtomicI64,
    compacted: AtomicI64,
    /// Emptied when the store is dropped, which ends its watches.
    events: Mutex<Option<broadcast::Sender<Arc<WatchEvent>>>>,
}

impl Shared {
    fn subscribe(&self) -> Option<broadcast::Receiver<Arc<WatchEvent>>> {
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(broadcast::Sender::subscribe)
    }

    fn publish(&self, events: Vec<WatchEvent>) {
        let sender = self
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sender) = sender.as_ref() {
            for event in events {
                // No receiver is no error: nobody watches.
                let _ = sender.send(Arc::new(event));
            }
        }
    }
}

impl SqliteStore {
    /// The file's name in a data directory.
    pub const FILE_NAME: &'static str = "store.sqlite";

    /// Opens (creating when missing) the store in `data_dir`, as
    /// `capstan control-plane --data-dir` does. Blocks on file I/O.
    pub fn open_in(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Internal(format!(
                "create the data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        Self::open(data_dir.join(Self::FILE_NAME))
    }

    /// Opens (creating when missing) the store in the file at `path`. Blocks on file I/O.
    /// SQLite keeps `-wal` and `-shm` files beside it while it is open.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let (conn, revision, compacted) = schema::open_writer(&path)?;
        tracing::info!(path = %path.display(), revision, compacted, "opened the store");
        let checkpointer = checkpoint::Checkpointer::start(path.clone())?;
        let shared = Arc::new(Shared {
            readers: Readers::new(path),
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            events: Mutex::new(Some(broadcast::channel(WATCH_BUFFER).0)),
        });
        let writer = Writer::start(conn, revision, compacted, shared.clone())?;
        Ok(SqliteStore {
            shared,
            writer,
            _checkpointer: checkpointer,
        })
    }

    /// The revision at and below which history has been compacted.
    pub fn compacted(&self) -> Revision {
        self.shared.compacted.load(Ordering::Acquire)
    }

    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.readers.with(read))
            .await
            .map_err(|e| StoreError::Internal(format!("a store read failed: {e}")))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Ends the watches; the writer (dropped next) finishes what is queued and closes.
        self.shared
            .events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
    }
}

fn unexpected(what: &str) -> StoreError {
    StoreError::Internal(format!(
        "the store's writer answered a {what} with another outcome"
    ))
}

impl Store for SqliteStore {
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>>> {
        let key = key.to_string();
        Box::pin(self.read(move |conn| read::get(conn, &key)))
    }

    fn list(&self, prefix: &str, options: ListOptions) -> BoxFuture<'_, Result<ListResult>> {
        let prefix = prefix.to_string();
        Box::pin(self.read(move |conn| read::list(conn, &prefix, &options)))
    }

    fn create(&self, key: &str, value: Vec<u8>) -> BoxFuture<'_, Result<KeyValue>> {
        let key = key.to_string();
        Box::pin(async move {
            check_size(&key, &value)?;
            match self.writer.submit(Op::Create { key, value }).await? {
                Outcome::Written(kv) => Ok(kv),
                _ => Err(unexpected("create")),
            }
        })
    }

    fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> BoxFuture<'_, Result<KeyValue>> {
        let key = key.to_string();
        Box::pin(async move {
            check_size(&key, &value)?;
            let op = Op::Update {
                key,
                value,
                expected,
            };
            match self.writer.submit(op).await? {
                Outcome::Written(kv) => Ok(kv),
                _ => Err(unexpected("update")),
            }
        })
    }

    fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> BoxFuture<'_, Result<(KeyValue, Revision)>> {
        let key = key.to_string();
        Box::pin(async move {
            match self.writer.submit(Op::Delete { key, expected }).await? {
                Outcome::Deleted(prev, revision) => Ok((prev, revision)),
                _ => Err(unexpected("delete")),
            }
        })
    }

    fn watch(&self, prefix: &str, after: Revision) -> BoxFuture<'_, Result<WatchStream>> {
        let prefix = prefix.to_string();
        let shared = self.shared.clone();
        Box::pin(async move {
            let cursor = watch::Cursor::open(shared, prefix, after).await?;
            Ok(cursor.into_stream())
        })
    }

    fn revision(&self) -> BoxFuture<'_, Result<Revision>> {
        let revision = self.shared.revision.load(Ordering::Acquire);
        Box::pin(async move { Ok(revision) })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            // In steps, each its own transaction, so writes queued meanwhile go between them
            // instead of waiting for the whole compaction. A refused one (already compacted,
            // or in the future) is one step, refused as a whole.
            let from = self.compacted();
            let current = self.shared.revision.load(Ordering::Acquire);
            let mut at = if revision > current || revision <= from {
                revision - 1
            } else {
                from
            };
            while at < revision {
                let step = (at + COMPACT_STEP).min(revision);
                match self.writer.submit(Op::Compact { revision: step }).await? {
                    Outcome::Compacted => at = step,
                    _ => return Err(unexpected("compaction")),
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;

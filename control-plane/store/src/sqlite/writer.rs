//! The one writing connection, on a thread of its own: writes queue up for it, and whatever is
//! queued when it gets to them commits in one transaction (one fsync for many writers), after
//! which their events go to the watchers and their callers get their answers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::{Connection, Transaction, params};
use tokio::sync::oneshot;

use super::Shared;
use super::schema::{LatestRow, db_error, latest_row};
use crate::{KeyValue, Result, Revision, StoreError, WatchEvent};

/// The most writes one transaction takes: enough to share an fsync widely, few enough that a
/// failed commit fails few callers.
const MAX_BATCH: usize = 256;

/// A write the writer thread carries out.
pub(super) enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

/// What a write did.
pub(super) enum Outcome {
    Written(KeyValue),
    Deleted(KeyValue, Revision),
    Compacted,
}

struct Command {
    op: Op,
    reply: oneshot::Sender<Result<Outcome>>,
}

/// The handle of the writer thread; dropping it lets the thread finish what is queued and
/// close the connection.
pub(super) struct Writer {
    queue: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread on `conn`, at the given revision and compaction point.
    pub(super) fn start(
        conn: Connection,
        revision: Revision,
        compacted: Revision,
        shared: Arc<Shared>,
    ) -> Result<Writer> {
        let (queue, commands) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("capstan-store-writer".into())
            .spawn(move || {
                let mut state = WriterState {
                    conn,
                    revision,
                    compacted,
                    shared,
                };
                while let Ok(first) = commands.recv() {
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match commands.try_recv() {
                            Ok(command) => batch.push(command),
                            Err(_) => break,
                        }
                    }
                    state.run(batch);
                }
            })
            .map_err(|e| StoreError::Internal(format!("start the store's writer thread: {e}")))?;
        Ok(Writer {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queues `op` and waits until it is committed (or refused).
    pub(super) async fn submit(&self, op: Op) -> Result<Outcome> {
        let (reply, answer) = oneshot::channel();
        let gone = || StoreError::Internal("the store's writer thread has stopped".into());
        self.queue
            .as_ref()
            .ok_or_else(gone)?
            .send(Command { op, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store's writer thread panicked");
        }
    }
}

struct WriterState {
    conn: Connection,
    revision: Revision,
    compacted: Revision,
    shared: Arc<Shared>,
}

/// The next revision and compaction point while a batch is applied, and its events.
struct Pending {
    revision: Revision,
    compacted: Revision,
    events: Vec<WatchEvent>,
}

impl WriterState {
    fn run(&mut self, batch: Vec<Command>) {
        let mut pending = Pending {
            revision: self.revision,
            compacted: self.compacted,
            events: Vec::new(),
        };
        let applied = self.apply_all(&batch, &mut pending);
        match applied {
            Ok(results) => {
                self.revision = pending.revision;
                self.compacted = pending.compacted;
                self.shared.revision.store(self.revision, Ordering::Release);
                self.shared
                    .compacted
                    .store(self.compacted, Ordering::Release);
                self.shared.publish(pending.events);
                for (command, result) in batch.into_iter().zip(results) {
                    // A caller that gave up waiting is no error: its write stands.
                    let _ = command.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "a store transaction failed");
                for command in batch {
                    let _ = command.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Applies the batch in one transaction; the inner results are each write's own answer
    /// (a refused precondition is one), the outer error fails the whole batch.
    fn apply_all(
        &mut self,
        batch: &[Command],
        pending: &mut Pending,
    ) -> Result<Vec<Result<Outcome>>> {
        let tx = self
            .conn
            .transaction()
            .map_err(db_error("begin a transaction"))?;
        let mut results = Vec::with_capacity(batch.len());
        for command in batch {
            results.push(apply(&tx, &command.op, pending)?);
        }
        if pending.revision != self.revision || pending.compacted != self.compacted {
            tx.execute(
                "UPDATE meta SET value = CASE name WHEN 'revision' THEN ?1 ELSE ?2 END",
                params![pending.revision, pending.compacted],
            )
            .map_err(db_error("record the revision"))?;
        }
        tx.commit().map_err(db_error("commit"))?;
        Ok(results)
    }
}

fn current_kv(key: &str, row: LatestRow) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: row.value,
        create_revision: row.create_revision,
        mod_revision: row.revision,
    }
}

/// The key's current value, `NotFound` when it does not exist.
fn existing(tx: &Transaction<'_>, key: &str) -> Result<std::result::Result<KeyValue, StoreError>> {
    Ok(match latest_row(tx, key)? {
        Some(row) if !row.deleted => Ok(current_kv(key, row)),
        _ => Err(StoreError::NotFound(key.to_string())),
    })
}

fn insert(
    tx: &Transaction<'_>,
    kv: &KeyValue,
    prev_revision: Revision,
    deleted: bool,
    revision: Revision,
) -> Result<()> {
    let mut statement = tx
        .prepare_cached(
            "INSERT INTO log (revision, key, value, create_revision, prev_revision, deleted) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(db_error("prepare the log insert"))?;
    statement
        .execute(params![
            revision,
            kv.key.as_bytes(),
            kv.value,
            kv.create_revision,
            prev_revision,
            deleted
        ])
        .map_err(db_error("append to the log"))?;
    Ok(())
}

fn conflict(key: &str, expected: Revision, current: KeyValue) -> StoreError {
    StoreError::Conflict {
        key: key.to_string(),
        expected,
        current: Some(Box::new(current)),
    }
}

/// One write inside the batch's transaction.
fn apply(tx: &Transaction<'_>, op: &Op, pending: &mut Pending) -> Result<Result<Outcome>> {
    match op {
        Op::Create { key, value } => {
            if existing(tx, key)?.is_ok() {
                return Ok(Err(StoreError::AlreadyExists(key.clone())));
            }
            let revision = pending.revision + 1;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: revision,
                mod_revision: revision,
            };
            insert(tx, &kv, 0, false, revision)?;
            pending.revision = revision;
            pending.events.push(WatchEvent::Put {
                kv: kv.clone(),
                prev: None,
            });
            Ok(Ok(Outcome::Written(kv)))
        }
        Op::Update {
            key,
            value,
            expected,
        } => {
            let prev = match existing(tx, key)? {
                Ok(prev) => prev,
                Err(e) => return Ok(Err(e)),
            };
            if prev.mod_revision != *expected {
                return Ok(Err(conflict(key, *expected, prev)));
            }
            let revision = pending.revision + 1;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: prev.create_revision,
                mod_revision: revision,
            };
            insert(tx, &kv, prev.mod_revision, false, revision)?;
            pending.revision = revision;
            pending.events.push(WatchEvent::Put {
                kv: kv.clone(),
                prev: Some(prev),
            });
            Ok(Ok(Outcome::Written(kv)))
        }
        Op::Delete { key, expected } => {
            let prev = match existing(tx, key)? {
                Ok(prev) => prev,
                Err(e) => return Ok(Err(e)),
            };
            if let Some(expected) = expected.filter(|&e| e != prev.mod_revision) {
                return Ok(Err(conflict(key, expected, prev)));
            }
            let revision = pending.revision + 1;
            // The deletion row keeps the deleted value: its watch event carries it.
            insert(tx, &prev, prev.mod_revision, true, revision)?;
            pending.revision = revision;
            pending.events.push(WatchEvent::Delete {
                prev: prev.clone(),
                revision,
            });
            Ok(Ok(Outcome::Deleted(prev, revision)))
        }
        Op::Compact { revision } => {
            if *revision > pending.revision {
                return Ok(Err(StoreError::FutureRevision {
                    requested: *revision,
                    current: pending.revision,
                }));
            }
            if *revision <= pending.compacted {
                return Ok(Err(StoreError::Compacted {
                    requested: *revision,
                    compacted: pending.compacted,
                }));
            }
            // Keeps, of each key, the row in force at the compaction point (reads at that
            // revision and the `prev` of later events need it) unless that row is a deletion.
            // Only keys written since the last compaction can have such rows: the others'
            // were removed then, so the rest of the log (every untouched object) is not read.
            let removed = tx
                .execute(
                    "DELETE FROM log WHERE revision <= ?1 \
                     AND key IN (SELECT key FROM log WHERE revision > ?2 AND revision <= ?1) \
                     AND (deleted = 1 OR revision < \
                     (SELECT MAX(newer.revision) FROM log AS newer \
                      WHERE newer.key = log.key AND newer.revision <= ?1))",
                    [*revision, pending.compacted],
                )
                .map_err(db_error("compact the log"))?;
            tracing::debug!(revision, removed, "compacted the store's history");
            pending.compacted = *revision;
            Ok(Ok(Outcome::Compacted))
        }
    }
}

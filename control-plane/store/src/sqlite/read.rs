//! Reads: a small pool of read connections used on tokio's blocking threads, and the queries
//! for get, list and a page of the log.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::Connection;
use rusqlite::types::Value;

use super::schema::{db_error, key_string, latest_row, open_reader, read_meta};
use crate::{KeyValue, ListOptions, ListResult, Result, Revision, StoreError, WatchEvent};

/// Idle read connections kept for reuse; more are opened when busy and closed after.
const IDLE_READERS: usize = 4;

/// The read connections of one file.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(super) fn new(path: PathBuf) -> Self {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on a connection, blocking: call it from a blocking thread.
    pub(super) fn with<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = read(&conn);
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

/// The key's current value.
pub(super) fn get(conn: &Connection, key: &str) -> Result<Option<KeyValue>> {
    Ok(latest_row(conn, key)?
        .filter(|row| !row.deleted)
        .map(|row| KeyValue {
            key: key.to_string(),
            value: row.value,
            create_revision: row.create_revision,
            mod_revision: row.revision,
        }))
}

/// Checks `revision` against the store's range, in the caller's transaction.
fn check_readable(conn: &Connection, revision: Option<Revision>) -> Result<Revision> {
    let (current, compacted) = read_meta(conn)?;
    let revision = revision.unwrap_or(current);
    if revision > current {
        return Err(StoreError::FutureRevision {
            requested: revision,
            current,
        });
    }
    if revision < compacted {
        return Err(StoreError::Compacted {
            requested: revision,
            compacted,
        });
    }
    Ok(revision)
}

/// The SQL condition and parameters that pick the keys under `prefix` (after `start_after`),
/// with `?1` left for the revision. Dynamic because an unbounded range has no upper key.
fn key_range(prefix: &str, start_after: Option<&str>, column: &str) -> (String, Vec<Value>) {
    let mut condition = format!("{column} >= ?2");
    let mut values = vec![Value::Blob(prefix.as_bytes().to_vec())];
    if let Some(end) = crate::prefix_end(prefix.as_bytes()) {
        values.push(Value::Blob(end));
        condition.push_str(&format!(" AND {column} < ?{}", values.len() + 1));
    }
    if let Some(after) = start_after {
        values.push(Value::Blob(after.as_bytes().to_vec()));
        condition.push_str(&format!(" AND {column} > ?{}", values.len() + 1));
    }
    (condition, values)
}

/// A page of the keys under `prefix` at a revision, read in one transaction so the page and
/// the count agree.
pub(super) fn list(conn: &Connection, prefix: &str, options: &ListOptions) -> Result<ListResult> {
    let tx = conn
        .unchecked_transaction()
        .map_err(db_error("begin a read"))?;
    let revision = check_readable(&tx, options.revision)?;
    let (range, range_values) = key_range(prefix, options.start_after.as_deref(), "key");
    // Of each key the newest row at or below the revision, unless it is a deletion.
    let live = format!(
        "FROM log AS l JOIN (SELECT MAX(revision) AS newest FROM log \
         WHERE {range} AND revision <= ?1 GROUP BY key) AS m ON l.revision = m.newest \
         WHERE l.deleted = 0"
    );
    let mut values = vec![Value::Integer(revision)];
    values.extend(range_values);
    let limit = options.limit.filter(|&l| l > 0);
    let limit_clause = match limit {
        Some(limit) => format!(" LIMIT {limit}"),
        None => String::new(),
    };
    let mut statement = tx
        .prepare(&format!(
            "SELECT l.key, l.value, l.create_revision, l.revision {live} ORDER BY l.key{limit_clause}"
        ))
        .map_err(db_error("prepare a list"))?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(values.iter()), |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, Revision>(2)?,
                row.get::<_, Revision>(3)?,
            ))
        })
        .map_err(db_error("list"))?;
    let mut items = Vec::new();
    for row in rows {
        let (key, value, create_revision, mod_revision) = row.map_err(db_error("read a row"))?;
        items.push(KeyValue {
            key: key_string(key)?,
            value,
            create_revision,
            mod_revision,
        });
    }
    let remaining = match limit {
        Some(limit) if items.len() == limit => {
            let total: i64 = tx
                .prepare(&format!("SELECT COUNT(*) {live}"))
                .map_err(db_error("prepare a count"))?
                .query_row(rusqlite::params_from_iter(values.iter()), |row| row.get(0))
                .map_err(db_error("count"))?;
            usize::try_from(total)
                .unwrap_or(0)
                .saturating_sub(items.len())
        }
        _ => 0,
    };
    Ok(ListResult {
        items,
        revision,
        remaining,
    })
}

/// A page of the log after a revision.
pub(super) struct LogPage {
    /// The changes under the prefix, oldest first.
    pub events: VecDeque<WatchEvent>,
    /// The revision the page reaches: every change up to it under the prefix is in `events`.
    pub reached: Revision,
}

/// Changes under `prefix` after `after`, at most `limit` of them; `Compacted` when the history
/// after `after` is no longer whole.
pub(super) fn log_page(
    conn: &Connection,
    prefix: &str,
    after: Revision,
    limit: usize,
) -> Result<LogPage> {
    let tx = conn
        .unchecked_transaction()
        .map_err(db_error("begin a read"))?;
    let (current, compacted) = read_meta(&tx)?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    let (range, range_values) = key_range(prefix, None, "l.key");
    let mut values = vec![Value::Integer(after)];
    values.extend(range_values);
    let mut statement = tx
        .prepare(&format!(
            "SELECT l.revision, l.key, l.value, l.create_revision, l.prev_revision, l.deleted, \
             p.value, p.create_revision, p.deleted \
             FROM log AS l LEFT JOIN log AS p ON p.revision = l.prev_revision \
             WHERE l.revision > ?1 AND l.revision <= {current} AND {range} \
             ORDER BY l.revision LIMIT {limit}"
        ))
        .map_err(db_error("prepare a log read"))?;
    let mut rows = statement
        .query(rusqlite::params_from_iter(values.iter()))
        .map_err(db_error("read the log"))?;
    let mut events = VecDeque::new();
    while let Some(row) = rows.next().map_err(db_error("read a log row"))? {
        events.push_back(event(row).map_err(db_error("decode a log row"))??);
    }
    let reached = match events.back() {
        Some(last) if events.len() == limit => last.revision(),
        _ => current,
    };
    Ok(LogPage { events, reached })
}

/// The watch event of one log row joined with its key's previous row.
fn event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<WatchEvent>> {
    let revision: Revision = row.get(0)?;
    let key = match key_string(row.get(1)?) {
        Ok(key) => key,
        Err(e) => return Ok(Err(e)),
    };
    let value: Vec<u8> = row.get(2)?;
    let create_revision: Revision = row.get(3)?;
    let prev_revision: Revision = row.get(4)?;
    let deleted: bool = row.get(5)?;
    if deleted {
        return Ok(Ok(WatchEvent::Delete {
            prev: KeyValue {
                key,
                value,
                create_revision,
                mod_revision: prev_revision,
            },
            revision,
        }));
    }
    let prev_value: Option<Vec<u8>> = row.get(6)?;
    let prev_create: Option<Revision> = row.get(7)?;
    let prev_deleted: Option<bool> = row.get(8)?;
    let prev = match (prev_value, prev_create, prev_deleted) {
        (Some(value), Some(create_revision), Some(false)) if prev_revision > 0 => Some(KeyValue {
            key: key.clone(),
            value,
            create_revision,
            mod_revision: prev_revision,
        }),
        _ => None,
    };
    Ok(Ok(WatchEvent::Put {
        kv: KeyValue {
            key,
            value,
            create_revision,
            mod_revision: revision,
        },
        prev,
    }))
}

//! The file's layout and how connections to it are opened.
//!
//! One table, `log`, holds a row per revision (as k3s's kine does): the key, its value, the
//! revision that created it, the revision of the key's previous row and whether the row is a
//! deletion (which keeps the deleted value, for the watch event). Reads at a revision and
//! watches from one are then queries. `meta` holds the store's revision and compaction point,
//! which the log alone cannot give once compaction removed the rows that carried them.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::{Result, Revision, StoreError};

/// The layout this code reads and writes, kept in SQLite's `user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_revision ON log (key, revision);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
";

/// How long a connection waits for another one's lock (a checkpoint, the writer) before it
/// reports the file busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Wraps a SQLite error with what was being done.
pub(super) fn db_error(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Internal(format!("sqlite: {what}: {e}"))
}

/// Opens the writing connection, creating the file and its tables when new. Returns the
/// store's revision and compaction point.
pub(super) fn open_writer(path: &Path) -> Result<(Connection, Revision, Revision)> {
    let conn = Connection::open(path)
        .map_err(|e| StoreError::Internal(format!("sqlite: open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db_error("set the busy timeout"))?;
    // WAL lets readers run beside the one writer; synchronous=FULL makes SQLite fsync the WAL
    // at every commit, so a write acknowledged is on disk (NORMAL would only fsync at
    // checkpoints, losing the last commits to a power cut).
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(db_error("switch to WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Internal(format!(
            "sqlite: {} stays in journal mode {mode}, not WAL",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_error("set synchronous = FULL"))?;
    // Checkpoints are the checkpoint thread's job (see checkpoint.rs); this is a backstop.
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        super::checkpoint::WRITER_AUTOCHECKPOINT,
    )
    .map_err(db_error("set wal_autocheckpoint"))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(db_error("read the schema version"))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Internal(format!(
            "sqlite: {} has schema version {version}, newer than the {SCHEMA_VERSION} this \
             Capstan knows",
            path.display()
        )));
    }
    conn.execute_batch(SCHEMA)
        .map_err(db_error("create the tables"))?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(db_error("set the schema version"))?;
    let (revision, compacted) = read_meta(&conn)?;
    Ok((conn, revision, compacted))
}

/// Opens a connection for reads (the file exists: the writer made it).
pub(super) fn open_reader(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StoreError::Internal(format!("sqlite: open {} to read: {e}", path.display()))
    })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(db_error("set the busy timeout"))?;
    // A reader that wrote by mistake would bypass the writer's revision counter.
    conn.pragma_update(None, "query_only", true)
        .map_err(db_error("make a reader query-only"))?;
    Ok(conn)
}

/// The store's revision and compaction point, as the transaction `conn` is in sees them.
pub(super) fn read_meta(conn: &Connection) -> Result<(Revision, Revision)> {
    let get = |name: &str| -> Result<Revision> {
        conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |row| {
            row.get(0)
        })
        .optional()
        .map_err(db_error("read the store's revision"))?
        .ok_or_else(|| StoreError::Internal(format!("sqlite: meta row {name} is missing")))
    };
    Ok((get("revision")?, get("compacted")?))
}

/// The newest row of one key.
pub(super) struct LatestRow {
    pub revision: Revision,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub deleted: bool,
}

/// The newest row of `key`, a deletion included; `None` when it never existed (or compaction
/// removed its deletion).
pub(super) fn latest_row(conn: &Connection, key: &str) -> Result<Option<LatestRow>> {
    let mut statement = conn
        .prepare_cached(
            "SELECT revision, value, create_revision, deleted FROM log \
             WHERE key = ?1 ORDER BY revision DESC LIMIT 1",
        )
        .map_err(db_error("prepare the key lookup"))?;
    statement
        .query_row([key.as_bytes()], |row| {
            Ok(LatestRow {
                revision: row.get(0)?,
                value: row.get(1)?,
                create_revision: row.get(2)?,
                deleted: row.get(3)?,
            })
        })
        .optional()
        .map_err(db_error("look a key up"))
}

/// A key read back from the file (keys are stored as bytes so prefix ranges compare them as
/// etcd does, byte by byte).
pub(super) fn key_string(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes)
        .map_err(|e| StoreError::Internal(format!("sqlite: a stored key is not UTF-8: {e}")))
}

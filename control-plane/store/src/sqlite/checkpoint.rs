//! WAL checkpoints on a thread of their own. SQLite's automatic checkpoint runs inside the
//! commit that crosses its threshold, so that one commit (and every write batched behind it)
//! waits for the database file to be written and fsynced: the slowest creates were those. Here
//! a separate connection copies the WAL back in small, frequent passive checkpoints, which do
//! not hold the writer up; the writer's own automatic checkpoint stays as a backstop with a
//! high threshold, should this thread fall behind.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::schema::db_error;
use crate::Result;

/// How often the WAL is copied back.
const INTERVAL: Duration = Duration::from_millis(200);

/// WAL pages at which the writer checkpoints itself (SQLite's default is 1000).
pub(super) const WRITER_AUTOCHECKPOINT: i64 = 16_384;

/// The checkpoint thread; dropping it stops the thread.
pub(super) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the file at `path` (the writer made it).
    pub(super) fn start(path: PathBuf) -> Result<Checkpointer> {
        let conn = Connection::open(&path).map_err(db_error("open the checkpoint connection"))?;
        conn.busy_timeout(Duration::from_millis(100))
            .map_err(db_error("set the checkpoint connection's busy timeout"))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("capstan-store-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
                    let result: rusqlite::Result<(i64, i64, i64)> =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                        });
                    if let Err(error) = result {
                        tracing::debug!(%error, "WAL checkpoint failed; retrying");
                    }
                }
            })
            .map_err(|e| {
                crate::StoreError::Internal(format!("start the store's checkpoint thread: {e}"))
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

use futures::StreamExt;
use std::time::Duration;

use super::SqliteStore;
use crate::{ListOptions, Store, StoreError, WatchEvent};

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("capstan-store-")
        .tempdir()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_store_passes_the_conformance_checks() {
    let dirs = std::sync::Mutex::new(Vec::new());
    crate::conformance::check_all(|| {
        let dir = temp_dir();
        let store = SqliteStore::open_in(dir.path()).unwrap();
        dirs.lock().unwrap().push(dir);
        async move { store }
    })
    .await;
}

#[test]
fn the_file_is_in_wal_mode_and_fsyncs_every_commit() {
    let dir = temp_dir();
    let (conn, _, _) = super::schema::open_writer(&dir.path().join("s.sqlite")).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let synchronous: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(synchronous, 2, "synchronous = FULL");
}

async fn next_events(watch: &mut crate::WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("a watch event within 5 s")
            .expect("the watch goes on")
            .unwrap();
        seen.push(event);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_keeps_keys_revision_and_history() {
    let dir = temp_dir();
    let (history, listed_at_3) = {
        let store = SqliteStore::open_in(dir.path()).unwrap();
        store.create("/k/a", b"a1".to_vec()).await.unwrap();
        store.create("/k/b", b"b1".to_vec()).await.unwrap();
        store.update("/k/a", b"a2".to_vec(), 1).await.unwrap();
        store.delete("/k/b", None).await.unwrap();
        store.create("/k/c", b"c1".to_vec()).await.unwrap();
        let mut watch = store.watch("/k/", 0).await.unwrap();
        let history = next_events(&mut watch, 5).await;
        let at_3 = ListOptions {
            revision: Some(3),
            ..Default::default()
        };
        (history, store.list("/k/", at_3).await.unwrap())
    };
    let store = SqliteStore::open_in(dir.path()).unwrap();
    assert_eq!(store.revision().await.unwrap(), 5);
    assert_eq!(store.get("/k/a").await.unwrap().unwrap().value, b"a2");
    assert_eq!(store.get("/k/b").await.unwrap(), None);
    let at_3 = ListOptions {
        revision: Some(3),
        ..Default::default()
    };
    assert_eq!(store.list("/k/", at_3).await.unwrap(), listed_at_3);
    let mut watch = store.watch("/k/", 0).await.unwrap();
    assert_eq!(
        next_events(&mut watch, 5).await,
        history,
        "a watch from before the reopen replays the same history"
    );
    let next = store.create("/k/d", b"d1".to_vec()).await.unwrap();
    assert_eq!(next.mod_revision, 6, "the revision counter goes on");
    assert_eq!(next_events(&mut watch, 1).await[0].revision(), 6);

    store.compact(4).await.unwrap();
    drop(watch);
    drop(store);
    let store = SqliteStore::open_in(dir.path()).unwrap();
    assert_eq!(store.compacted(), 4, "the compaction point persists");
    assert!(matches!(
        store.watch("/k/", 3).await.err(),
        Some(StoreError::Compacted { compacted: 4, .. })
    ));
    let mut watch = store.watch("/k/", 4).await.unwrap();
    let after = next_events(&mut watch, 2).await;
    assert_eq!(
        (after[0].revision(), after[1].revision()),
        (5, 6),
        "history above the compaction point survives it and the reopen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_distinct_consecutive_revisions() {
    let dir = temp_dir();
    let store = std::sync::Arc::new(SqliteStore::open_in(dir.path()).unwrap());
    let mut watch = store.watch("/c/", 0).await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for n in 0..25 {
                let kv = store
                    .create(&format!("/c/{writer}/{n}"), vec![writer as u8; 100])
                    .await
                    .unwrap();
                revisions.push(kv.mod_revision);
            }
            revisions
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (1..=200).collect::<Vec<_>>());
    let seen: Vec<i64> = next_events(&mut watch, 200)
        .await
        .iter()
        .map(WatchEvent::revision)
        .collect();
    assert_eq!(
        seen,
        (1..=200).collect::<Vec<_>>(),
        "the watch sees each once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_falls_behind_catches_up_from_the_table() {
    let dir = temp_dir();
    let store = SqliteStore::open_in(dir.path()).unwrap();
    let mut watch = store.watch("/l/", 0).await.unwrap();
    let total = super::WATCH_BUFFER as i64 * 2 + 10;
    for n in 0..total {
        store.create(&format!("/l/{n}"), vec![1]).await.unwrap();
    }
    let seen: Vec<i64> = next_events(&mut watch, total as usize)
        .await
        .iter()
        .map(WatchEvent::revision)
        .collect();
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_in_steps_keeps_what_each_key_held_and_forgets_the_rest() {
    let dir = temp_dir();
    let store = SqliteStore::open_in(dir.path()).unwrap();
    // An object compacted once and changed after, one never changed, and many writes, so the
    // compaction spans several steps.
    let old = store.create("/k/old", b"0".to_vec()).await.unwrap();
    store.create("/k/still", b"s".to_vec()).await.unwrap();
    store.compact(old.mod_revision + 1).await.unwrap();
    let mut last = store
        .update("/k/old", b"1".to_vec(), old.mod_revision)
        .await
        .unwrap();
    for i in 0..1200 {
        store
            .create(&format!("/many/{i}"), vec![b'x'; 16])
            .await
            .unwrap();
        if i == 600 {
            last = store
                .update("/k/old", b"2".to_vec(), last.mod_revision)
                .await
                .unwrap();
            store.delete("/many/0", None).await.unwrap();
        }
    }
    let target = store.revision().await.unwrap() - 10;
    store.compact(target).await.unwrap();
    assert_eq!(store.compacted(), target);
    let at = |revision| ListOptions {
        revision: Some(revision),
        ..ListOptions::default()
    };
    let keys = store.list("/k/", at(target)).await.unwrap();
    let values: Vec<&[u8]> = keys.items.iter().map(|kv| kv.value.as_slice()).collect();
    assert_eq!(values, [b"2".as_slice(), b"s"]);
    let many = store.list("/many/", at(target)).await.unwrap();
    assert_eq!(many.items.len(), 1200 - 10 - 1, "the deleted one is gone");
    assert!(matches!(
        store.list("/k/", at(target - 1)).await,
        Err(StoreError::Compacted { .. })
    ));
    let rows: i64 = store
        .read(|conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM log WHERE key = ?1",
                [b"/k/old".as_slice()],
                |r| r.get(0),
            )
            .map_err(super::schema::db_error("count"))
        })
        .await
        .unwrap();
    assert_eq!(
        rows, 1,
        "only the row in force at the compaction point is kept"
    );
    assert!(matches!(
        store.compact(target).await,
        Err(StoreError::Compacted { .. })
    ));
}

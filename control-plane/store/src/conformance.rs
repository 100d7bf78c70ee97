//! Checks every [`Store`] implementation must pass, shared by their tests: each function takes
//! a fresh, empty store and panics naming the rule that was broken.

use futures::StreamExt;
use std::time::Duration;

use crate::{ListOptions, Store, StoreError, WatchEvent};

/// Runs every check, each on a store of its own from `fresh`.
pub async fn check_all<S: Store, F: std::future::Future<Output = S>>(fresh: impl Fn() -> F) {
    writes_take_revisions_and_preconditions(&fresh().await).await;
    lists_page_and_read_old_revisions(&fresh().await).await;
    watches_replay_then_follow(&fresh().await).await;
    compaction_forgets_history(&fresh().await).await;
}

/// Create, update and delete each take the next revision; preconditions are enforced.
pub async fn writes_take_revisions_and_preconditions(store: &impl Store) {
    assert_eq!(
        store.revision().await.unwrap(),
        0,
        "an empty store is at revision 0"
    );
    let a = store.create("/r/a", b"1".to_vec()).await.unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (1, 1));
    assert_eq!(
        store.create("/r/a", b"x".to_vec()).await.unwrap_err(),
        StoreError::AlreadyExists("/r/a".into())
    );
    let a2 = store.update("/r/a", b"2".to_vec(), 1).await.unwrap();
    assert_eq!((a2.create_revision, a2.mod_revision), (1, 2));
    match store.update("/r/a", b"3".to_vec(), 1).await.unwrap_err() {
        StoreError::Conflict { current, .. } => {
            assert_eq!(
                current.as_deref(),
                Some(&a2),
                "a conflict carries the current value"
            )
        }
        other => panic!("a stale update must conflict, got {other:?}"),
    }
    assert!(matches!(
        store.update("/r/none", b"x".to_vec(), 1).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.get("/r/a").await.unwrap().unwrap().value, b"2");
    assert!(matches!(
        store.delete("/r/a", Some(1)).await,
        Err(StoreError::Conflict { .. })
    ));
    let (prev, revision) = store.delete("/r/a", Some(2)).await.unwrap();
    assert_eq!((prev.value.as_slice(), revision), (&b"2"[..], 3));
    assert_eq!(store.get("/r/a").await.unwrap(), None);
    assert!(matches!(
        store.delete("/r/a", None).await,
        Err(StoreError::NotFound(_))
    ));
    let again = store.create("/r/a", b"4".to_vec()).await.unwrap();
    assert_eq!(
        again.create_revision, 4,
        "a re-created key has a new create revision"
    );
    assert_eq!(store.revision().await.unwrap(), 4);
}

/// Lists are in key order under the prefix only, page with `start_after`/`limit`, and read
/// older revisions.
pub async fn lists_page_and_read_old_revisions(store: &impl Store) {
    for key in ["/p/c", "/p/a", "/p/b", "/q/a"] {
        store.create(key, key.as_bytes().to_vec()).await.unwrap();
    }
    let all = store.list("/p/", ListOptions::default()).await.unwrap();
    let keys: Vec<&str> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/p/a", "/p/b", "/p/c"]);
    assert_eq!((all.revision, all.remaining), (4, 0));

    let page = ListOptions {
        limit: Some(2),
        ..Default::default()
    };
    let first = store.list("/p/", page.clone()).await.unwrap();
    assert_eq!((first.items.len(), first.remaining), (2, 1));
    let second = store
        .list(
            "/p/",
            ListOptions {
                start_after: Some(first.items[1].key.clone()),
                revision: Some(first.revision),
                ..page
            },
        )
        .await
        .unwrap();
    assert_eq!(second.items[0].key, "/p/c");
    assert_eq!(second.remaining, 0);

    store.delete("/p/a", None).await.unwrap();
    let b = store.get("/p/b").await.unwrap().unwrap();
    store
        .update("/p/b", b"new".to_vec(), b.mod_revision)
        .await
        .unwrap();
    let old = store
        .list(
            "/p/",
            ListOptions {
                revision: Some(4),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let values: Vec<&[u8]> = old.items.iter().map(|kv| kv.value.as_slice()).collect();
    assert_eq!(
        values,
        [&b"/p/a"[..], b"/p/b", b"/p/c"],
        "the list at revision 4"
    );
    assert!(matches!(
        store
            .list(
                "/p/",
                ListOptions {
                    revision: Some(99),
                    ..Default::default()
                }
            )
            .await,
        Err(StoreError::FutureRevision { .. })
    ));
}

/// A watch replays the changes after its revision, then follows new ones, under its prefix only.
pub async fn watches_replay_then_follow(store: &impl Store) {
    store.create("/w/a", b"1".to_vec()).await.unwrap();
    store.create("/other/x", b"1".to_vec()).await.unwrap();
    store.update("/w/a", b"2".to_vec(), 1).await.unwrap();
    let mut watch = store.watch("/w/", 1).await.unwrap();
    store.delete("/w/a", None).await.unwrap();
    store.create("/w/b", b"3".to_vec()).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("a watch event within 5 s")
            .expect("the stream goes on")
            .unwrap();
        seen.push(event);
    }
    assert!(
        matches!(&seen[0], WatchEvent::Put { kv, prev: Some(prev) }
            if kv.mod_revision == 3 && kv.value == b"2" && prev.value == b"1"),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[1], WatchEvent::Delete { prev, revision: 4 } if prev.value == b"2"),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[2], WatchEvent::Put { kv, prev: None } if kv.key == "/w/b" && kv.mod_revision == 5),
        "{seen:?}"
    );
}

/// After compaction old revisions cannot be read or watched from; current values stay.
pub async fn compaction_forgets_history(store: &impl Store) {
    store.create("/c/a", b"1".to_vec()).await.unwrap();
    store.update("/c/a", b"2".to_vec(), 1).await.unwrap();
    store.create("/c/b", b"1".to_vec()).await.unwrap();
    store.compact(2).await.unwrap();
    assert!(matches!(
        store.watch("/c/", 1).await.err(),
        Some(StoreError::Compacted { compacted: 2, .. })
    ));
    let old = ListOptions {
        revision: Some(1),
        ..Default::default()
    };
    assert!(matches!(
        store.list("/c/", old).await,
        Err(StoreError::Compacted { .. })
    ));
    assert_eq!(store.get("/c/a").await.unwrap().unwrap().value, b"2");
    let mut watch = store.watch("/c/", 2).await.unwrap();
    let event = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        event.key(),
        "/c/b",
        "a watch from the compaction point still replays"
    );
}

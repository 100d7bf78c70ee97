//! Checks every [`Store`] implementation must pass, shared by their tests: each function takes
//! a fresh, empty store and panics naming the rule that was broken.
//!
//! Revisions are checked relative to the one the fresh store starts at: an embedded store
//! starts at 0, an etcd-backed one at whatever the etcd cluster is at (etcd counts its empty
//! state as revision 1, and other prefixes share the counter).

use futures::StreamExt;
use std::time::Duration;

use crate::{DEFAULT_MAX_VALUE_BYTES, ListOptions, Store, StoreError, WatchEvent};

/// Runs every check, each on a store of its own from `fresh`.
pub async fn check_all<S: Store, F: std::future::Future<Output = S>>(fresh: impl Fn() -> F) {
    writes_take_revisions_and_preconditions(&fresh().await).await;
    lists_page_and_read_old_revisions(&fresh().await).await;
    watches_replay_then_follow(&fresh().await).await;
    compaction_forgets_history(&fresh().await).await;
    values_up_to_the_limit(&fresh().await).await;
}

/// Create, update and delete each take the next revision; preconditions are enforced.
pub async fn writes_take_revisions_and_preconditions(store: &impl Store) {
    let base = store.revision().await.unwrap();
    let a = store.create("/r/a", b"1".to_vec()).await.unwrap();
    assert_eq!(
        (a.create_revision, a.mod_revision),
        (base + 1, base + 1),
        "the first write takes the next revision"
    );
    assert_eq!(
        store.create("/r/a", b"x".to_vec()).await.unwrap_err(),
        StoreError::AlreadyExists("/r/a".into())
    );
    let a2 = store.update("/r/a", b"2".to_vec(), base + 1).await.unwrap();
    assert_eq!((a2.create_revision, a2.mod_revision), (base + 1, base + 2));
    match store
        .update("/r/a", b"3".to_vec(), base + 1)
        .await
        .unwrap_err()
    {
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
        store.update("/r/none", b"x".to_vec(), base + 1).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.get("/r/a").await.unwrap().unwrap().value, b"2");
    assert!(matches!(
        store.delete("/r/a", Some(base + 1)).await,
        Err(StoreError::Conflict { .. })
    ));
    let (prev, revision) = store.delete("/r/a", Some(base + 2)).await.unwrap();
    assert_eq!((prev.value.as_slice(), revision), (&b"2"[..], base + 3));
    assert_eq!(store.get("/r/a").await.unwrap(), None);
    assert!(matches!(
        store.delete("/r/a", None).await,
        Err(StoreError::NotFound(_))
    ));
    let again = store.create("/r/a", b"4".to_vec()).await.unwrap();
    assert_eq!(
        again.create_revision,
        base + 4,
        "a re-created key has a new create revision"
    );
    assert_eq!(store.revision().await.unwrap(), base + 4);
}

/// Lists are in key order under the prefix only, page with `start_after`/`limit`, and read
/// older revisions.
pub async fn lists_page_and_read_old_revisions(store: &impl Store) {
    let base = store.revision().await.unwrap();
    for key in ["/p/c", "/p/a", "/p/b", "/q/a"] {
        store.create(key, key.as_bytes().to_vec()).await.unwrap();
    }
    let all = store.list("/p/", ListOptions::default()).await.unwrap();
    let keys: Vec<&str> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/p/a", "/p/b", "/p/c"]);
    assert_eq!((all.revision, all.remaining), (base + 4, 0));

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
                revision: Some(base + 4),
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
                    revision: Some(base + 99),
                    ..Default::default()
                }
            )
            .await,
        Err(StoreError::FutureRevision { .. })
    ));
}

/// A watch replays the changes after its revision, then follows new ones, under its prefix only.
pub async fn watches_replay_then_follow(store: &impl Store) {
    let base = store.revision().await.unwrap();
    store.create("/w/a", b"1".to_vec()).await.unwrap();
    store.create("/other/x", b"1".to_vec()).await.unwrap();
    store.update("/w/a", b"2".to_vec(), base + 1).await.unwrap();
    let mut watch = store.watch("/w/", base + 1).await.unwrap();
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
            if kv.mod_revision == base + 3 && kv.value == b"2" && prev.value == b"1"),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[1], WatchEvent::Delete { prev, revision } if *revision == base + 4 && prev.value == b"2"),
        "{seen:?}"
    );
    assert!(
        matches!(&seen[2], WatchEvent::Put { kv, prev: None } if kv.key == "/w/b" && kv.mod_revision == base + 5),
        "{seen:?}"
    );
}

/// After compaction old revisions cannot be read or watched from; current values stay.
pub async fn compaction_forgets_history(store: &impl Store) {
    let base = store.revision().await.unwrap();
    store.create("/c/a", b"1".to_vec()).await.unwrap();
    store.update("/c/a", b"2".to_vec(), base + 1).await.unwrap();
    store.create("/c/b", b"1".to_vec()).await.unwrap();
    store.compact(base + 2).await.unwrap();
    let compacted = store.watch("/c/", base + 1).await.err();
    assert!(
        matches!(compacted, Some(StoreError::Compacted { compacted, .. }) if compacted == base + 2),
        "a watch from before the compaction point: {compacted:?}"
    );
    let old = ListOptions {
        revision: Some(base + 1),
        ..Default::default()
    };
    assert!(matches!(
        store.list("/c/", old).await,
        Err(StoreError::Compacted { .. })
    ));
    assert_eq!(store.get("/c/a").await.unwrap().unwrap().value, b"2");
    let at_point = ListOptions {
        revision: Some(base + 2),
        ..Default::default()
    };
    let listed = store.list("/c/", at_point).await.unwrap();
    assert_eq!(
        listed.items.len(),
        1,
        "the compaction point itself stays readable"
    );
    assert_eq!(listed.items[0].value, b"2");
    let mut watch = store.watch("/c/", base + 2).await.unwrap();
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

/// Values up to [`DEFAULT_MAX_VALUE_BYTES`] are stored whole; larger ones are refused with
/// `TooLarge` before anything is written.
pub async fn values_up_to_the_limit(store: &impl Store) {
    let base = store.revision().await.unwrap();
    let largest: Vec<u8> = (0..DEFAULT_MAX_VALUE_BYTES)
        .map(|i| (i % 251) as u8)
        .collect();
    let kv = store.create("/v/largest", largest.clone()).await.unwrap();
    assert_eq!(kv.mod_revision, base + 1);
    let read = store.get("/v/largest").await.unwrap().unwrap();
    assert!(
        read.value == largest,
        "a value of exactly the limit reads back whole"
    );
    let mut over = largest;
    over.push(0);
    let refused = store.create("/v/over", over.clone()).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::TooLarge { size, limit, .. }
            if *size == DEFAULT_MAX_VALUE_BYTES + 1 && *limit == DEFAULT_MAX_VALUE_BYTES),
        "{refused}"
    );
    let refused = store
        .update("/v/largest", over, kv.mod_revision)
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::TooLarge { .. }), "{refused}");
    assert_eq!(
        store.revision().await.unwrap(),
        base + 1,
        "a refused value takes no revision"
    );
    assert_eq!(store.get("/v/over").await.unwrap(), None);
}

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{CompactionPolicy, Planner};
use crate::memory::MemoryStore;
use crate::{ListOptions, Store, StoreError};

fn policy() -> CompactionPolicy {
    CompactionPolicy {
        retention: Duration::from_secs(300),
        max_revisions: 100,
        interval: Duration::from_secs(30),
    }
}

#[test]
fn the_time_rule_compacts_to_what_was_latest_five_minutes_ago() {
    let start = Instant::now();
    let mut planner = Planner::new(policy());
    assert_eq!(planner.observe(start, 10), None);
    assert_eq!(planner.observe(start + Duration::from_secs(200), 40), None);
    assert_eq!(
        planner.observe(start + Duration::from_secs(300), 50),
        Some(10),
        "the revision seen 300 s ago"
    );
    planner.compacted(10);
    assert_eq!(planner.observe(start + Duration::from_secs(400), 60), None);
    assert_eq!(
        planner.observe(start + Duration::from_secs(500), 70),
        Some(40)
    );
}

#[test]
fn the_count_rule_wins_when_it_keeps_less() {
    let start = Instant::now();
    let mut planner = Planner::new(policy());
    assert_eq!(planner.observe(start, 10), None);
    assert_eq!(
        planner.observe(start + Duration::from_secs(60), 250),
        Some(150),
        "no more than 100 revisions kept, though none is 5 minutes old"
    );
}

#[tokio::test(start_paused = true)]
async fn the_compactor_bounds_a_stores_history() {
    let store = Arc::new(MemoryStore::new());
    let handle = super::spawn(store.clone(), policy());
    for n in 0..250 {
        store.create(&format!("/k/{n}"), vec![1]).await.unwrap();
    }
    // Paused time: the interval fires as the clock is advanced, no real waiting.
    tokio::time::sleep(Duration::from_secs(31)).await;
    let old = ListOptions {
        revision: Some(149),
        ..Default::default()
    };
    assert!(
        matches!(
            store.list("/k/", old).await,
            Err(StoreError::Compacted { compacted: 150, .. })
        ),
        "250 revisions with a 100 limit compact to 150"
    );
    assert_eq!(
        store
            .list("/k/", Default::default())
            .await
            .unwrap()
            .items
            .len(),
        250
    );
    handle.abort();
}

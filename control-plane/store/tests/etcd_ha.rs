//! The etcd store on a three-member cluster loses no acknowledged write and no watch event
//! when the leader is killed under a write load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use capstan_store::etcd::EtcdStore;
use capstan_store::{Store, StoreError};
use capstan_testkit::etcd::EtcdCluster;
use futures::StreamExt;
use tokio::sync::mpsc;

/// The member that leads, by asking each for its status.
async fn leader(cluster: &EtcdCluster) -> usize {
    let endpoints = cluster.endpoints();
    for _ in 0..50 {
        for (i, endpoint) in endpoints.iter().enumerate() {
            let Ok(mut client) = etcd_client::Client::connect([endpoint], None).await else {
                continue;
            };
            if let Ok(status) = client.status().await
                && status.header().map(|h| h.member_id()) == Some(status.leader())
            {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no member says it leads");
}

/// An acknowledged create, or one whose answer was lost and that a retry found applied.
struct Acked {
    key: String,
    revision: Option<i64>,
    at: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_write_or_watch_event() {
    let mut cluster = EtcdCluster::start_members(3).unwrap();
    let store = Arc::new(
        EtcdStore::connect(&cluster.endpoints(), "/registry")
            .await
            .unwrap(),
    );
    let start = store.revision().await.unwrap();
    let mut watch = store.watch("/ha/", start).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (acks, mut acked) = mpsc::unbounded_channel();
    let writer = {
        let store = store.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("/ha/{n:06}");
                let deadline = Instant::now() + Duration::from_secs(15);
                let mut retried = false;
                loop {
                    match store.create(&key, n.to_string().into_bytes()).await {
                        Ok(kv) => {
                            let revision = Some(kv.mod_revision);
                            let _ = acks.send(Acked {
                                key,
                                revision,
                                at: Instant::now(),
                            });
                            break;
                        }
                        // An earlier try was applied though its answer was lost.
                        Err(StoreError::AlreadyExists(_)) if retried => {
                            let _ = acks.send(Acked {
                                key,
                                revision: None,
                                at: Instant::now(),
                            });
                            break;
                        }
                        Err(StoreError::Unavailable(e)) if Instant::now() < deadline => {
                            tracing::debug!(%e, "retrying a create");
                            retried = true;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("create {key}: {e}"),
                    }
                }
                n += 1;
            }
        })
    };

    let mut all = Vec::new();
    while all.len() < 100 {
        all.push(acked.recv().await.unwrap());
    }
    let killed = leader(&cluster).await;
    let killed_at = Instant::now();
    cluster.kill(killed).unwrap();
    let before_kill = all.len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while all.len() < before_kill + 200 {
        let ack = tokio::time::timeout_at(deadline.into(), acked.recv())
            .await
            .expect("writes go on after the leader was killed")
            .unwrap();
        all.push(ack);
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    while let Ok(ack) = acked.try_recv() {
        all.push(ack);
    }
    let longest_pause = all
        .windows(2)
        .map(|pair| pair[1].at - pair[0].at)
        .max()
        .unwrap();
    eprintln!(
        "killed member {killed} (the leader) {:?} in; the longest pause between writes was \
         {longest_pause:?}",
        killed_at.elapsed()
    );
    assert!(
        longest_pause < Duration::from_secs(10),
        "writes stopped for {longest_pause:?}"
    );

    for ack in &all {
        let kv = store
            .get(&ack.key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged {} is lost", ack.key));
        if let Some(revision) = ack.revision {
            assert_eq!(kv.mod_revision, revision, "{}", ack.key);
        }
    }

    // The watch opened before the kill goes on: every revision since it started, once, in
    // order (nothing else writes to this etcd).
    let last = store.revision().await.unwrap();
    let mut seen = Vec::new();
    while seen.last().copied().unwrap_or(start) < last {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the watch resumes within 10 s")
            .expect("the watch goes on")
            .unwrap();
        seen.push(event.revision());
    }
    assert_eq!(seen, (start + 1..=last).collect::<Vec<_>>());
    assert_eq!(seen.len(), all.len(), "one event per create");
}

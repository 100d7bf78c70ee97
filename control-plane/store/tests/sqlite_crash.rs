//! Every write the embedded store acknowledged survives a SIGKILL of its process, and nothing
//! half-applied is left. The child is this test binary run again with an environment variable.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_store::sqlite::SqliteStore;
use capstan_store::{ListOptions, Store, WatchEvent};
use futures::StreamExt;

const CHILD_ENV: &str = "CAPSTAN_STORE_CRASH_DIR";
const WRITERS: usize = 4;

/// The content of a key's value: long and derived from the key, so a torn write shows.
fn value_of(key: &str) -> Vec<u8> {
    key.bytes().cycle().take(4096 + key.len() * 7).collect()
}

/// The child: writers that each create keys and bump a counter, printing every acknowledged
/// write, until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child_writes_until_killed() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Arc::new(SqliteStore::open_in(std::path::Path::new(&dir)).unwrap());
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let counter = format!("/counter/{writer}");
            let mut last = store.create(&counter, b"0".to_vec()).await.unwrap();
            println!("ACK counter {counter} {} 0", last.mod_revision);
            for n in 1.. {
                let key = format!("/keys/{writer}/{n}");
                let kv = store.create(&key, value_of(&key)).await.unwrap();
                println!("ACK create {key} {}", kv.mod_revision);
                last = store
                    .update(&counter, n.to_string().into_bytes(), last.mod_revision)
                    .await
                    .unwrap();
                println!("ACK counter {counter} {} {n}", last.mod_revision);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Kills the child process when dropped, also when the test fails.
struct Killer(std::process::Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("capstan-store-crash-")
        .tempdir()
        .unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_writes_until_killed", "--nocapture"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Killer(child);
    let stdout = child.0.stdout.take().unwrap();
    // Acknowledged creates (key → revision) and the highest acknowledged counter values.
    let mut created: BTreeMap<String, i64> = BTreeMap::new();
    let mut counters: BTreeMap<String, u64> = BTreeMap::new();
    let mut max_acked = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lines = BufReader::new(stdout).lines();
    while created.len() < 600 {
        assert!(Instant::now() < deadline, "the child wrote too slowly");
        let line = lines.next().expect("the child runs until killed").unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["ACK", "create", key, revision] => {
                let revision: i64 = revision.parse().unwrap();
                created.insert(key.to_string(), revision);
                max_acked = max_acked.max(revision);
            }
            ["ACK", "counter", key, revision, n] => {
                max_acked = max_acked.max(revision.parse().unwrap());
                let n: u64 = n.parse().unwrap();
                let highest = counters.entry(key.to_string()).or_insert(n);
                *highest = (*highest).max(n);
            }
            _ => {}
        }
    }
    // SIGKILL in the middle of the load: the writers are still going.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // Acks printed before the kill but not yet read count too.
    for line in lines.map_while(|l| l.ok()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let ["ACK", "create", key, revision] = fields.as_slice() {
            created.insert(key.to_string(), revision.parse().unwrap());
        }
    }

    let store = SqliteStore::open_in(dir.path()).unwrap();
    let revision = store.revision().await.unwrap();
    assert!(
        revision >= max_acked,
        "the store is at {revision}, below the acknowledged {max_acked}"
    );
    for (key, acked) in &created {
        let kv = store
            .get(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged {key} (revision {acked}) is lost"));
        assert_eq!(kv.mod_revision, *acked, "{key}");
        assert!(kv.value == value_of(key), "{key} holds a torn value");
    }
    for (key, n) in &counters {
        let kv = store.get(key).await.unwrap().unwrap();
        let value: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
        assert!(
            value == *n || value == n + 1,
            "{key} holds {value}, acknowledged {n} (at most one write in flight)"
        );
    }
    // Nothing half-applied: every key present is whole, and the history is every revision
    // from 1 to the store's, once each.
    let all = store.list("/keys/", ListOptions::default()).await.unwrap();
    for kv in &all.items {
        assert!(
            kv.value == value_of(&kv.key),
            "{} holds a torn value",
            kv.key
        );
    }
    let mut watch = store.watch("", 0).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < revision as usize {
        let event: WatchEvent = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("the history replays")
            .unwrap()
            .unwrap();
        seen.push(event.revision());
    }
    assert_eq!(seen, (1..=revision).collect::<Vec<_>>());
    // The store goes on from where it was.
    let next = store.create("/after", b"x".to_vec()).await.unwrap();
    assert_eq!(next.mod_revision, revision + 1);
}

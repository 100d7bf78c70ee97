//! `capstan control-plane` under write load when things die: a kill -9 of the server on its
//! embedded store loses no acknowledged write and leaves none half-applied; two servers over a
//! three-member etcd cluster keep serving (and a watch on the survivor sees every event) when
//! one server and one etcd member are killed.

mod common;
#[path = "durability/plane.rs"]
mod plane;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_testkit::etcd::EtcdCluster;
use common::free_port;
use plane::{Client, Plane, share_credentials};
use serde_json::{Value, json};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

/// The data of version `v` of object `name`: big enough that a torn write would show.
fn content(name: &str, v: u32) -> Value {
    json!({"v": v.to_string(), "blob": format!("{name}/{v}/").repeat(64)})
}

/// What one writer tried and what it was told.
#[derive(Default)]
struct Record {
    /// Per object, the versions sent (in order).
    attempted: BTreeMap<String, Vec<u32>>,
    /// Per object, the last version acknowledged (2xx) and its resourceVersion.
    acked: BTreeMap<String, (u32, i64)>,
    /// Every acknowledged resourceVersion, in the order the writer got them.
    revisions: Vec<i64>,
}

fn rv_of(object: &Value) -> i64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

/// Creates `w{writer}-{i}` objects and updates each once, until `stop` or the server stops
/// answering.
fn write_load(client: Client, writer: usize, stop: Arc<AtomicBool>, record: Arc<Mutex<Record>>) {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let name = format!("w{writer}-{i}");
        i += 1;
        let steps: [(&str, String, Value); 2] = [
            (
                "POST",
                CMS.to_string(),
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": content(&name, 1)}),
            ),
            (
                "PATCH",
                format!("{CMS}/{name}"),
                json!({"data": content(&name, 2)}),
            ),
        ];
        for (v, (method, path, body)) in (1u32..).zip(steps) {
            record
                .lock()
                .unwrap()
                .attempted
                .entry(name.clone())
                .or_default()
                .push(v);
            match client.json(method, &path, Some(&body)) {
                Ok((code, object)) if (200..300).contains(&code) => {
                    let mut record = record.lock().unwrap();
                    record.acked.insert(name.clone(), (v, rv_of(&object)));
                    record.revisions.push(rv_of(&object));
                }
                Ok((code, object)) => panic!("{method} {path}: {code} {object}"),
                // The server is gone: this write may or may not have happened.
                Err(_) => return,
            }
        }
    }
}

fn items(list: &Value) -> HashMap<String, (Value, i64)> {
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    let name = item["metadata"]["name"].as_str().unwrap_or("").to_string();
                    (name, (item["data"].clone(), rv_of(item)))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kill_9_under_concurrent_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Plane::start(&dir.path().join("data"), free_port(), &[]);
    let client = server.client();
    let stop = Arc::new(AtomicBool::new(false));
    let records: Vec<Arc<Mutex<Record>>> = (0..6).map(|_| Arc::default()).collect();
    let writers: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(w, record)| {
            let (client, stop, record) = (client.clone(), stop.clone(), record.clone());
            std::thread::spawn(move || write_load(client, w, stop, record))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    server.kill();
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.join().unwrap();
    }
    server.spawn();

    let (code, list) = client.json("GET", CMS, None).unwrap();
    assert_eq!(code, 200, "every stored object decodes: {list}");
    let stored = items(&list);
    let list_rv = rv_of(&list);
    let mut acked_writes = 0;
    let mut max_acked = 0;
    for record in &records {
        let record = record.lock().unwrap();
        acked_writes += record.revisions.len();
        assert!(
            record.revisions.windows(2).all(|w| w[0] < w[1]),
            "one writer's resourceVersions increase: {:?}",
            record.revisions
        );
        max_acked = max_acked.max(record.revisions.last().copied().unwrap_or(0));
        for (name, versions) in &record.attempted {
            let found = stored.get(name);
            match record.acked.get(name) {
                Some(&(v, rv)) => {
                    let (data, stored_rv) =
                        found.unwrap_or_else(|| panic!("acknowledged {name} is lost"));
                    // Acknowledged, or the one write after it that was in flight at the kill.
                    let later_in_flight = versions.last() == Some(&(v + 1));
                    if *data == content(name, v) {
                        assert_eq!(*stored_rv, rv, "{name} kept its resourceVersion");
                    } else {
                        assert!(
                            later_in_flight && *data == content(name, v + 1),
                            "{name} holds neither its acknowledged content nor the write in flight: {data}"
                        );
                        assert!(*stored_rv > rv);
                    }
                }
                None => {
                    if let Some((data, _)) = found {
                        assert!(
                            versions.iter().any(|&v| *data == content(name, v)),
                            "{name} was half-applied: {data}"
                        );
                    }
                }
            }
        }
    }
    assert!(acked_writes > 50, "the load ran ({acked_writes} writes)");
    assert!(list_rv >= max_acked, "{list_rv} < {max_acked}");
    // The root CA publisher's ConfigMap is the controller manager's, not a writer's.
    for name in stored.keys().filter(|name| *name != "kube-root-ca.crt") {
        assert!(
            records
                .iter()
                .any(|r| r.lock().unwrap().attempted.contains_key(name)),
            "{name} was never written"
        );
    }
    let after = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after"}});
    let (code, created) = client.json("POST", CMS, Some(&after)).unwrap();
    assert_eq!(code, 201);
    assert!(
        rv_of(&created) > max_acked,
        "revisions go on from where they were"
    );
    eprintln!(
        "{acked_writes} acknowledged writes, {} objects after the restart",
        stored.len()
    );
}

/// Creates `h{writer}-{i}` objects one after another through `client` (which fails over
/// between the servers), retrying each until it is acknowledged: 201, or 409 when an attempt
/// whose answer was lost had made it. Returns the names acknowledged with 201 and their
/// resourceVersions, and those found made by a lost attempt.
fn create_load(
    client: Client,
    writer: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<(String, i64)>, Vec<String>) {
    let mut acked = Vec::new();
    let mut lost_answers = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let name = format!("h{writer}-{i}");
        i += 1;
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": content(&name, 1)});
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client.json("POST", CMS, Some(&body)) {
                Ok((201, created)) => {
                    acked.push((name.clone(), rv_of(&created)));
                    break;
                }
                // Names are unique: only an attempt of this loop (or one the client retried on
                // the other server) can have made it.
                Ok((409, _)) => {
                    lost_answers.push(name.clone());
                    break;
                }
                Ok((code, answer)) => panic!("create {name}: {code} {answer}"),
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "no server took {name} for 30 s: {error}"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
    (acked, lost_answers)
}

#[test]
fn two_api_servers_on_three_etcd_members_lose_nothing_when_one_of_each_is_killed() {
    let mut cluster = EtcdCluster::start_members(3).unwrap();
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().unwrap();
    let first_dir = dir.path().join("first");
    let mut first = Plane::start(&first_dir, free_port(), &["--etcd-servers", &endpoints]);
    let second_dir = dir.path().join("second");
    share_credentials(&first_dir, &second_dir);
    let second = Plane::start(&second_dir, free_port(), &["--etcd-servers", &endpoints]);
    let client = Client::new(&first_dir.join("pki"), vec![first.url(), second.url()]);
    let survivor = Client::new(&second_dir.join("pki"), vec![second.url()]);

    // The survivor's watch, from before the load, read on a thread of its own.
    let (_, before) = survivor.json("GET", CMS, None).unwrap();
    let start = rv_of(&before);
    let seen: Arc<Mutex<Vec<(String, String, i64)>>> = Arc::default();
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let (survivor, seen, watching, url) = (
            survivor.clone(),
            seen.clone(),
            watching.clone(),
            second.url(),
        );
        std::thread::spawn(move || {
            let mut from = start;
            while watching.load(Ordering::SeqCst) {
                let mut watch =
                    survivor.watch(&url, &format!("{CMS}?watch=true&resourceVersion={from}"));
                // A watch that ends is resumed from the last resourceVersion, as clients do.
                while let Some(event) = watch.next() {
                    let kind = event["type"].as_str().unwrap_or("").to_string();
                    assert_ne!(kind, "ERROR", "the survivor's watch failed: {event}");
                    let name = event["object"]["metadata"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    from = rv_of(&event["object"]);
                    seen.lock().unwrap().push((kind, name.clone(), from));
                    if name == "end" {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, stop) = (client.clone(), stop.clone());
            std::thread::spawn(move || create_load(client, w, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    first.kill();
    std::thread::sleep(Duration::from_secs(1));
    cluster.kill(0).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    let mut lost_answers = Vec::new();
    for writer in writers {
        let (a, l) = writer.join().unwrap();
        acked.extend(a);
        lost_answers.extend(l);
    }
    let end = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "end"}});
    watching.store(false, Ordering::SeqCst);
    assert_eq!(survivor.json("POST", CMS, Some(&end)).unwrap().0, 201);

    let (code, list) = survivor.json("GET", CMS, None).unwrap();
    assert_eq!(code, 200, "{list}");
    let stored = items(&list);
    for (name, rv) in &acked {
        let (data, stored_rv) = stored
            .get(name)
            .unwrap_or_else(|| panic!("acknowledged {name} is lost"));
        assert_eq!(
            (data, stored_rv),
            (&content(name, 1), rv),
            "{name} as acknowledged"
        );
    }
    for name in &lost_answers {
        assert_eq!(
            stored.get(name).map(|(d, _)| d),
            Some(&content(name, 1)),
            "{name}"
        );
    }
    assert!(acked.len() > 30, "the load ran ({} writes)", acked.len());

    let deadline = Instant::now() + Duration::from_secs(20);
    while !watcher.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the watch did not reach the end: {} events",
            seen.lock().unwrap().len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    watcher.join().unwrap();
    let seen = seen.lock().unwrap();
    let revisions: Vec<i64> = seen.iter().map(|(_, _, rv)| *rv).collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "in order, once each: {revisions:?}"
    );
    // Every object made after the watch started was seen, at the revision it was made at.
    let mut watched: Vec<(String, i64)> = seen
        .iter()
        .filter(|(kind, _, _)| kind == "ADDED")
        .map(|(_, name, rv)| (name.clone(), *rv))
        .collect();
    let mut made: Vec<(String, i64)> = stored
        .iter()
        .filter(|(_, (_, rv))| *rv > start)
        .map(|(name, (_, rv))| (name.clone(), *rv))
        .collect();
    watched.sort();
    made.sort();
    assert_eq!(watched.len(), seen.len(), "only creations: {seen:?}");
    assert_eq!(watched, made, "the survivor's watch has no gap");
    eprintln!(
        "{} acknowledged creates ({} more whose answer was lost), {} events watched",
        acked.len(),
        lost_answers.len(),
        seen.len()
    );
}

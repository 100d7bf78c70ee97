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
    for name in stored.keys() {
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

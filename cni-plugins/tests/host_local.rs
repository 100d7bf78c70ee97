//! host-local run as separate processes: concurrency, dual stack, requests, release, GC.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

fn conf(data_dir: &Path, ranges: Value) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "hl",
        "type": "bridge",
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir,
            "ranges": ranges,
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.0.2.0/24", "gw": "10.70.0.254"}],
        }
    })
}

fn host_local() -> std::path::PathBuf {
    ours("host-local")
}

/// Any existing path: host-local never enters the namespace.
const NETNS: &str = "/proc/self/ns/net";

fn spawn(command: &str, id: &str, conf: &Value) -> std::process::Child {
    let mut child = Command::new(host_local())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", NETNS)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", our_bin_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn host-local");
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, conf.to_string().as_bytes()).expect("write");
    child
}

#[test]
fn two_hundred_concurrent_adds_get_distinct_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let conf = conf(dir.path(), json!([[{"subnet": "10.70.0.0/24"}]]));
    // Start all 200 before waiting on any, so they really contend for the lock.
    let children: Vec<_> = (0..200)
        .map(|i| spawn("ADD", &format!("ctr-{i}"), &conf))
        .collect();
    let mut seen = HashSet::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ADD {i}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: Value = serde_json::from_str(&text).unwrap();
        let ip = first_ip(&result);
        assert!(seen.insert(ip), "{ip} handed out twice");
        assert_ne!(ip.to_string(), "10.70.0.1", "the gateway was handed out");
    }
    assert_eq!(seen.len(), 200);
    let store = dir.path().join("hl");
    let files = allocation_files(&store);
    assert_eq!(files.len(), 200);
    for ip in &seen {
        let owner = std::fs::read_to_string(store.join(ip.to_string())).unwrap();
        assert!(
            owner.starts_with("ctr-") && owner.ends_with("\r\neth0"),
            "{owner:?}"
        );
    }

    let children: Vec<_> = (0..200)
        .map(|i| spawn("DEL", &format!("ctr-{i}"), &conf))
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(allocation_files(&store).is_empty());
}

#[test]
fn dual_stack_routes_and_repeated_add() {
    let dir = tempfile::tempdir().unwrap();
    let conf = conf(
        dir.path(),
        json!([
            [{"subnet": "10.70.0.0/16", "rangeStart": "10.70.3.10", "rangeEnd": "10.70.3.20", "gateway": "10.70.0.1"}],
            [{"subnet": "fd70::/64", "gateway": "fd70::1"}]
        ]),
    );
    let call = Call::new("ADD", "dual", Some(Path::new(NETNS)), "eth0");
    let res = run(&host_local(), None, &call, &conf).ok();
    assert_eq!(res["ips"][0]["address"], "10.70.3.10/16");
    assert_eq!(res["ips"][0]["gateway"], "10.70.0.1");
    assert_eq!(res["ips"][1]["address"], "fd70::2/64");
    assert_eq!(res["ips"][1]["gateway"], "fd70::1");
    assert_eq!(res["routes"][1]["gw"], "10.70.0.254");
    assert!(res.get("interfaces").is_none());
    // ADD again for the same attachment returns what it holds, taking nothing more.
    let again = run(&host_local(), None, &call, &conf).ok();
    assert_eq!(again["ips"], res["ips"]);
    assert_eq!(allocation_files(&dir.path().join("hl")).len(), 2);
    // CHECK knows the allocation; for another container it does not.
    let check = call.clone().command("CHECK");
    run(&host_local(), None, &check, &with_prev(&conf, &res)).ok();
    let other = Call::new("CHECK", "other", Some(Path::new(NETNS)), "eth0");
    assert!(
        run(&host_local(), None, &other, &with_prev(&conf, &res))
            .err(999)
            .contains("other")
    );
    run(&host_local(), None, &call.command("DEL"), &conf).ok();
    assert!(allocation_files(&dir.path().join("hl")).is_empty());
}

#[test]
fn release_is_per_interface_and_requests_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let conf = conf(dir.path(), json!([[{"subnet": "10.71.0.0/28"}]]));
    let eth0 = Call::new("ADD", "multi", Some(Path::new(NETNS)), "eth0");
    let mut eth1 = Call::new("ADD", "multi", Some(Path::new(NETNS)), "eth1");
    eth1.args = Some("IgnoreUnknown=1;IP=10.71.0.9".into());
    run(&host_local(), None, &eth0, &conf).ok();
    let res1 = run(&host_local(), None, &eth1, &conf).ok();
    assert_eq!(res1["ips"][0]["address"], "10.71.0.9/28");
    // The same address again is refused; one outside every range is a config error.
    let mut dup = Call::new("ADD", "dup", Some(Path::new(NETNS)), "eth0");
    dup.args = Some("IP=10.71.0.9".into());
    assert!(
        run(&host_local(), None, &dup, &conf)
            .err(999)
            .contains("10.71.0.9")
    );
    let mut runtime_conf = conf.clone();
    runtime_conf["runtimeConfig"] = json!({"ips": ["10.99.0.1/24"]});
    let plain = Call::new("ADD", "dup", Some(Path::new(NETNS)), "eth0");
    assert!(
        run(&host_local(), None, &plain, &runtime_conf)
            .err(4)
            .contains("10.99.0.1")
    );

    run(&host_local(), None, &eth1.clone().command("DEL"), &conf).ok();
    let files = allocation_files(&dir.path().join("hl"));
    assert_eq!(
        files.len(),
        1,
        "eth0's address must survive eth1's DEL: {files:?}"
    );
    assert_ne!(files[0], "10.71.0.9");
    run(&host_local(), None, &eth0.command("DEL"), &conf).ok();
    assert!(allocation_files(&dir.path().join("hl")).is_empty());
}

#[test]
fn exhaustion_status_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    // A /29 has .1-.6 usable; .1 is the gateway: five addresses.
    let conf = conf(dir.path(), json!([[{"subnet": "10.72.0.0/29"}]]));
    for i in 0..5 {
        let call = Call::new("ADD", &format!("x{i}"), Some(Path::new(NETNS)), "eth0");
        run(&host_local(), None, &call, &conf).ok();
    }
    let full = Call::new("ADD", "x5", Some(Path::new(NETNS)), "eth0");
    assert!(
        run(&host_local(), None, &full, &conf)
            .err(11)
            .contains("no free address")
    );
    let status = Call::new("STATUS", "", None, "");
    run(&host_local(), None, &status, &conf).err(50);

    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] = json!([
        {"containerID": "x1", "ifname": "eth0"},
        {"containerID": "x3", "ifname": "eth0"}
    ]);
    run(
        &host_local(),
        None,
        &Call::new("GC", "", None, ""),
        &gc_conf,
    )
    .ok();
    let owners: HashSet<String> = allocation_files(&dir.path().join("hl"))
        .iter()
        .map(|f| std::fs::read_to_string(dir.path().join("hl").join(f)).unwrap())
        .collect();
    assert_eq!(
        owners,
        HashSet::from(["x1\r\neth0".to_string(), "x3\r\neth0".to_string()])
    );
    run(&host_local(), None, &status, &conf).ok();
    // GC and STATUS need spec 1.1.
    let mut old = gc_conf.clone();
    old["cniVersion"] = "1.0.0".into();
    run(&host_local(), None, &Call::new("GC", "", None, ""), &old).err(1);
}

#[test]
fn bad_ipam_configs_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let call = Call::new("ADD", "bad", Some(Path::new(NETNS)), "eth0");
    let cases = [
        (
            json!([[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.1"}]]),
            "ipam.ranges[0][0].rangeEnd",
        ),
        (
            json!([[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.3"}]]),
            "rangeStart",
        ),
        (
            json!([[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.128/25"}]]),
            "overlaps",
        ),
        (json!([[]]), "ipam.ranges[0]"),
        (json!("nope"), "ipam.ranges"),
        (json!([[{"rangeStart": "10.0.0.1"}]]), "ipam.ranges[0][0]"),
    ];
    for (ranges, needle) in cases {
        let msg = run(
            &host_local(),
            None,
            &call,
            &conf(dir.path(), ranges.clone()),
        )
        .err(4);
        assert!(msg.contains(needle), "{ranges}: {msg}");
    }
    let mut bad_name = conf(dir.path(), json!([[{"subnet": "10.0.0.0/24"}]]));
    bad_name["name"] = "../escape".into();
    assert!(
        run(&host_local(), None, &call, &bad_name)
            .err(4)
            .contains("name")
    );
}

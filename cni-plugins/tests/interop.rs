//! Interop with Debian's reference plugins (containernetworking-plugins): each of our plugins
//! paired with the other implementation, on one bridge and one address store, and CHECK/DEL
//! by the implementation that did not do the ADD.

mod common;

use std::path::{Path, PathBuf};

use capstan_testkit::netns::NetNs;
use capstan_testkit::require_root;
use common::*;
use serde_json::{Value, json};

fn reference(name: &str) -> PathBuf {
    Path::new(REFERENCE_DIR).join(name)
}

struct Pod {
    ns: NetNs,
    id: String,
    result: Value,
}

#[test]
fn reference_and_ours_share_a_bridge_and_a_store() {
    require_root();
    require_reference();
    let host = NetNs::new("cih").unwrap();
    let ipam = tempfile::tempdir().unwrap();
    // The reference plugins speak up to 1.0.0.
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": "interop",
        "type": "bridge",
        "bridge": "ibr0",
        "isDefaultGateway": true,
        "ipam": {"type": "host-local", "dataDir": ipam.path(), "ranges": [[{"subnet": "10.66.0.0/24"}]]}
    });
    let ours_dir = our_bin_dir().display().to_string();
    // (bridge executable, CNI_PATH where its host-local is found)
    let pairs: [(PathBuf, &str); 4] = [
        (ours("bridge"), ours_dir.as_str()),
        (reference("bridge"), REFERENCE_DIR),
        (reference("bridge"), ours_dir.as_str()),
        (ours("bridge"), REFERENCE_DIR),
    ];
    let mut pods = Vec::new();
    for (i, (bridge, path)) in pairs.iter().enumerate() {
        let ns = NetNs::new(&format!("ci{i}")).unwrap();
        let id = format!("interop-{i}");
        let call = Call::new("ADD", &id, Some(ns.path()), "eth0").cni_path(path);
        let result = run(bridge, Some(&host), &call, &conf).ok();
        pods.push(Pod { ns, id, result });
    }
    let ips: Vec<_> = pods.iter().map(|p| first_ip(&p.result)).collect();
    let distinct: std::collections::HashSet<_> = ips.iter().collect();
    assert_eq!(
        distinct.len(),
        4,
        "one store, four distinct addresses: {ips:?}"
    );

    // Every pod reaches every other pod, whoever attached it.
    let _servers: Vec<Server> = pods
        .iter()
        .enumerate()
        .map(|(i, pod)| serve(&pod.ns, 7200, ["p0", "p1", "p2", "p3"][i]))
        .collect();
    for (i, from) in pods.iter().enumerate() {
        for (j, ip) in ips.iter().enumerate() {
            if i != j {
                let got =
                    fetch(&from.ns, *ip, 7200).unwrap_or_else(|e| panic!("pod {i} -> {ip}: {e}"));
                assert_eq!(got, format!("p{j}"));
            }
        }
    }

    // CHECK by the other implementation accepts the result of the first one.
    for (i, pod) in pods.iter().enumerate() {
        let (bridge, path) = &pairs[(i + 1) % 2];
        let call = Call::new("CHECK", &pod.id, Some(pod.ns.path()), "eth0").cni_path(path);
        run(bridge, Some(&host), &call, &with_prev(&conf, &pod.result)).ok();
    }
    // DEL by the other implementation cleans up what the first one made.
    for (i, pod) in pods.iter().enumerate() {
        let (bridge, path) = &pairs[(i + 1) % 2];
        let call = Call::new("DEL", &pod.id, Some(pod.ns.path()), "eth0").cni_path(path);
        run(bridge, Some(&host), &call, &conf).ok();
        let links = ip_json(&pod.ns, &["link", "show"]);
        assert!(
            links
                .as_array()
                .unwrap()
                .iter()
                .all(|l| l["ifname"] != "eth0"),
            "{links}"
        );
    }
    assert!(allocation_files(&ipam.path().join("interop")).is_empty());
    let veths = ip_json(&host, &["link", "show", "type", "veth"]);
    assert!(veths.as_array().unwrap().is_empty(), "{veths}");
}

#[test]
fn reference_loopback_and_ours_agree() {
    require_root();
    require_reference();
    let conf = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
    let a = NetNs::new("cil").unwrap();
    let call = Call::new("ADD", "lo-a", Some(a.path()), "lo");
    let theirs = run(&reference("loopback"), None, &call, &conf).ok();
    // Our CHECK accepts their ADD, their CHECK accepts ours.
    run(
        &ours("loopback"),
        None,
        &call.clone().command("CHECK"),
        &with_prev(&conf, &theirs),
    )
    .ok();
    run(&ours("loopback"), None, &call.clone().command("DEL"), &conf).ok();
    let mine = run(&ours("loopback"), None, &call, &conf).ok();
    assert_eq!(
        mine["interfaces"][0]["name"],
        theirs["interfaces"][0]["name"]
    );
    run(
        &reference("loopback"),
        None,
        &call.clone().command("CHECK"),
        &with_prev(&conf, &mine),
    )
    .ok();
    run(&reference("loopback"), None, &call.command("DEL"), &conf).ok();
}

//! The loopback plugin against a namespace the test creates.

mod common;

use capstan_testkit::netns::NetNs;
use capstan_testkit::require_root;
use common::*;
use serde_json::json;

fn lo_is_up(ns: &NetNs) -> bool {
    let link = &ip_json(ns, &["link", "show", "lo"])[0];
    link["flags"].as_array().unwrap().iter().any(|f| f == "UP")
}

#[test]
fn loopback_add_check_del() {
    require_root();
    let pod = NetNs::new("clo").unwrap();
    let conf = json!({"cniVersion": "1.1.0", "name": "lo", "type": "loopback"});
    let add = Call::new("ADD", "lo-pod", Some(pod.path()), "lo");
    let check = add.clone().command("CHECK");
    assert!(!lo_is_up(&pod));
    // CHECK before ADD sees `lo` down.
    assert!(
        run(&ours("loopback"), None, &check, &conf)
            .err(999)
            .contains("down")
    );

    let res = run(&ours("loopback"), None, &add, &conf).ok();
    assert!(lo_is_up(&pod));
    assert_eq!(res["interfaces"][0]["name"], "lo");
    assert_eq!(
        res["interfaces"][0]["sandbox"],
        pod.path().display().to_string()
    );
    let addrs: Vec<&str> = res["ips"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["address"].as_str())
        .collect();
    assert!(addrs.contains(&"127.0.0.1/8"), "{addrs:?}");
    run(&ours("loopback"), None, &check, &with_prev(&conf, &res)).ok();
    // Loopback traffic works inside the namespace.
    let _server1 = serve(&pod, 7100, "lo-ok");
    assert_eq!(
        fetch(&pod, "127.0.0.1".parse().unwrap(), 7100).unwrap(),
        "lo-ok"
    );

    let del = add.clone().command("DEL");
    run(&ours("loopback"), None, &del, &conf).ok();
    assert!(!lo_is_up(&pod));
    let path = pod.path().to_path_buf();
    pod.remove().unwrap();
    // DEL for a namespace that is gone succeeds; ADD reports the container as unknown.
    let gone = Call::new("DEL", "lo-pod", Some(&path), "lo");
    run(&ours("loopback"), None, &gone, &conf).ok();
    run(&ours("loopback"), None, &gone.command("ADD"), &conf).err(3);
}

#[test]
fn loopback_chained_after_bridge_passes_the_previous_result_through() {
    require_root();
    let pod = NetNs::new("clc").unwrap();
    let conf = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
    let previous = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": pod.path().display().to_string()}],
        "ips": [{"interface": 0, "address": "10.1.2.3/24", "gateway": "10.1.2.1"}]
    });
    let add = Call::new("ADD", "lo-chain", Some(pod.path()), "eth0");
    let res = run(&ours("loopback"), None, &add, &with_prev(&conf, &previous)).ok();
    assert!(lo_is_up(&pod));
    assert_eq!(res["ips"][0]["address"], "10.1.2.3/24", "{res}");
    assert_eq!(res["interfaces"][0]["name"], "eth0");
}

//! The bridge plugin, run as a runtime runs it, against namespaces the tests create: a
//! "host" namespace holding the bridge and one namespace per pod.

mod common;

use capstan_testkit::netns::NetNs;
use capstan_testkit::require_root;
use common::*;
use serde_json::{Value, json};

fn conf(data_dir: &std::path::Path, extra: Value) -> Value {
    let mut conf = json!({
        "cniVersion": "1.1.0",
        "name": "capnet",
        "type": "bridge",
        "bridge": "cbr0",
        "isDefaultGateway": true,
        "ipam": {
            "type": "host-local",
            "dataDir": data_dir,
            "ranges": [[{"subnet": "10.88.0.0/24"}], [{"subnet": "fd88::/64"}]],
        }
    });
    if let (Some(base), Some(more)) = (conf.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            base.insert(k.clone(), v.clone());
        }
    }
    conf
}

fn bridge() -> std::path::PathBuf {
    ours("bridge")
}

#[test]
fn add_check_del_connects_pods() {
    require_root();
    let host = NetNs::new("cbh").unwrap();
    let pod_a = NetNs::new("cba").unwrap();
    let pod_b = NetNs::new("cbb").unwrap();
    let ipam = tempfile::tempdir().unwrap();
    let conf = conf(ipam.path(), json!({"mtu": 1400, "hairpinMode": true}));
    let call_a = Call::new("ADD", "pod-a", Some(pod_a.path()), "eth0");
    let call_b = Call::new("ADD", "pod-b", Some(pod_b.path()), "eth0");

    let res_a = run(&bridge(), Some(&host), &call_a, &conf).ok();
    let res_b = run(&bridge(), Some(&host), &call_b, &conf).ok();
    assert_eq!(res_a["cniVersion"], "1.1.0");
    let ifaces = res_a["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 3);
    assert_eq!(ifaces[0]["name"], "cbr0");
    assert_eq!(ifaces[2]["name"], "eth0");
    assert_eq!(ifaces[2]["sandbox"], pod_a.path().display().to_string());
    assert_eq!(ifaces[2]["mtu"], 1400);
    assert_eq!(res_a["ips"][0]["interface"], 2);
    assert_eq!(res_a["ips"][0]["gateway"], "10.88.0.1");
    assert_eq!(res_a["ips"][1]["address"], "fd88::2/64");

    // The container side: named eth0, MTU, address and a default route via the gateway.
    let link = &ip_json(&pod_a, &["link", "show", "eth0"])[0];
    assert_eq!(link["mtu"], 1400);
    assert_eq!(link["address"], ifaces[2]["mac"]);
    let routes = ip_json(&pod_a, &["route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "10.88.0.1");
    // The host side: in the bridge, hairpin on, the gateway on the bridge.
    let host_veth = ifaces[1]["name"].as_str().unwrap();
    let detail = &ip_json(&host, &["-d", "link", "show", host_veth])[0];
    assert_eq!(detail["master"], "cbr0");
    assert_eq!(detail["linkinfo"]["info_slave_data"]["hairpin"], true);
    let br_addrs = ip_json(&host, &["addr", "show", "cbr0"]);
    let locals: Vec<&str> = br_addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["local"].as_str())
        .collect();
    assert!(
        locals.contains(&"10.88.0.1") && locals.contains(&"fd88::1"),
        "{locals:?}"
    );

    // Pods reach each other over IPv4 and IPv6, and the gateway answers.
    let _server1 = serve(&pod_b, 7001, "from-b");
    assert_eq!(fetch(&pod_a, first_ip(&res_b), 7001).unwrap(), "from-b");
    let b6 = res_b["ips"][1]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert_eq!(fetch(&pod_a, b6.parse().unwrap(), 7001).unwrap(), "from-b");
    let _server2 = serve(&host, 7002, "from-host");
    assert_eq!(
        fetch(&pod_a, "10.88.0.1".parse().unwrap(), 7002).unwrap(),
        "from-host"
    );

    // CHECK passes, then reports exactly what was broken.
    let check = call_a.clone().command("CHECK");
    assert!(
        run(&bridge(), Some(&host), &check, &with_prev(&conf, &res_a))
            .ok()
            .is_null()
    );
    let status = pod_a
        .command("ip")
        .args(["addr", "del", "10.88.0.2/24", "dev", "eth0"])
        .status()
        .unwrap();
    assert!(status.success());
    let msg = run(&bridge(), Some(&host), &check, &with_prev(&conf, &res_a)).err(999);
    assert!(msg.contains("10.88.0.2/24"), "{msg}");
    // CHECK without prevResult is a config error.
    run(&bridge(), Some(&host), &check, &conf).err(4);

    // DEL removes the container's interface and its addresses, and is idempotent.
    let del_a = call_a.clone().command("DEL");
    assert!(run(&bridge(), Some(&host), &del_a, &conf).ok().is_null());
    assert!(run(&bridge(), Some(&host), &del_a, &conf).ok().is_null());
    assert!(
        ip_json(&pod_a, &["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["ifname"] != "eth0")
    );
    assert!(
        ip_json(&host, &["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["ifname"] != host_veth)
    );
    let files = allocation_files(&ipam.path().join("capnet"));
    assert_eq!(
        files.len(),
        2,
        "pod-b still holds its two addresses: {files:?}"
    );

    // DEL after the namespace is gone, and with no CNI_NETNS at all, still succeeds.
    pod_b.remove().unwrap();
    let del_b = Call::new(
        "DEL",
        "pod-b",
        Some(std::path::Path::new("/run/netns/gone-cbb")),
        "eth0",
    );
    assert!(run(&bridge(), Some(&host), &del_b, &conf).ok().is_null());
    let mut no_ns = del_b.clone();
    no_ns.netns = None;
    assert!(run(&bridge(), Some(&host), &no_ns, &conf).ok().is_null());
    assert!(allocation_files(&ipam.path().join("capnet")).is_empty());
}

/// True when the kernel can filter VLANs on a bridge (some minimal kernels cannot).
fn kernel_has_vlan_filtering(ns: &NetNs) -> bool {
    let ok = ns
        .command("ip")
        .args([
            "link",
            "add",
            "vlanprobe",
            "type",
            "bridge",
            "vlan_filtering",
            "1",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let _ = ns.command("ip").args(["link", "del", "vlanprobe"]).status();
    }
    ok
}

#[test]
fn vlan_promisc_and_legacy_versions() {
    require_root();
    let host = NetNs::new("cbv").unwrap();
    let pod = NetNs::new("cbvp").unwrap();
    let ipam = tempfile::tempdir().unwrap();
    let mut conf = conf(
        ipam.path(),
        json!({"vlan": 100, "promiscMode": true, "isDefaultGateway": false}),
    );
    conf["cniVersion"] = "0.4.0".into();
    let call = Call::new("ADD", "vlan-pod", Some(pod.path()), "net1");
    if !kernel_has_vlan_filtering(&host) {
        // Then `vlan` must be refused clearly, and nothing may be left behind.
        let msg = run(&bridge(), Some(&host), &call, &conf).err(2);
        assert!(
            msg.contains("vlan") && msg.contains("CONFIG_BRIDGE_VLAN_FILTERING"),
            "{msg}"
        );
        assert!(allocation_files(&ipam.path().join("capnet")).is_empty());
        conf.as_object_mut().unwrap().remove("vlan");
    }
    let with_vlan = conf.get("vlan").is_some();
    let res = run(&bridge(), Some(&host), &call, &conf).ok();
    assert_eq!(res["cniVersion"], "0.4.0");
    assert_eq!(res["ips"][0]["version"], "4");
    assert!(
        res["interfaces"][2].get("mtu").is_none(),
        "0.4.0 results have no mtu"
    );
    let host_veth = res["interfaces"][1]["name"].as_str().unwrap().to_string();
    let br = &ip_json(&host, &["-d", "link", "show", "cbr0"])[0];
    assert!(br["promiscuity"].as_u64().unwrap_or(0) > 0, "{br}");
    if with_vlan {
        let text = bridge_json(&host, &["vlan", "show", "dev", &host_veth]).to_string();
        assert!(text.contains("\"vlan\":100"), "{text}");
        assert!(
            text.contains("PVID") && text.contains("Egress Untagged"),
            "{text}"
        );
        assert_eq!(br["linkinfo"]["info_data"]["vlan_filtering"], 1);
    }
    assert!(
        ip_json(&pod, &["route", "show", "default"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    run(&bridge(), Some(&host), &call.clone().command("DEL"), &conf).ok();
    assert!(allocation_files(&ipam.path().join("capnet")).is_empty());
}

#[test]
fn add_del_cycles_leave_nothing_behind() {
    require_root();
    let host = NetNs::new("cbc").unwrap();
    let pod = NetNs::new("cbcp").unwrap();
    let ipam = tempfile::tempdir().unwrap();
    let conf = conf(ipam.path(), json!({}));
    let pod_before = snapshot(&pod);
    let cycle = |i: usize| {
        let add = Call::new("ADD", &format!("cycle-{i}"), Some(pod.path()), "eth0");
        run(&bridge(), Some(&host), &add, &conf).ok();
        run(&bridge(), Some(&host), &add.command("DEL"), &conf).ok();
    };
    // The first cycle creates the shared bridge and its gateway addresses, which stay.
    cycle(0);
    let host_after_first = snapshot(&host);
    for i in 1..6 {
        cycle(i);
    }
    assert_eq!(snapshot(&host), host_after_first);
    assert_eq!(snapshot(&pod), pod_before);
    assert!(allocation_files(&ipam.path().join("capnet")).is_empty());
}

#[test]
fn bad_configs_and_environment_are_refused() {
    require_root();
    let host = NetNs::new("cbe").unwrap();
    let pod = NetNs::new("cbep").unwrap();
    let ipam = tempfile::tempdir().unwrap();
    let good = conf(ipam.path(), json!({}));
    let add = Call::new("ADD", "bad-pod", Some(pod.path()), "eth0");
    let run_conf = |c: &Value| run(&bridge(), Some(&host), &add, c);

    let msg = run_conf(&conf(ipam.path(), json!({"ipMasq": true}))).err(2);
    assert!(msg.contains("ipMasq"), "{msg}");
    let msg = run_conf(&conf(ipam.path(), json!({"vlan": 5000}))).err(4);
    assert!(msg.contains("vlan"), "{msg}");
    let msg = run_conf(&conf(ipam.path(), json!({"mtu": 10}))).err(4);
    assert!(msg.contains("mtu"), "{msg}");
    let msg = run_conf(&conf(ipam.path(), json!({"mtu": "big"}))).err(4);
    assert!(msg.contains("mtu"), "{msg}");
    let msg = run_conf(&conf(
        ipam.path(),
        json!({"bridge": "a-name-that-is-too-long"}),
    ))
    .err(4);
    assert!(msg.contains("bridge"), "{msg}");
    let mut no_ipam = good.clone();
    no_ipam.as_object_mut().unwrap().remove("ipam");
    assert!(run_conf(&no_ipam).err(4).contains("ipam"));
    let mut missing_ipam = good.clone();
    missing_ipam["ipam"]["type"] = "no-such-ipam".into();
    assert!(run_conf(&missing_ipam).err(4).contains("no-such-ipam"));
    let mut bad_range = good.clone();
    bad_range["ipam"]["ranges"][0][0]["subnet"] = "10.88.0.0/40".into();
    assert!(
        run_conf(&bad_range)
            .err(4)
            .contains("ipam.ranges[0][0].subnet")
    );
    let mut old = good.clone();
    old["cniVersion"] = "0.2.0".into();
    run_conf(&old).err(1);
    let out = run_command(
        {
            let mut c = host.command(bridge());
            c.env("CNI_COMMAND", "ADD");
            c
        },
        b"{not json",
    );
    out.err(6);

    // A link of another kind squatting on the bridge name.
    let st = host
        .command("ip")
        .args([
            "link", "add", "squat0", "type", "veth", "peer", "name", "squat1",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let msg = run_conf(&conf(ipam.path(), json!({"bridge": "squat0"}))).err(4);
    assert!(
        msg.contains("squat0") && msg.contains("not a bridge"),
        "{msg}"
    );

    // Environment problems are code 7 and name the variable; a missing netns is code 3.
    for var in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_PATH"] {
        let mut cmd = host.command(bridge());
        cmd.env_clear()
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", "x")
            .env("CNI_NETNS", pod.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", our_bin_dir())
            .env_remove(var);
        let msg = run_command(cmd, good.to_string().as_bytes()).err(7);
        assert!(msg.contains(var), "{msg}");
    }
    let mut no_cmd = host.command(bridge());
    no_cmd.env_clear();
    assert!(
        run_command(no_cmd, good.to_string().as_bytes())
            .err(7)
            .contains("CNI_COMMAND")
    );
    let gone = Call::new(
        "ADD",
        "x",
        Some(std::path::Path::new("/run/netns/does-not-exist")),
        "eth0",
    );
    run(&bridge(), Some(&host), &gone, &good).err(3);
    // The interface name is taken in the container.
    let st = pod
        .command("ip")
        .args([
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(run_conf(&good).err(4).contains("eth0"));
    // None of the failures leaked an address or a veth.
    assert!(allocation_files(&ipam.path().join("capnet")).is_empty());
    let links = ip_json(&host, &["link", "show", "type", "veth"]);
    let names: Vec<&str> = links
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("squat")), "{names:?}");
}

#[test]
fn version_status_and_gc() {
    require_root();
    let host = NetNs::new("cbg").unwrap();
    let pod = NetNs::new("cbgp").unwrap();
    let ipam = tempfile::tempdir().unwrap();
    let conf = conf(ipam.path(), json!({}));

    let mut cmd = host.command(bridge());
    cmd.env_clear().env("CNI_COMMAND", "VERSION");
    let v = run_command(cmd, br#"{"cniVersion":"1.1.0"}"#).ok();
    let versions: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        versions.contains(&"1.0.0") && versions.contains(&"1.1.0"),
        "{v}"
    );

    let status = Call::new("STATUS", "", None, "");
    assert!(run(&bridge(), Some(&host), &status, &conf).ok().is_null());

    let live = Call::new("ADD", "live", Some(pod.path()), "eth0");
    run(&bridge(), Some(&host), &live, &conf).ok();
    // An allocation whose container the runtime forgot (its ADD ran, DEL never did).
    let stale = Call::new("ADD", "stale", Some(pod.path()), "eth9");
    run(&ours("host-local"), None, &stale, &conf).ok();
    assert_eq!(allocation_files(&ipam.path().join("capnet")).len(), 4);

    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": "live", "ifname": "eth0"}]);
    let gc = Call::new("GC", "", None, "");
    assert!(run(&bridge(), Some(&host), &gc, &gc_conf).ok().is_null());
    let left = allocation_files(&ipam.path().join("capnet"));
    assert_eq!(left.len(), 2, "{left:?}");
    for file in left {
        let owner = std::fs::read_to_string(ipam.path().join("capnet").join(file)).unwrap();
        assert!(owner.starts_with("live"), "{owner}");
    }
    // GC needs the list of valid attachments.
    run(&bridge(), Some(&host), &gc, &conf).err(4);
    run(&bridge(), Some(&host), &live.command("DEL"), &conf).ok();
}

#[test]
fn two_hundred_concurrent_bridge_adds() {
    require_root();
    let host = NetNs::new("cbx").unwrap();
    let ipam = tempfile::tempdir().unwrap();
    let mut conf = conf(ipam.path(), json!({}));
    conf["ipam"]["ranges"] = json!([[{"subnet": "10.89.0.0/24"}]]);
    let pods: Vec<NetNs> = (0..200).map(|_| NetNs::new("cbxp").unwrap()).collect();
    let spawn = |command: &str, i: usize, pod: &NetNs| {
        let mut cmd = host.command(bridge());
        Call::new(command, &format!("many-{i}"), Some(pod.path()), "eth0").apply_to(&mut cmd);
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut stdin, conf.to_string().as_bytes()).unwrap();
        child
    };
    // All processes start before any is waited for: they race to create the bridge too.
    let children: Vec<_> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| spawn("ADD", i, p))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let result: Value = serde_json::from_str(&text).unwrap();
        assert!(
            seen.insert(first_ip(&result)),
            "duplicate address in {text}"
        );
    }
    assert_eq!(seen.len(), 200);
    let ports = ip_json(&host, &["link", "show", "master", "cbr0"]);
    assert_eq!(ports.as_array().unwrap().len(), 200);

    let children: Vec<_> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| spawn("DEL", i, p))
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(allocation_files(&ipam.path().join("capnet")).is_empty());
    assert!(
        ip_json(&host, &["link", "show", "type", "veth"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    let bridges = ip_json(&host, &["link", "show", "type", "bridge"]);
    assert_eq!(
        bridges.as_array().unwrap().len(),
        1,
        "one bridge despite the race: {bridges}"
    );
}

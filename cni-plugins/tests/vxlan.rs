//! Two simulated hosts (network namespaces joined by a veth "wire"), each with its bridge,
//! VXLAN device and two pods: pods reach each other on one host and, once peers are
//! programmed, across hosts; removing a peer stops cross-host traffic, re-adding restores it.

mod common;

use std::path::Path;

use capstan_cni::peers::{Peer, vtep_mac};
use capstan_testkit::netns::NetNs;
use capstan_testkit::require_root;
use common::*;
use serde_json::{Value, json};

const DEVICE: &str = "vxlan.42";

fn conf(data_dir: &Path, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "overlay",
        "type": "vxlan",
        "vni": 42,
        "underlayInterface": "wire",
        "ipam": {"type": "host-local", "dataDir": data_dir, "ranges": [[{"subnet": subnet}]]}
    })
}

fn sh(ns: Option<&NetNs>, args: &[&str]) {
    let mut cmd = match ns {
        Some(ns) => ns.command("ip"),
        None => std::process::Command::new("ip"),
    };
    let status = cmd.args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?}");
}

fn set_peer(host: &NetNs, peer: Peer, remove: bool) {
    host.run(move || capstan_cni::peers::apply_blocking(DEVICE, &peer, remove))
        .expect("enter host netns")
        .unwrap_or_else(|e| panic!("peer update failed: {e}"));
}

struct Host {
    ns: NetNs,
    underlay: std::net::Ipv4Addr,
    subnet: &'static str,
    ipam: tempfile::TempDir,
    pods: Vec<(NetNs, String, Value)>,
}

impl Host {
    fn peer(&self) -> Peer {
        Peer {
            underlay: self.underlay,
            subnet: self.subnet.parse().unwrap(),
            mac: None,
        }
    }

    fn conf(&self) -> Value {
        conf(self.ipam.path(), self.subnet)
    }
}

#[test]
fn two_hosts_with_peers() {
    require_root();
    let mut hosts = Vec::new();
    for (i, (underlay, subnet)) in [
        ("198.18.0.1", "10.244.1.0/24"),
        ("198.18.0.2", "10.244.2.0/24"),
    ]
    .into_iter()
    .enumerate()
    {
        let ns = NetNs::new(&format!("cvh{i}")).unwrap();
        ns.loopback_up().unwrap();
        hosts.push(Host {
            ns,
            underlay: underlay.parse().unwrap(),
            subnet,
            ipam: tempfile::tempdir().unwrap(),
            pods: Vec::new(),
        });
    }
    // The wire: a veth pair with one end in each host, MTU 1500.
    sh(
        None,
        &[
            "link",
            "add",
            "wire",
            "netns",
            hosts[0].ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            "wire",
            "netns",
            hosts[1].ns.name(),
        ],
    );
    for h in &hosts {
        sh(
            Some(&h.ns),
            &["addr", "add", &format!("{}/24", h.underlay), "dev", "wire"],
        );
        sh(Some(&h.ns), &["link", "set", "wire", "up"]);
    }

    for (i, host) in hosts.iter_mut().enumerate() {
        for p in 0..2 {
            let ns = NetNs::new(&format!("cvp{i}{p}")).unwrap();
            let id = format!("h{i}-pod{p}");
            let call = Call::new("ADD", &id, Some(ns.path()), "eth0");
            let result = run(&ours("vxlan"), Some(&host.ns), &call, &host.conf()).ok();
            host.pods.push((ns, id, result));
        }
    }

    // The VXLAN device: VNI 42, our port, no learning, MTU = wire MTU - 50, VTEP MAC derived
    // from the underlay address; pods get the same MTU.
    for host in &hosts {
        let dev = &ip_json(&host.ns, &["-d", "link", "show", DEVICE])[0];
        assert_eq!(dev["mtu"], 1450);
        assert_eq!(dev["linkinfo"]["info_data"]["id"], 42);
        assert_eq!(dev["linkinfo"]["info_data"]["port"], 4789);
        assert_eq!(dev["linkinfo"]["info_data"]["learning"], false);
        let mac = vtep_mac(host.underlay)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(dev["address"], mac);
        for (pod, _, result) in &host.pods {
            assert_eq!(ip_json(pod, &["link", "show", "eth0"])[0]["mtu"], 1450);
            assert_eq!(result["interfaces"][2]["mtu"], 1450);
        }
    }
    let ip = |h: usize, p: usize| first_ip(&hosts[h].pods[p].2);
    let mut servers = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        for (p, (pod, _, _)) in host.pods.iter().enumerate() {
            servers.push(serve(
                pod,
                7300,
                ["h0p0", "h0p1", "h1p0", "h1p1"][h * 2 + p],
            ));
        }
    }
    // Same host works at once; across hosts needs peers.
    assert_eq!(fetch(&hosts[0].pods[0].0, ip(0, 1), 7300).unwrap(), "h0p1");
    assert_eq!(fetch(&hosts[1].pods[1].0, ip(1, 0), 7300).unwrap(), "h1p0");
    assert!(fetch(&hosts[0].pods[0].0, ip(1, 0), 7300).is_err());

    set_peer(&hosts[0].ns, hosts[1].peer(), false);
    set_peer(&hosts[1].ns, hosts[0].peer(), false);
    // Adding again is harmless.
    set_peer(&hosts[0].ns, hosts[1].peer(), false);
    assert_eq!(fetch(&hosts[0].pods[0].0, ip(1, 0), 7300).unwrap(), "h1p0");
    assert_eq!(fetch(&hosts[0].pods[1].0, ip(1, 1), 7300).unwrap(), "h1p1");
    assert_eq!(fetch(&hosts[1].pods[1].0, ip(0, 0), 7300).unwrap(), "h0p0");

    // One FDB, one neighbour and one route entry per remote host.
    let snap = snapshot(&hosts[0].ns);
    let per_peer: Vec<&String> = snap
        .iter()
        .filter(|l| l.contains("\"198.18.0.2\"") || l.contains("10.244.2.0"))
        .collect();
    assert_eq!(per_peer.len(), 3, "{per_peer:#?}");

    // Removing host 1 from host 0 stops the traffic; re-adding restores it.
    set_peer(&hosts[0].ns, hosts[1].peer(), true);
    set_peer(&hosts[0].ns, hosts[1].peer(), true);
    assert!(fetch(&hosts[0].pods[0].0, ip(1, 0), 7300).is_err());
    let snap = snapshot(&hosts[0].ns);
    assert!(
        !snap
            .iter()
            .any(|l| l.contains("\"198.18.0.2\"") || l.contains("10.244.2.0")),
        "{snap:#?}"
    );
    set_peer(&hosts[0].ns, hosts[1].peer(), false);
    assert_eq!(fetch(&hosts[0].pods[0].0, ip(1, 0), 7300).unwrap(), "h1p0");

    // CHECK passes; DEL removes each pod's interface and address.
    for host in &hosts {
        for (pod, id, result) in &host.pods {
            let check = Call::new("CHECK", id, Some(pod.path()), "eth0");
            run(
                &ours("vxlan"),
                Some(&host.ns),
                &check,
                &with_prev(&host.conf(), result),
            )
            .ok();
            run(
                &ours("vxlan"),
                Some(&host.ns),
                &check.command("DEL"),
                &host.conf(),
            )
            .ok();
        }
        assert!(allocation_files(&host.ipam.path().join("overlay")).is_empty());
        let veths: Vec<String> = ip_json(&host.ns, &["link", "show", "type", "veth"])
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_string))
            .collect();
        assert_eq!(veths, ["wire"]);
    }
    set_peer(&hosts[0].ns, hosts[1].peer(), true);
    set_peer(&hosts[1].ns, hosts[0].peer(), true);
    for host in &hosts {
        let snap = snapshot(&host.ns);
        assert!(!snap.iter().any(|l| l.starts_with("neigh")), "{snap:#?}");
        assert!(
            !snap
                .iter()
                .any(|l| l.contains("10.244.1.0/24\" ") && l.contains(DEVICE))
        );
    }
}

#[test]
fn bad_vxlan_configs() {
    require_root();
    let host = NetNs::new("cvb").unwrap();
    let pod = NetNs::new("cvbp").unwrap();
    let ipam = tempfile::tempdir().unwrap();
    let add = Call::new("ADD", "vx-bad", Some(pod.path()), "eth0");
    let base = conf(ipam.path(), "10.245.0.0/24");
    let with = |k: &str, v: Value| {
        let mut c = base.clone();
        c[k] = v;
        c
    };
    let cases = [
        (with("vni", json!(0)), 4, "vni"),
        (with("vni", json!(1 << 24)), 4, "vni"),
        (with("ipMasq", json!(true)), 2, "ipMasq"),
        (
            with("underlayInterface", json!("nope0")),
            4,
            "underlayInterface",
        ),
        (with("vxlanDevice", json!("a/b")), 4, "vxlanDevice"),
        (with("port", json!(0)), 4, "port"),
    ];
    for (conf, code, needle) in cases {
        let msg = run(&ours("vxlan"), Some(&host), &add, &conf).err(code);
        assert!(msg.contains(needle), "{conf}: {msg}");
    }
    let mut no_underlay = base.clone();
    no_underlay
        .as_object_mut()
        .unwrap()
        .remove("underlayInterface");
    let msg = run(&ours("vxlan"), Some(&host), &add, &no_underlay).err(4);
    assert!(
        msg.contains("underlayInterface") && msg.contains("localAddress"),
        "{msg}"
    );
    // Peers need the device to exist.
    let err = host
        .run(|| {
            capstan_cni::peers::apply_blocking(
                DEVICE,
                &Peer {
                    underlay: "198.18.0.9".parse().unwrap(),
                    subnet: "10.244.9.0/24".parse().unwrap(),
                    mac: None,
                },
                false,
            )
        })
        .unwrap()
        .unwrap_err();
    assert!(err.msg.contains(DEVICE), "{err}");
    assert!(allocation_files(&ipam.path().join("overlay")).is_empty());
}

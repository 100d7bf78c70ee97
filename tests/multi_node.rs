//! Three nodes, each a host of its own (a network namespace on a shared underlay bridge), join
//! one control plane with the printed join command. Their pod subnets come from the node IPAM
//! controller and the bundled vxlan plugin carries the overlay; each agent keeps its overlay
//! peers from the Node objects, so a pod on one node fetches pages from pods on the other two
//! (through `kubectl exec`, which the API server proxies to the node's kubelet endpoint). A
//! Node deleted stops being a peer.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use capstan_testkit::images::{ManifestFormat, catalog};
use capstan_testkit::netns::NetNs;
use capstan_testkit::registry::LocalRegistry;
use common::control_plane::ControlPlane;
use common::{RuntimeProcess, free_port};
use serde_json::Value;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
}

/// The underlay: a bridge in the test's namespace, removed on drop.
struct Underlay {
    bridge: String,
}

impl Drop for Underlay {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

fn wait_for<T>(what: &str, logs: &dyn Fn() -> String, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}\n{}", logs());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Relays TCP from `listen` to `to` for the test's lifetime: the registry listens on the test's
/// loopback, which the nodes' namespaces do not share.
fn relay(listen: &str, to: String) -> String {
    let listener = std::net::TcpListener::bind(listen).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(upstream) = std::net::TcpStream::connect(&to) else {
                continue;
            };
            let (mut client_r, mut upstream_w) =
                (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            let (mut upstream_r, mut client_w) = (upstream, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut client_r, &mut upstream_w);
                let _ = upstream_w.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut upstream_r, &mut client_w);
                let _ = client_w.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    address
}

fn node_config(dir: &Path, registry: &str, cni_bin: &Path) -> String {
    let conf_dir = dir.join("cni-conf");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let template = dir.join("template.conflist");
    std::fs::write(
        &template,
        format!(
            r#"{{"cniVersion": "1.1.0", "name": "overlay", "plugins": [
  {{"type": "vxlan", "vni": 77, "underlayInterface": "eth0",
   "ipam": {{"type": "host-local", "ranges": {{{{.PodCIDRRanges}}}}, "dataDir": "{}"}}}},
  {{"type": "loopback"}}]}}"#,
            dir.join("ipam").display()
        ),
    )
    .unwrap();
    format!(
        "[registry]\ninsecure = [\"{registry}\"]\n[cni]\nconf_dir = \"{}\"\nbin_dirs = [\"{}\"]\nconf_template = \"{}\"\n",
        conf_dir.display(),
        cni_bin.display(),
        template.display()
    )
}

#[test]
fn pods_on_three_nodes_reach_each_other_over_the_overlay() {
    capstan_testkit::require_root();
    let registry = LocalRegistry::start().unwrap();
    registry
        .client()
        .push_image("shell", "1", &catalog().unwrap().shell, ManifestFormat::Oci)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let suffix = format!("{:06x}", std::process::id() & 0xff_ffff);
    let claim = capstan_testkit::subnets::SubnetClaim::new("198.19");
    let octet = claim.octet();
    let underlay = Underlay {
        bridge: format!("mnu{suffix}"),
    };
    let gateway = format!("198.19.{octet}.1");
    ip(&["link", "add", &underlay.bridge, "type", "bridge"]);
    ip(&[
        "addr",
        "add",
        &format!("{gateway}/24"),
        "dev",
        &underlay.bridge,
    ]);
    ip(&["link", "set", &underlay.bridge, "up"]);

    let registry_host = relay(&format!("{gateway}:0"), registry.host());
    let plane = ControlPlane::start_on(
        dir.path(),
        &gateway,
        &[
            "--cluster-cidr",
            "10.246.0.0/16",
            "--node-cidr-mask-size",
            "24",
        ],
    );
    let out = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["token", "create", "--kubeconfig"])
        .arg(plane.kubeconfig())
        .args(["--ttl", "1h", "--print-join-command"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let join = text(&out.stdout);
    let join: Vec<&str> = join.split_whitespace().skip(2).collect();

    let cni_bin = dir.path().join("cni-bin");
    std::fs::create_dir_all(&cni_bin).unwrap();
    for plugin in ["vxlan", "host-local", "loopback"] {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_capstan"), cni_bin.join(plugin)).unwrap();
    }
    let mut hosts = Vec::new();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let ns = NetNs::new(&format!("mn{i}")).unwrap();
        ns.loopback_up().unwrap();
        let outside = format!("mnv{i}{suffix}");
        ip(&[
            "link",
            "add",
            &outside,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ]);
        ip(&["link", "set", &outside, "master", &underlay.bridge, "up"]);
        let address = format!("198.19.{octet}.{}", 10 + i);
        let inside = |args: &[&str]| {
            let out = ns.command("ip").args(args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
        };
        inside(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&["route", "add", "default", "via", &gateway]);
        let node_dir = dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&node_dir).unwrap();
        let config = node_config(&node_dir, &registry_host, &cni_bin);
        let name = format!("node{i}");
        let mut extra: Vec<&str> = join.clone();
        extra.extend(["--node-name", name.as_str()]);
        nodes.push(RuntimeProcess::start_node_in(
            ns.path(),
            &node_dir,
            &config,
            free_port(),
            &extra,
        ));
        hosts.push(ns);
    }
    let nodes = std::cell::RefCell::new(nodes);
    let logs = || {
        let mut all = format!("control plane:\n{}\n", plane.log());
        for (i, node) in nodes.borrow().iter().enumerate() {
            let log = node.log();
            let lines: Vec<&str> = log.lines().collect();
            let overlay: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.contains("overlay"))
                .collect();
            all += &format!(
                "node{i} overlay:\n{}\nnode{i}:\n{}\n",
                overlay.join("\n"),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        all
    };
    let kubectl = |args: &[&str]| plane.kubectl().output_blocking(args);

    // Every node registered with its address and a podCIDR of its own.
    let subnets = wait_for("three Ready nodes with pod CIDRs", &logs, || {
        let out = kubectl(&["get", "nodes", "-o", "json"]);
        let list: Value = serde_json::from_slice(&out.stdout).ok()?;
        let items = list["items"].as_array()?;
        let ready: Vec<(String, String)> = items
            .iter()
            .filter(|n| {
                n["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .filter_map(|n| {
                Some((
                    n["metadata"]["name"].as_str()?.to_string(),
                    n["spec"]["podCIDR"].as_str()?.to_string(),
                ))
            })
            .collect();
        (ready.len() == 3).then_some(ready)
    });
    let mut cidrs: Vec<&str> = subnets.iter().map(|(_, c)| c.as_str()).collect();
    cidrs.sort();
    cidrs.dedup();
    assert_eq!(cidrs.len(), 3, "{subnets:?}");

    // One web pod pinned to each node.
    let image = format!("{registry_host}/shell:1");
    for i in 0..3 {
        let pod = format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "web{i}"}},
  "spec": {{"nodeName": "node{i}", "terminationGracePeriodSeconds": 1, "containers": [{{"name": "web", "image": "{image}",
    "command": ["sh", "-c", "mkdir -p /www && echo page-of-node{i} > /www/index.html && exec httpd -f -p 8080 -h /www"]}}]}}}}"#
        );
        let out = plane
            .kubectl()
            .stdin(Some(&pod))
            .output_blocking(&["apply", "-f", "-"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let ips: Vec<String> = wait_for("three pods Running with IPs", &logs, || {
        (0..3)
            .map(|i| {
                let out = kubectl(&["get", "pod", &format!("web{i}"), "-o", "json"]);
                let pod: Value = serde_json::from_slice(&out.stdout).ok()?;
                (pod["status"]["phase"] == "Running")
                    .then(|| pod["status"]["podIP"].as_str().map(str::to_string))?
            })
            .collect()
    });

    // From each pod to the other two, across the overlay.
    let fetch = |from: usize, to: usize| -> Option<String> {
        let out = kubectl(&[
            "exec",
            &format!("web{from}"),
            "--",
            // busybox's own `wget -T` crashes (Debian's 1.35); `timeout` bounds it instead.
            "timeout",
            "5",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{}:8080/", ips[to]),
        ]);
        out.status.success().then(|| text(&out.stdout))
    };
    for from in 0..3 {
        for (to, ip) in ips.iter().enumerate() {
            if from == to {
                continue;
            }
            let page = wait_for(&format!("web{from} reaches web{to} at {ip}"), &logs, || {
                fetch(from, to)
            });
            assert_eq!(page.trim(), format!("page-of-node{to}"));
        }
    }

    // A deleted Node is no peer any more: node0's route to node2's subnet goes.
    let node2_cidr = subnets
        .iter()
        .find(|(n, _)| n == "node2")
        .map(|(_, c)| c.clone())
        .unwrap();
    let routes = |ns: &NetNs| text(&ns.command("ip").args(["route"]).output().unwrap().stdout);
    assert!(
        routes(&hosts[0]).contains(&node2_cidr),
        "{}",
        routes(&hosts[0])
    );
    let stopped = nodes.borrow_mut().pop();
    drop(stopped);
    let out = kubectl(&["delete", "node", "node2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for("node0 drops the peer of the deleted node2", &logs, || {
        (!routes(&hosts[0]).contains(&node2_cidr)).then_some(())
    });
    drop(nodes);
    for ns in hosts {
        let _ = ns.remove();
    }
}

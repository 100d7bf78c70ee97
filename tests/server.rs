//! `capstan server`, the real binary: one process is the whole cluster. Its node bootstraps a
//! client certificate from the server's own token, registers, gets its podCIDR from the node
//! IPAM controller and renders the CNI config from it; a Deployment applied with kubectl runs
//! its pods there, with IPs from that podCIDR, and the host fetches a page from each.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use capstan_testkit::images::{ManifestFormat, catalog};
use capstan_testkit::kubectl::{KUBECTL, Kubectl};
use capstan_testkit::registry::LocalRegistry;
use common::{CniSetup, RuntimeProcess, free_port, http_get_host};
use serde_json::Value;

fn kubectl(data_dir: &Path) -> Kubectl {
    Kubectl::kubeconfig(KUBECTL, &data_dir.join("admin.kubeconfig"))
}

/// `kubectl ARGS` as admin: success, stdout, stderr.
fn run(kubectl: Kubectl, args: &[&str]) -> (bool, String, String) {
    let out = kubectl.output_blocking(args);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Polls `kubectl get ARGS -o json` until `check` returns something.
fn wait_for<T>(
    data_dir: &Path,
    server: &RuntimeProcess,
    args: &[&str],
    what: &str,
    check: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let mut last = String::new();
    loop {
        if data_dir.join("admin.kubeconfig").exists() {
            let out = kubectl(data_dir).output_blocking(&all);
            last = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            if let Some(found) = serde_json::from_slice::<Value>(&out.stdout)
                .ok()
                .and_then(|v| check(&v))
            {
                return found;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {last}\nserver log:\n{}",
            tail(&server.log(), 120)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn a_deployment_runs_on_the_servers_own_node_in_its_pod_cidr() {
    capstan_testkit::require_root();
    let registry = LocalRegistry::start().unwrap();
    registry
        .client()
        .push_image("shell", "1", &catalog().unwrap().shell, ManifestFormat::Oci)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    std::fs::create_dir_all(&server_dir).unwrap();
    // The test's own bridge and IPAM directory, in a template the runtime renders once the
    // Node has its podCIDR; the cluster CIDR is the test's /24, all of it for the one node.
    let cni = CniSetup::new(&server_dir, None);
    std::fs::remove_dir_all(&cni.conf_dir).unwrap();
    let template = server_dir.join("template.conflist");
    std::fs::write(
        &template,
        format!(
            r#"{{"cniVersion": "1.1.0", "name": "pods", "plugins": [
  {{"type": "bridge", "bridge": "{}", "isGateway": true,
   "ipam": {{"type": "host-local", "ranges": {{{{.PodCIDRRanges}}}}, "dataDir": "{}"}}}},
  {{"type": "loopback"}}]}}"#,
            cni.bridge,
            cni.ipam_dir.display()
        ),
    )
    .unwrap();
    let config = format!(
        "[registry]\ninsecure = [\"{}\"]\n{}conf_template = \"{}\"\n",
        registry.host(),
        cni.toml(),
        template.display()
    );
    // A static pod too: its mirror pod is made by the node's own identity, past
    // NodeRestriction, which lets a node create mirror pods of its own only.
    std::fs::create_dir_all(server_dir.join("manifests")).unwrap();
    std::fs::write(
        server_dir.join("manifests/static.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: static, namespace: default}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}/shell:1\n    command: [sh, -c, \"sleep 3600\"]\n",
            registry.host()
        ),
    )
    .unwrap();
    let cluster_cidr = format!("{}0/24", cni.prefix);
    let data_dir = server_dir.join("control-plane");
    let server = RuntimeProcess::start_server(
        &server_dir,
        &config,
        free_port(),
        &[
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &free_port().to_string(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--cluster-cidr",
            &cluster_cidr,
            "--node-cidr-mask-size",
            "24",
        ],
    );

    // The node joined through a bootstrapped certificate and got its podCIDR.
    let pod_cidr = wait_for(
        &data_dir,
        &server,
        &["get", "node", "node1"],
        "the node registered and Ready with a podCIDR",
        |node| {
            let ready = node["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then(|| node["spec"]["podCIDR"].as_str().map(String::from))?
        },
    );
    assert_eq!(pod_cidr, cluster_cidr);
    let csrs = kubectl(&data_dir).output_blocking(&["get", "csr", "-o", "json"]);
    let csrs: Value = serde_json::from_slice(&csrs.stdout).unwrap();
    let csr = &csrs["items"][0];
    assert_eq!(
        csr["spec"]["signerName"], "kubernetes.io/kube-apiserver-client-kubelet",
        "{csrs}"
    );
    assert!(
        csr["spec"]["username"]
            .as_str()
            .unwrap_or_default()
            .starts_with("system:bootstrap:"),
        "{csr}"
    );
    // The runtime rendered its network config from the Node's podCIDR.
    let rendered = std::fs::read_to_string(cni.conf_dir.join("10-capstan.conflist"))
        .expect("no network config rendered");
    assert!(rendered.contains(&cluster_cidr), "{rendered}");

    let image = format!("{}/shell:1", registry.host());
    let deployment = format!(
        r#"{{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "web"}},
  "spec": {{"replicas": 2, "selector": {{"matchLabels": {{"app": "web"}}}},
    "template": {{"metadata": {{"labels": {{"app": "web"}}}}, "spec": {{
      "terminationGracePeriodSeconds": 1,
      "containers": [{{"name": "web", "image": "{image}",
        "command": ["sh", "-c", "mkdir -p /www && echo page-of-$HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www"]}}]}}}}}}}}"#
    );
    let (ok, _, err) = run(
        kubectl(&data_dir).stdin(Some(&deployment)),
        &["apply", "-f", "-"],
    );
    assert!(ok, "{err}");
    let pods = wait_for(
        &data_dir,
        &server,
        &["get", "pods", "-l", "app=web"],
        "both replicas Running with pod IPs",
        |list| {
            let items = list["items"].as_array()?;
            let running: Vec<(String, String, String)> = items
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .filter_map(|p| {
                    Some((
                        p["metadata"]["name"].as_str()?.to_string(),
                        p["status"]["podIP"].as_str()?.to_string(),
                        p["spec"]["nodeName"].as_str()?.to_string(),
                    ))
                })
                .collect();
            (running.len() == 2).then_some(running)
        },
    );
    for (name, ip, node) in &pods {
        assert_eq!(node, "node1");
        assert!(
            ip.starts_with(&cni.prefix),
            "{name}'s IP {ip} is not in {cluster_cidr}"
        );
        // httpd may not listen yet when the pod turns Running.
        let deadline = Instant::now() + Duration::from_secs(10);
        let page = loop {
            match http_get_host(ip, 8080, "/") {
                Ok((200, body)) => break body,
                other => assert!(
                    Instant::now() < deadline,
                    "GET http://{ip}:8080/: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(page.trim(), format!("page-of-{name}"));
    }
    // `kubectl get pods -o wide` shows them as upstream does: node and IP columns.
    let (ok, wide, err) = run(kubectl(&data_dir), &["get", "pods", "-o", "wide"]);
    assert!(ok, "{err}");
    for (name, ip, _) in &pods {
        let line = wide.lines().find(|l| l.starts_with(name.as_str())).unwrap();
        assert!(
            line.contains(ip) && line.contains("node1") && line.contains("Running"),
            "{wide}"
        );
    }

    let mirror = wait_for(
        &data_dir,
        &server,
        &["get", "pod", "static-node1"],
        "the static pod's mirror pod Running",
        |p| (p["status"]["phase"] == "Running").then(|| p.clone()),
    );
    assert!(
        mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string(),
        "{mirror}"
    );
    // Deleting the Deployment removes its pods from the node.
    let (ok, _, err) = run(kubectl(&data_dir), &["delete", "deployment", "web"]);
    assert!(ok, "{err}");
    wait_for(
        &data_dir,
        &server,
        &["get", "pods", "-l", "app=web"],
        "the pods deleted",
        |list| list["items"].as_array()?.is_empty().then_some(()),
    );
    drop(server);
}

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
use capstan_testkit::subnets::SubnetClaim;
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

/// One `capstan server` with a local registry holding the shell image, its own bridge and a
/// static pod; its node is left to register.
struct Cluster {
    registry: LocalRegistry,
    _dir: tempfile::TempDir,
    server: RuntimeProcess,
    data_dir: std::path::PathBuf,
    cni: CniSetup,
    cluster_cidr: String,
    /// The service range's prefix, e.g. `10.97.31.`: each cluster has a range of its own,
    /// since every server on the host puts its Service IPs on the host's `lo` and proxies them.
    service_prefix: String,
    _service_range: SubnetClaim,
}

impl Cluster {
    fn kubectl(&self) -> Kubectl {
        kubectl(&self.data_dir)
    }

    fn image(&self) -> String {
        format!("{}/shell:1", self.registry.host())
    }

    /// Waits for the node to be Ready and returns it.
    fn ready_node(&self) -> Value {
        wait_for(
            &self.data_dir,
            &self.server,
            &["get", "node", "node1"],
            "the node registered and Ready with a podCIDR",
            |node| {
                let ready = node["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                (ready && node["spec"]["podCIDR"].is_string()).then(|| node.clone())
            },
        )
    }
}

fn start_cluster() -> Cluster {
    start_cluster_with(&[])
}

/// [`start_cluster`] with more control-plane flags.
fn start_cluster_with(extra: &[&str]) -> Cluster {
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
   "ipam": {{"type": "host-local", "ranges": {{{{.PodCIDRRanges}}}}, "routes": {{{{.Routes}}}}, "dataDir": "{}"}}}},
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
    let secure_port = free_port().to_string();
    let service_range = SubnetClaim::new("10.97");
    let service_prefix = format!("10.97.{}.", service_range.octet());
    let service_cidr = format!("{service_prefix}0/24");
    let mut flags = vec![
        "--service-cluster-ip-range",
        &service_cidr,
        "--bind-address",
        "127.0.0.1",
        "--secure-port",
        &secure_port,
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--cluster-cidr",
        &cluster_cidr,
        "--node-cidr-mask-size",
        "24",
    ];
    flags.extend(extra);
    let server = RuntimeProcess::start_server(&server_dir, &config, free_port(), &flags);

    Cluster {
        registry,
        _dir: dir,
        server,
        data_dir,
        cni,
        cluster_cidr,
        service_prefix,
        _service_range: service_range,
    }
}

#[test]
fn a_deployment_runs_on_the_servers_own_node_in_its_pod_cidr() {
    capstan_testkit::require_root();
    let cluster = start_cluster();
    let (server, data_dir, cni, cluster_cidr, registry) = (
        &cluster.server,
        &cluster.data_dir,
        &cluster.cni,
        &cluster.cluster_cidr,
        &cluster.registry,
    );
    // The node joined through a bootstrapped certificate and got its podCIDR.
    let node = cluster.ready_node();
    assert_eq!(node["spec"]["podCIDR"], cluster_cidr.as_str());
    let csrs = kubectl(data_dir).output_blocking(&["get", "csr", "-o", "json"]);
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
    assert!(rendered.contains(cluster_cidr.as_str()), "{rendered}");

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
        kubectl(data_dir).stdin(Some(&deployment)),
        &["apply", "-f", "-"],
    );
    assert!(ok, "{err}");
    let pods = wait_for(
        data_dir,
        server,
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
    let (ok, wide, err) = run(kubectl(data_dir), &["get", "pods", "-o", "wide"]);
    assert!(ok, "{err}");
    for (name, ip, _) in &pods {
        let line = wide.lines().find(|l| l.starts_with(name.as_str())).unwrap();
        assert!(
            line.contains(ip) && line.contains("node1") && line.contains("Running"),
            "{wide}"
        );
    }

    let mirror = wait_for(
        data_dir,
        server,
        &["get", "pod", "static-node1"],
        "the static pod's mirror pod Running",
        |p| (p["status"]["phase"] == "Running").then(|| p.clone()),
    );
    assert!(
        mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string(),
        "{mirror}"
    );
    // Deleting the Deployment removes its pods from the node.
    let (ok, _, err) = run(kubectl(data_dir), &["delete", "deployment", "web"]);
    assert!(ok, "{err}");
    wait_for(
        data_dir,
        server,
        &["get", "pods", "-l", "app=web"],
        "the pods deleted",
        |list| list["items"].as_array()?.is_empty().then_some(()),
    );
}

/// Runs `kubectl ARGS` with `binary`, as admin; stdin from `input`.
fn run_with(
    cluster: &Cluster,
    binary: &str,
    input: Option<&str>,
    args: &[&str],
) -> std::process::Output {
    Kubectl::kubeconfig(binary, &cluster.data_dir.join("admin.kubeconfig"))
        .stdin(input)
        .output_blocking(args)
}

/// `kubectl logs [-f]`, `exec`, `cp` and `port-forward` from kubectl 1.27 (SPDY) and 1.33
/// (WebSocket) reach the pod through the API server and the node's kubelet endpoint, which
/// turns away callers without credentials or permission.
#[test]
fn kubectl_logs_exec_cp_and_port_forward_reach_the_pod() {
    use capstan_testkit::kubectl::{KUBECTL_127, KUBECTL_133};
    use std::io::BufRead;

    capstan_testkit::require_root();
    let cluster = start_cluster();
    let node = cluster.ready_node();
    let pod = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "talk"}},
  "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "c", "image": "{}",
    "command": ["sh", "-c", "echo first; (i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.2; done) & mkdir -p /www && echo served-page > /www/index.html && exec httpd -f -p 8080 -h /www"]}}]}}}}"#,
        cluster.image()
    );
    let (ok, _, err) = run(cluster.kubectl().stdin(Some(&pod)), &["apply", "-f", "-"]);
    assert!(ok, "{err}");
    wait_for(
        &cluster.data_dir,
        &cluster.server,
        &["get", "pod", "talk"],
        "the pod Running",
        |p| (p["status"]["phase"] == "Running").then_some(()),
    );
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for binary in [KUBECTL_127, KUBECTL_133] {
        // A whole log, then its tail.
        let out = run_with(&cluster, binary, None, &["logs", "talk"]);
        assert!(out.status.success(), "{binary}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).starts_with("first\n"),
            "{}",
            text(&out.stdout)
        );
        let out = run_with(&cluster, binary, None, &["logs", "talk", "--tail=1"]);
        let tail = text(&out.stdout);
        assert!(
            tail.starts_with("tick-") && tail.lines().count() == 1,
            "{binary}: {tail:?}"
        );
        let seen: u64 = tail.trim().trim_start_matches("tick-").parse().unwrap();

        // Following: lines written after the request arrive on the open stream.
        let mut follow = std::process::Command::new(binary)
            .args([
                "--kubeconfig",
                cluster.data_dir.join("admin.kubeconfig").to_str().unwrap(),
            ])
            .args(["logs", "-f", "talk", "--tail=1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
        let mut newest = 0;
        while newest < seen + 5 {
            let line = lines.next().expect("the follow stream ended").unwrap();
            newest = line.trim_start_matches("tick-").parse().unwrap_or(newest);
        }
        let _ = follow.kill();
        let _ = follow.wait();

        // exec: output, error output and exit code; then stdin.
        let out = run_with(
            &cluster,
            binary,
            None,
            &[
                "exec",
                "talk",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(3),
            "{binary}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "out\n");
        assert!(text(&out.stderr).contains("err"), "{}", text(&out.stderr));
        let out = run_with(
            &cluster,
            binary,
            Some("piped through\n"),
            &["exec", "-i", "talk", "--", "cat"],
        );
        assert!(out.status.success(), "{binary}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "piped through\n");

        // cp both ways (tar through exec).
        let local = cluster._dir.path().join("to-pod.txt");
        std::fs::write(&local, format!("copied by {binary}\n")).unwrap();
        let out = run_with(
            &cluster,
            binary,
            None,
            &["cp", local.to_str().unwrap(), "talk:/tmp/in.txt"],
        );
        assert!(out.status.success(), "{binary} cp: {}", text(&out.stderr));
        let out = run_with(
            &cluster,
            binary,
            None,
            &["exec", "talk", "--", "cat", "/tmp/in.txt"],
        );
        assert_eq!(text(&out.stdout), format!("copied by {binary}\n"));
        let back = cluster._dir.path().join("from-pod.txt");
        let out = run_with(
            &cluster,
            binary,
            None,
            &["cp", "talk:/www/index.html", back.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "{binary} cp back: {}",
            text(&out.stderr)
        );
        assert_eq!(std::fs::read_to_string(&back).unwrap(), "served-page\n");

        // port-forward to httpd in the pod.
        let port = free_port();
        let mut forward = std::process::Command::new(binary)
            .args([
                "--kubeconfig",
                cluster.data_dir.join("admin.kubeconfig").to_str().unwrap(),
            ])
            .args(["port-forward", "pod/talk", &format!("{port}:8080")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let page = loop {
            match http_get_host("127.0.0.1", port, "/") {
                Ok((200, body)) => break body,
                other => assert!(
                    Instant::now() < deadline,
                    "{binary} port-forward: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(page, "served-page\n");
        // A second connection on the same forward.
        assert_eq!(
            http_get_host("127.0.0.1", port, "/")
                .map(|r| r.1)
                .ok()
                .as_deref(),
            Some("served-page\n")
        );
        let _ = forward.kill();
        let _ = forward.wait();
    }

    // Errors as upstream words them.
    let (ok, _, err) = run(cluster.kubectl(), &["logs", "talk", "-c", "nope"]);
    assert!(
        !ok && err.contains("container nope is not valid for pod talk"),
        "{err}"
    );
    let (ok, _, err) = run(
        cluster.kubectl(),
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/talk/log?tailLines=-1",
        ],
    );
    assert!(
        !ok && err.contains("tailLines: Invalid value: \"-1\": must be greater than or equal to 0"),
        "{err}"
    );

    // The kubelet endpoint itself: no credentials, then a token without the right, then the
    // admin's client certificate.
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap();
    let curl = |extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sk", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(format!("https://127.0.0.1:{port}/pods"))
            .output()
            .unwrap();
        text(&out.stdout)
    };
    assert!(curl(&[]).ends_with("Unauthorized\n401"), "{}", curl(&[]));
    let (ok, token, err) = run(cluster.kubectl(), &["create", "token", "default"]);
    assert!(ok, "{err}");
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let refused = curl(&["-H", &bearer]);
    assert!(
        refused.ends_with("Forbidden (user=system:serviceaccount:default:default, verb=get, resource=nodes, subresource=pods)\n403"),
        "{refused}"
    );
    let kubeconfig: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(cluster.data_dir.join("admin.kubeconfig")).unwrap(),
    )
    .unwrap();
    let user = &kubeconfig["users"][0]["user"];
    let decode = |field: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(user[field].as_str().unwrap())
            .unwrap()
    };
    let cert = cluster._dir.path().join("admin.crt");
    let key = cluster._dir.path().join("admin.key");
    std::fs::write(&cert, decode("client-certificate-data")).unwrap();
    std::fs::write(&key, decode("client-key-data")).unwrap();
    let listed = curl(&[
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(
        listed.ends_with("200") && listed.contains("\"talk\""),
        "{listed}"
    );

    // nodes/proxy reaches the kubelet's debugging and metrics routes through the API server.
    let name = node["metadata"]["name"].as_str().unwrap();
    let raw = |path: &str| run(cluster.kubectl(), &["get", "--raw", path]);
    let (ok, configz, err) = raw(&format!("/api/v1/nodes/{name}/proxy/configz"));
    assert!(ok, "{err}");
    let configz: Value = serde_json::from_str(&configz).unwrap();
    assert_eq!(configz["kubeletconfig"]["kind"], "KubeletConfiguration");
    // As configured (`--kubelet-address 0.0.0.0:0`), not as bound: the kubelet's way too.
    assert_eq!(configz["kubeletconfig"]["address"], "0.0.0.0");
    assert_eq!(configz["kubeletconfig"]["port"], 0);
    assert_eq!(configz["kubeletconfig"]["maxPods"], 110);
    let (ok, metrics, err) = raw(&format!("/api/v1/nodes/{name}/proxy/metrics/resource"));
    assert!(ok, "{err}");
    assert!(
        metrics.contains(
            "container_cpu_usage_seconds_total{container=\"c\",namespace=\"default\",pod=\"talk\"}"
        ) && metrics.contains("pod_memory_working_set_bytes{namespace=\"default\",pod=\"talk\"}")
            && metrics.contains("resource_scrape_error 0"),
        "{metrics}"
    );
    let (ok, listing, err) = raw(&format!("/api/v1/nodes/{name}/proxy/logs/"));
    assert!(ok && listing.contains("<pre>"), "{listing} {err}");
    let (ok, _, err) = raw("/api/v1/nodes/no-such-node/proxy/configz");
    assert!(
        !ok && err.contains("nodes \"no-such-node\" not found"),
        "{err}"
    );
}

/// A ClusterIP Service in front of a Deployment, through the node's service proxy: reached
/// from the host and from a pod, spread over both replicas; scaled to zero, connections are
/// refused at once; deleted, its address leaves the VIP device. The `kubernetes` Service
/// leads to the API server.
#[test]
fn a_cluster_ip_service_spreads_over_ready_pods_and_refuses_with_none() {
    capstan_testkit::require_root();
    let cluster = start_cluster();
    cluster.ready_node();
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
  {{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {{"name": "web"}},
    "spec": {{"replicas": 2, "selector": {{"matchLabels": {{"app": "web"}}}},
      "template": {{"metadata": {{"labels": {{"app": "web"}}}}, "spec": {{
        "terminationGracePeriodSeconds": 1,
        "containers": [{{"name": "web", "image": "{}",
          "readinessProbe": {{"tcpSocket": {{"port": 8080}}, "periodSeconds": 1}},
          "command": ["sh", "-c", "mkdir -p /www && echo page-of-$HOSTNAME > /www/index.html && exec httpd -f -p 8080 -h /www"]}}]}}}}}}}},
  {{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "web"}},
    "spec": {{"selector": {{"app": "web"}}, "ports": [{{"name": "http", "port": 80, "targetPort": 8080}}]}}}}]}}"#,
        cluster.image()
    );
    let (ok, _, err) = run(
        cluster.kubectl().stdin(Some(&manifest)),
        &["apply", "-f", "-"],
    );
    assert!(ok, "{err}");
    let cluster_ip = wait_for(
        &cluster.data_dir,
        &cluster.server,
        &["get", "service", "web"],
        "the Service has its ClusterIP",
        |s| s["spec"]["clusterIP"].as_str().map(str::to_string),
    );
    assert!(
        cluster_ip.starts_with(&cluster.service_prefix),
        "{cluster_ip}"
    );
    let names: Vec<String> = wait_for(
        &cluster.data_dir,
        &cluster.server,
        &["get", "pods", "-l", "app=web"],
        "both replicas Ready",
        |list| {
            let items = list["items"].as_array()?;
            let ready: Vec<String> = items
                .iter()
                .filter(|p| {
                    p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            (ready.len() == 2).then_some(ready)
        },
    );
    // From the host: both replicas answer, in turn.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 2 {
        if let Ok((200, page)) = http_get_host(&cluster_ip, 80, "/") {
            seen.insert(page.trim().trim_start_matches("page-of-").to_string());
        }
        assert!(
            Instant::now() < deadline,
            "through {cluster_ip}:80 only {seen:?} of {names:?} answered\n{}",
            cluster
                .server
                .log()
                .lines()
                .filter(|l| l.contains("capstan_proxy"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut expected: Vec<String> = names.clone();
    expected.sort();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), expected);
    // From a pod: its default route leads to the node, which holds the VIP.
    let out = cluster.kubectl().output_blocking(&[
        "exec",
        &names[0],
        "--",
        "timeout",
        "5",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{cluster_ip}/"),
    ]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with("page-of-web-"),
        "{page:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The kubernetes Service leads to the API server.
    let kubernetes_ip = wait_for(
        &cluster.data_dir,
        &cluster.server,
        &["get", "service", "kubernetes"],
        "the kubernetes Service",
        |s| s["spec"]["clusterIP"].as_str().map(str::to_string),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect((kubernetes_ip.as_str(), 443)).is_err() {
        assert!(Instant::now() < deadline, "nothing on {kubernetes_ip}:443");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Scaled to zero: refused at once, never a hang.
    let (ok, _, err) = run(
        cluster.kubectl(),
        &["scale", "deployment", "web", "--replicas=0"],
    );
    assert!(ok, "{err}");
    let address: std::net::SocketAddr = format!("{cluster_ip}:80").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            other => assert!(
                Instant::now() < deadline,
                "{address} still answers with no replicas: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Deleted: the VIP leaves the device.
    let (ok, _, err) = run(cluster.kubectl(), &["delete", "service", "web"]);
    assert!(ok, "{err}");
    let on_device = || {
        let out = std::process::Command::new("ip")
            // capstan-svc0, or lo on a kernel without dummy devices.
            .args(["-o", "addr", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!(" {cluster_ip}/32"))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while on_device() {
        assert!(
            Instant::now() < deadline,
            "{cluster_ip} stays on the VIP device"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

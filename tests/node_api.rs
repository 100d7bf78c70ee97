//! `capstan node --kubeconfig` joining `capstan control-plane`, both the real binary: the Node
//! registered with its status and Lease, a pod bound to it (no scheduler: spec.nodeName set)
//! run and reported through kubectl, then deleted with its default grace period and gone from
//! the runtime and the host, while a static pod runs alongside. The pod reads the
//! service account token, CA and namespace of its `kube-api-access-*` volume, and the token is
//! accepted by the API server. A second test runs a pod on ConfigMap, Secret and env data from
//! the API, pulled with an image pull secret from a registry that demands it: it waits on a
//! missing ConfigMap (FailedMount), starts once it appears, and sees a ConfigMap change.
//! Another adds ephemeral containers with `kubectl debug` to a running pod: one shares its
//! target's process namespace, exits with its code and is never restarted; both go with the pod.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use capstan_testkit::images::{ManifestFormat, catalog};
use capstan_testkit::kubectl::{KUBECTL, Kubectl};
use capstan_testkit::registry::LocalRegistry;
use common::{CniSetup, RuntimeProcess, free_port, http_get};
use serde_json::Value;

/// `capstan control-plane` on a free port with its data in a temp directory; killed on drop.
struct ControlPlane {
    child: Child,
    data_dir: PathBuf,
    log: PathBuf,
}

impl ControlPlane {
    fn start(dir: &Path) -> Self {
        let data_dir = dir.join("control-plane");
        let log = dir.join("control-plane.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args([
                "--log-level",
                "info",
                "control-plane",
                "--bind-address",
                "127.0.0.1",
            ])
            // The controllers pods' volumes need: the `default` account and kube-root-ca.crt.
            .arg("--disable-scheduler")
            .args([
                "--controllers",
                "serviceaccount,root-ca-certificate-publisher",
            ])
            .arg("--secure-port")
            .arg(free_port().to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let plane = ControlPlane {
            child,
            data_dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if plane.kubeconfig().exists() {
                let out = plane.kubectl().run_blocking(&["get", "--raw", "/readyz"]);
                if out.0 && out.1 == "ok" {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the control plane did not get ready:\n{}",
                plane.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        plane
    }

    fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kubectl(&self) -> Kubectl {
        Kubectl::kubeconfig(KUBECTL, &self.kubeconfig())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

trait Blocking {
    /// (success, stdout, stderr)
    fn run_blocking(&self, args: &[&str]) -> (bool, String, String);
}

impl Blocking for Kubectl {
    fn run_blocking(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.output_blocking(args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

struct Cluster {
    plane: ControlPlane,
    node: RuntimeProcess,
    registry: LocalRegistry,
    port: u16,
    dir: tempfile::TempDir,
    _cni: CniSetup,
}

impl Cluster {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// A cluster whose node also trusts the plain-HTTP `registries`.
    fn start_with(registries: &[String]) -> Self {
        let registry = LocalRegistry::start().unwrap();
        let images = catalog().unwrap();
        registry
            .client()
            .push_image("shell", "1", &images.shell, ManifestFormat::Oci)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let plane = ControlPlane::start(dir.path());
        let node_dir = dir.path().join("node");
        std::fs::create_dir_all(&node_dir).unwrap();
        let cni = CniSetup::new(&node_dir, None);
        let insecure: Vec<String> = std::iter::once(registry.host())
            .chain(registries.iter().cloned())
            .map(|h| format!("\"{h}\""))
            .collect();
        let config = format!(
            "[registry]\ninsecure = [{}]\n{}",
            insecure.join(", "),
            cni.toml()
        );
        let port = free_port();
        let kubeconfig = plane.kubeconfig();
        let node = RuntimeProcess::start_node(
            &node_dir,
            &config,
            port,
            &[
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--node-labels",
                "capstan.test/role=edge",
                "--register-with-taints",
                "capstan.test/dedicated=yes:NoSchedule",
            ],
        );
        Cluster {
            plane,
            node,
            registry,
            port,
            dir,
            _cni: cni,
        }
    }

    fn logs(&self) -> String {
        format!(
            "node log:\n{}\ncontrol plane log:\n{}",
            tail(&self.node.log(), 80),
            tail(&self.plane.log(), 30)
        )
    }

    fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.plane.kubectl().stdin(stdin).run_blocking(args);
        assert!(ok, "kubectl {args:?}: {err}\n{}", self.logs());
        out
    }

    fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let (ok, out, _) = self.plane.kubectl().run_blocking(&all);
        ok.then(|| serde_json::from_str(&out).ok()).flatten()
    }

    /// Polls `kubectl get ARGS -o json` until `check` accepts it.
    fn wait_for(&self, args: &[&str], timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.get_json(args);
            if let Some(value) = &got
                && check(value)
            {
                return value.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "{args:?} not as expected within {timeout:?}: {}\n{}",
                    serde_json::to_string_pretty(&got).unwrap_or_default(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The log of container `c` of pod `default/pod`, through the node's read-only API.
    fn container_log(&self, pod: &str) -> String {
        match http_get(self.port, &format!("/containerLogs/default/{pod}/c")) {
            Ok((200, body)) => body,
            _ => String::new(),
        }
    }

    /// Waits until the container log of `pod` contains `text`; returns the log.
    fn wait_for_log(&self, pod: &str, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.container_log(pod);
            if log.contains(text) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} not in the log of {pod} within {timeout:?}:\n{log}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn read_only_pods(&self) -> Vec<Value> {
        match http_get(self.port, "/pods") {
            Ok((200, body)) => serde_json::from_str::<Value>(&body).unwrap()["items"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn monitors_under(dir: &Path) -> usize {
    let needle = format!("{}/", dir.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .filter(|c| c.contains("monitor") && c.contains(&needle))
        .count()
}

#[test]
fn a_node_joins_runs_a_bound_pod_and_deletes_it_gracefully() {
    capstan_testkit::require_root();
    let started = Instant::now();
    let mut c = Cluster::start();

    // The Node registers Ready, with its capacity, system info, labels and taints.
    let node = c.wait_for(&["get", "node", "node1"], Duration::from_secs(20), |n| {
        condition(n, "Ready").is_some_and(|r| r["status"] == "True")
    });
    let ready = condition(&node, "Ready").unwrap();
    assert_eq!(ready["reason"], "KubeletReady");
    assert_eq!(ready["message"], "kubelet is posting ready status");
    for (kind, reason) in [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("DiskPressure", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ] {
        let cond = condition(&node, kind).unwrap_or_else(|| panic!("{kind}: {node}"));
        assert_eq!(
            (cond["status"].as_str(), cond["reason"].as_str()),
            (Some("False"), Some(reason))
        );
    }
    let status = &node["status"];
    for resource in ["cpu", "memory", "ephemeral-storage", "pods"] {
        assert!(
            status["capacity"][resource].is_string(),
            "capacity {resource}: {status}"
        );
        assert!(
            status["allocatable"][resource].is_string(),
            "allocatable {resource}: {status}"
        );
    }
    assert_eq!(status["capacity"]["pods"], "110");
    let info = &status["nodeInfo"];
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("capstan://"),
        "{info}"
    );
    assert!(
        info["kubeletVersion"]
            .as_str()
            .unwrap()
            .starts_with("v1.33"),
        "{info}"
    );
    assert_eq!(info["operatingSystem"], "linux");
    assert!(!info["kernelVersion"].as_str().unwrap().is_empty());
    assert!(!info["osImage"].as_str().unwrap().is_empty());
    // The test asks for a free port: the one advertised is the one the endpoint listens on.
    let port = status["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "nothing listens on the advertised kubelet port {port}"
    );
    let addresses = status["addresses"].as_array().unwrap();
    assert!(
        addresses.iter().any(|a| a["type"] == "InternalIP"),
        "{addresses:?}"
    );
    assert!(
        addresses
            .iter()
            .any(|a| a["type"] == "Hostname" && a["address"] == "node1")
    );
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], "node1");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["capstan.test/role"], "edge");
    assert_eq!(node["spec"]["taints"][0]["key"], "capstan.test/dedicated");
    assert_eq!(node["spec"]["taints"][0]["effect"], "NoSchedule");

    // The Lease is held by the node, owned by its Node, and renewed.
    let lease_args = ["get", "lease", "-n", "kube-node-lease", "node1"];
    let lease = c.wait_for(&lease_args, Duration::from_secs(10), |l| {
        l["spec"]["renewTime"].is_string()
    });
    assert_eq!(lease["spec"]["holderIdentity"], "node1");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(lease["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(
        lease["metadata"]["ownerReferences"][0]["uid"],
        node["metadata"]["uid"]
    );
    let first_renewal = lease["spec"]["renewTime"].clone();
    c.wait_for(&lease_args, Duration::from_secs(15), |l| {
        l["spec"]["renewTime"] != first_renewal
    });

    // A static pod runs alongside the API's pods, and the API server holds its mirror pod.
    let image = format!("{}/shell:1", c.registry.host());
    let sleeper = "trap 'exit 0' TERM; while true; do sleep 0.2; done";
    std::fs::write(
        c.node.dir.join("manifests/static.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: static}}\nspec:\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: c\n    image: {image}\n    command: [sh, -c, \"{sleeper}\"]\n"
        ),
    )
    .unwrap();

    // A pod bound to the node by hand (no scheduler) runs and is reported through the API.
    // It gets the kube-api-access volume and prints what it reads there.
    let reader = "for f in token ca.crt namespace; do echo \\\"== $f\\\"; cat /var/run/secrets/kubernetes.io/serviceaccount/$f; echo; done; echo '== end'";
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: bound, namespace: default}}\nspec:\n  nodeName: node1\n  terminationGracePeriodSeconds: 20\n  containers:\n  - name: c\n    image: {image}\n    command: [sh, -c, \"{reader}; {sleeper}\"]\n"
    );
    c.kubectl_ok(&["apply", "-f", "-"], Some(&pod));
    let running = c.wait_for(&["get", "pod", "bound"], Duration::from_secs(30), |p| {
        p["status"]["phase"] == "Running"
            && p["status"]["containerStatuses"][0]["ready"] == true
            && p["status"]["podIP"].is_string()
    });
    let status = &running["status"];
    assert!(
        status["containerStatuses"][0]["containerID"]
            .as_str()
            .unwrap()
            .starts_with("capstan://"),
        "{status}"
    );
    assert_eq!(
        status["hostIP"],
        addresses
            .iter()
            .find(|a| a["type"] == "InternalIP")
            .unwrap()["address"]
    );
    assert_eq!(condition(&running, "Ready").unwrap()["status"], "True");
    assert_eq!(
        condition(&running, "ContainersReady").unwrap()["status"],
        "True"
    );
    assert_eq!(status["qosClass"], "BestEffort");
    let uid = running["metadata"]["uid"].as_str().unwrap().to_string();
    check_service_account_files(&c, &running);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c
        .read_only_pods()
        .iter()
        .any(|p| p["metadata"]["name"] == "static-node1" && p["status"]["phase"] == "Running")
    {
        assert!(
            Instant::now() < deadline,
            "the static pod did not run\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mirror = c.wait_for(
        &["get", "pod", "static-node1"],
        Duration::from_secs(20),
        |p| p["status"]["phase"] == "Running",
    );
    let annotations = &mirror["metadata"]["annotations"];
    assert_eq!(
        annotations["kubernetes.io/config.mirror"], annotations["kubernetes.io/config.hash"],
        "{mirror}"
    );
    assert!(
        annotations["kubernetes.io/config.mirror"].is_string(),
        "{mirror}"
    );
    let owner = &mirror["metadata"]["ownerReferences"][0];
    assert_eq!(
        (&owner["kind"], &owner["name"]),
        (&"Node".into(), &"node1".into()),
        "{mirror}"
    );
    assert_eq!(mirror["spec"]["nodeName"], "node1");
    // A deleted mirror pod is made again; the static pod itself runs on untouched.
    let running_container = |pods: Vec<Value>| {
        pods.into_iter()
            .find(|p| p["metadata"]["name"] == "static-node1")
            .and_then(|p| {
                p["status"]["containerStatuses"][0]["containerID"]
                    .as_str()
                    .map(String::from)
            })
    };
    let container = running_container(c.read_only_pods());
    c.kubectl_ok(&["delete", "pod", "static-node1", "--wait=false"], None);
    let first_uid = mirror["metadata"]["uid"].clone();
    c.wait_for(
        &["get", "pod", "static-node1"],
        Duration::from_secs(20),
        |p| {
            p["metadata"]["uid"] != first_uid
                && p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["phase"] == "Running"
        },
    );
    assert_eq!(
        running_container(c.read_only_pods()),
        container,
        "the static pod was restarted"
    );
    assert_eq!(monitors_under(c.dir.path()), 2, "one pod monitor per pod");

    // The agent killed and started again adopts the pod: same container, no restart, and
    // the Node re-registered and its Lease renewed by the new process.
    let container_id = status["containerStatuses"][0]["containerID"].clone();
    c.node.stop_with("KILL");
    let before_restart = c.get_json(&lease_args).unwrap()["spec"]["renewTime"].clone();
    c.node.respawn();
    c.wait_for(&lease_args, Duration::from_secs(15), |l| {
        l["spec"]["renewTime"] != before_restart
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    while !c.node.log().contains("node already registered") {
        assert!(
            Instant::now() < deadline,
            "no re-registration\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let adopted = c.get_json(&["get", "pod", "bound"]).unwrap();
    assert_eq!(adopted["status"]["phase"], "Running");
    assert_eq!(
        adopted["status"]["containerStatuses"][0]["containerID"],
        container_id
    );
    assert_eq!(adopted["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(
        monitors_under(c.dir.path()),
        2,
        "the pods outlived the agent"
    );

    // kubectl delete (the pod's own grace period) returns once the node stopped and deleted it.
    let deleting = Instant::now();
    let (ok, out, err) = c.plane.kubectl().run_blocking(&["delete", "pod", "bound"]);
    assert!(ok, "{out}{err}\n{}", c.logs());
    assert!(out.contains("pod \"bound\" deleted"), "{out}");
    assert!(
        deleting.elapsed() < Duration::from_secs(15),
        "stopped as soon as its container exited, not after the whole grace period: {:?}",
        deleting.elapsed()
    );
    let (ok, _, err) = c.plane.kubectl().run_blocking(&["get", "pod", "bound"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
    let pod_dir = c.node.dir.join("agent/pods").join(&uid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while monitors_under(c.dir.path()) != 1 || pod_dir.exists() {
        assert!(
            Instant::now() < deadline,
            "the deleted pod left its monitor or directory\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !c.read_only_pods()
            .iter()
            .any(|p| p["metadata"]["uid"] == uid.as_str()),
        "the node forgot the pod"
    );
    let mounts: Vec<PathBuf> = capstan_testkit::mounts::mounted_under(c.dir.path())
        .into_iter()
        .filter(|m| m.to_string_lossy().contains(&uid))
        .collect();
    assert!(
        mounts.is_empty(),
        "mounts left by the deleted pod: {mounts:?}"
    );

    // The static pod goes with its file, and then nothing of either pod is left on the host.
    std::fs::remove_file(c.node.dir.join("manifests/static.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while monitors_under(c.dir.path()) != 0 || !c.read_only_pods().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the static pod did not stop\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = capstan_testkit::mounts::mounted_under(c.dir.path());
    assert!(left.is_empty(), "mounts left: {left:?}");
    // Its mirror pod goes with it.
    c.wait_for(&["get", "pods"], Duration::from_secs(20), |list| {
        list["items"].as_array().is_some_and(|items| {
            !items
                .iter()
                .any(|p| p["metadata"]["name"] == "static-node1")
        })
    });

    // Every write to the API server went through the first time, and the pod's status was
    // patched on changes only (created, started, ready, stopping: a handful of patches).
    let log = c.node.log();
    for failure in [
        "status not pushed",
        "node status not posted",
        "lease not renewed",
        "stopped pod not deleted",
        "node not registered",
    ] {
        assert!(!log.contains(failure), "{failure}:\n{}", c.logs());
    }
    let patches = log
        .lines()
        .filter(|l| l.contains("pod status pushed"))
        .count();
    eprintln!("pod status patches: {patches}");
    for line in log.lines().filter(|l| l.contains("pod ready")) {
        eprintln!("{line}");
    }
    assert!(
        (1..=8).contains(&patches),
        "{patches} status patches\n{}",
        c.logs()
    );
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
}

/// The files of the pod's `kube-api-access-*` volume as its container printed them: a token
/// the API server accepts as the pod's service account, bound to the pod; the cluster CA (the
/// one the admin kubeconfig trusts); the namespace.
fn check_service_account_files(c: &Cluster, pod: &Value) {
    let volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        volumes.iter().any(|v| v["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("kube-api-access-"))),
        "the API server injects the volume: {volumes:?}"
    );
    let log = c.wait_for_log("bound", "== end", Duration::from_secs(10));
    let section = |name: &str| -> String {
        let start = log
            .find(&format!("== {name}\n"))
            .unwrap_or_else(|| panic!("no {name} in\n{log}"))
            + name.len()
            + 4;
        let end = log[start..].find("\n== ").map_or(log.len(), |e| start + e);
        log[start..end].trim().to_string()
    };
    assert_eq!(section("namespace"), "default");
    let ca = section("ca.crt");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    let kubeconfig = std::fs::read_to_string(c.plane.kubeconfig()).unwrap();
    let ca_data = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data:"))
        .expect("the admin kubeconfig names its CA")
        .trim()
        .to_string();
    let mut decode = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    decode
        .stdin
        .take()
        .unwrap()
        .write_all(ca_data.as_bytes())
        .unwrap();
    let decoded = decode.wait_with_output().unwrap();
    assert_eq!(
        ca,
        String::from_utf8_lossy(&decoded.stdout).trim(),
        "the cluster CA"
    );
    let token = section("token");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let review = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    });
    let out = c.kubectl_ok(
        &["create", "-f", "-", "-o", "json"],
        Some(&review.to_string()),
    );
    let status = serde_json::from_str::<Value>(&out).unwrap()["status"].clone();
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(
        status["user"]["username"], "system:serviceaccount:default:default",
        "{status}"
    );
    assert_eq!(
        status["user"]["extra"]["authentication.kubernetes.io/pod-name"][0], "bound",
        "bound to the pod: {status}"
    );
    assert_eq!(
        status["user"]["extra"]["authentication.kubernetes.io/pod-uid"][0], pod["metadata"]["uid"],
        "{status}"
    );
}

/// The Warning events of `pod` with `reason`, as `(message, count)`.
fn events_of(c: &Cluster, pod: &str, reason: &str) -> Vec<(String, i64)> {
    c.get_json(&["get", "events", "-n", "default"])
        .and_then(|list| list["items"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == pod && e["reason"] == reason)
        .inspect(|e| {
            assert_eq!(e["type"], "Warning", "{e}");
            assert_eq!(e["source"]["component"], "kubelet", "{e}");
            assert_eq!(e["source"]["host"], "node1", "{e}");
        })
        .map(|e| {
            (
                e["message"].as_str().unwrap_or_default().to_string(),
                e["count"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

/// Waits until `pod` has a Warning event with `reason` and `message`.
fn wait_for_event(c: &Cluster, pod: &str, reason: &str, message: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !events_of(c, pod, reason).iter().any(|(m, _)| m == message) {
        assert!(
            Instant::now() < deadline,
            "no {reason} event {message:?} for {pod}: {:?}\n{}",
            events_of(c, pod, reason),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn api_volumes_env_and_pull_secrets_follow_their_objects() {
    capstan_testkit::require_root();
    let started = Instant::now();
    let private = LocalRegistry::start_with_basic_auth("puller", "s3cret").unwrap();
    private
        .client()
        .push_image(
            "private/shell",
            "1",
            &catalog().unwrap().shell,
            ManifestFormat::Oci,
        )
        .unwrap();
    let c = Cluster::start_with(&[private.host()]);
    let image = format!("{}/private/shell:1", private.host());

    // The data the pod reads, and the pull secret of the private registry (`auth` is
    // base64("puller:s3cret")).
    let docker_config = serde_json::json!({
        "auths": {private.host(): {"auth": "cHVsbGVyOnMzY3JldA=="}}
    });
    let objects = serde_json::json!({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
             "data": {"mode": "fast"}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
             "stringData": {"password": "hunter2"}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pull"},
             "type": "kubernetes.io/dockerconfigjson",
             "stringData": {".dockerconfigjson": docker_config.to_string()}},
        ]
    });
    c.kubectl_ok(&["apply", "-f", "-"], Some(&objects.to_string()));

    // A pod on all of it, and on a ConfigMap that does not exist yet.
    let script = "trap 'exit 0' TERM; echo \"env=$MODE secret=$(cat /etc/sec/password) late=$(cat /etc/late/k)\"; last=; while true; do v=$(cat /etc/cfg/mode); if [ \"$v\" != \"$last\" ]; then echo \"mode=$v\"; last=$v; fi; sleep 0.2; done";
    let pod = |name: &str, pull_secret: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "nodeName": "node1",
                "terminationGracePeriodSeconds": 5,
                "imagePullSecrets": [{"name": pull_secret}],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "settings"}},
                    {"name": "sec", "secret": {"secretName": "creds"}},
                    {"name": "late", "configMap": {"name": "late"}},
                ],
                "containers": [{
                    "name": "c", "image": image, "imagePullPolicy": "Always",
                    "command": ["sh", "-c", script],
                    "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}}],
                    "volumeMounts": [
                        {"name": "cfg", "mountPath": "/etc/cfg"},
                        {"name": "sec", "mountPath": "/etc/sec"},
                        {"name": "late", "mountPath": "/etc/late"},
                    ],
                }],
            }
        })
        .to_string()
    };
    c.kubectl_ok(&["apply", "-f", "-"], Some(&pod("reader", "pull")));

    // It waits for the missing ConfigMap, saying so as the kubelet does.
    wait_for_event(
        &c,
        "reader",
        "FailedMount",
        "MountVolume.SetUp failed for volume \"late\" : configmap \"late\" not found",
    );
    let waiting = c.get_json(&["get", "pod", "reader"]).unwrap();
    assert_eq!(
        waiting["status"]["phase"], "Pending",
        "{}",
        waiting["status"]
    );
    assert!(
        c.container_log("reader").is_empty(),
        "no container started yet"
    );

    // Once it exists the pod starts (woken by the ConfigMap's watch, not a resync), pulling
    // with the pull secret, and reads the env, the Secret and both ConfigMaps.
    c.kubectl_ok(
        &["create", "configmap", "late", "--from-literal=k=v1"],
        None,
    );
    let appeared = Instant::now();
    let log = c.wait_for_log("reader", "mode=fast", Duration::from_secs(20));
    eprintln!(
        "started {:?} after the ConfigMap appeared",
        appeared.elapsed()
    );
    assert!(
        appeared.elapsed() < Duration::from_secs(15),
        "{:?}",
        appeared.elapsed()
    );
    assert!(
        log.contains("env=fast secret=hunter2 late=v1"),
        "{log}\n{}",
        c.logs()
    );

    // A change reaches the running container's file, within seconds.
    let changing = Instant::now();
    c.kubectl_ok(
        &[
            "patch",
            "configmap",
            "settings",
            "-p",
            r#"{"data":{"mode":"slow"}}"#,
        ],
        None,
    );
    c.wait_for_log("reader", "mode=slow", Duration::from_secs(30));
    eprintln!("ConfigMap change seen after {:?}", changing.elapsed());
    let running = c.get_json(&["get", "pod", "reader"]).unwrap();
    assert_eq!(
        running["status"]["containerStatuses"][0]["restartCount"], 0,
        "the file changed in place"
    );

    // With a pull secret that does not exist the same image is refused by the registry, and
    // the missing secret is reported.
    c.kubectl_ok(&["apply", "-f", "-"], Some(&pod("no-creds", "absent")));
    let refused = c.wait_for(&["get", "pod", "no-creds"], Duration::from_secs(20), |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
    });
    let message = refused["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!message.is_empty(), "{refused}");
    wait_for_event(
        &c,
        "no-creds",
        "FailedToRetrieveImagePullSecret",
        "Unable to retrieve some image pull secrets (absent); attempting to pull the image may not succeed.",
    );

    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_readiness_gate_holds_ready_until_its_condition_is_true() {
    capstan_testkit::require_root();
    let c = Cluster::start();
    let image = format!("{}/shell:1", c.registry.host());
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: gated, namespace: default}}\nspec:\n  nodeName: node1\n  terminationGracePeriodSeconds: 1\n  readinessGates:\n  - conditionType: example.com/load-balancer\n  containers:\n  - name: c\n    image: {image}\n    command: [sh, -c, \"sleep 3600\"]\n"
    );
    c.kubectl_ok(&["apply", "-f", "-"], Some(&manifest));
    let ready_of = |pod: &Value| condition(pod, "Ready").cloned().unwrap_or_default();
    // Containers ready, the gate's condition absent: not Ready, in the kubelet's words.
    let pod = c.wait_for(&["get", "pod", "gated"], Duration::from_secs(60), |p| {
        condition(p, "ContainersReady").is_some_and(|c| c["status"] == "True")
            && ready_of(p)["reason"] == "ReadinessGatesNotReady"
    });
    let ready = ready_of(&pod);
    assert_eq!(ready["status"], "False", "{pod}");
    assert_eq!(
        ready["message"],
        "corresponding condition of pod readiness gate \"example.com/load-balancer\" does not exist.",
        "{pod}"
    );
    // Another writer sets the gate False, then True: Ready follows.
    let set_gate = |status: &str| {
        let patch = format!(
            r#"{{"status": {{"conditions": [{{"type": "example.com/load-balancer", "status": "{status}"}}]}}}}"#
        );
        c.kubectl_ok(
            &[
                "patch",
                "pod",
                "gated",
                "--subresource=status",
                "--type=strategic",
                "-p",
                &patch,
            ],
            None,
        );
    };
    set_gate("False");
    c.wait_for(&["get", "pod", "gated"], Duration::from_secs(20), |p| {
        ready_of(p)["message"]
            == "the status of pod readiness gate \"example.com/load-balancer\" is not \"True\", but False"
    });
    set_gate("True");
    let pod = c.wait_for(&["get", "pod", "gated"], Duration::from_secs(20), |p| {
        ready_of(p)["status"] == "True"
    });
    // The gate's own condition is kept as its writer set it.
    assert_eq!(
        condition(&pod, "example.com/load-balancer").map(|c| c["status"].clone()),
        Some(Value::from("True")),
        "{pod}"
    );
    c.kubectl_ok(
        &["delete", "pod", "gated", "--wait=true", "--timeout=60s"],
        None,
    );
}

#[test]
fn a_pod_past_its_active_deadline_is_stopped_and_failed() {
    capstan_testkit::require_root();
    let c = Cluster::start();
    let image = format!("{}/shell:1", c.registry.host());
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: bounded, namespace: default}}\nspec:\n  nodeName: node1\n  activeDeadlineSeconds: 3\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {image}\n    command: [sh, -c, \"echo started; sleep 3600\"]\n"
    );
    c.kubectl_ok(&["apply", "-f", "-"], Some(&manifest));
    c.wait_for_log("bounded", "started", Duration::from_secs(60));
    let started = Instant::now();
    let pod = c.wait_for(&["get", "pod", "bounded"], Duration::from_secs(30), |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(pod["status"]["reason"], "DeadlineExceeded", "{pod}");
    assert_eq!(
        pod["status"]["message"],
        "Pod was active on the node longer than the specified deadline"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped {:?} after it started, with a 3 s deadline",
        started.elapsed()
    );
    assert_eq!(
        condition(&pod, "Ready").unwrap()["status"],
        "False",
        "{pod}"
    );
    let state = &pod["status"]["containerStatuses"][0]["state"];
    assert!(
        state["terminated"].is_object(),
        "container not stopped: {pod}"
    );
    wait_for_event(
        &c,
        "bounded",
        "DeadlineExceeded",
        "Pod was active on the node longer than the specified deadline",
    );
    // It stays Failed: the container is not started again.
    std::thread::sleep(Duration::from_secs(2));
    let again = c.get_json(&["get", "pod", "bounded"]).unwrap();
    assert_eq!(again["status"]["phase"], "Failed");
    assert!(
        again["status"]["containerStatuses"][0]["state"]["terminated"].is_object(),
        "{again}"
    );
    assert_eq!(again["status"]["containerStatuses"][0]["restartCount"], 0);
    c.kubectl_ok(
        &["delete", "pod", "bounded", "--wait=true", "--timeout=60s"],
        None,
    );
}

/// The host's processes whose command line contains `needle`.
fn processes_with(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .count()
}

/// The events of `pod` about its container at `field_path`, as `(type, reason, message)`.
fn container_events(c: &Cluster, pod: &str, field_path: &str) -> Vec<(String, String, String)> {
    c.get_json(&["get", "events", "-n", "default"])
        .and_then(|list| list["items"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e["involvedObject"]["name"] == pod && e["involvedObject"]["fieldPath"] == field_path
        })
        .map(|e| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (text(&e["type"]), text(&e["reason"]), text(&e["message"]))
        })
        .collect()
}

#[test]
fn kubectl_debug_runs_an_ephemeral_container_in_the_targets_process_namespace() {
    capstan_testkit::require_root();
    let c = Cluster::start();
    let image = format!("{}/shell:1", c.registry.host());
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: debugme, namespace: default}}\nspec:\n  nodeName: node1\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: {image}\n    command: [sh, -c, \"echo target-up; exec sleep 3617\"]\n"
    );
    c.kubectl_ok(&["apply", "-f", "-"], Some(&manifest));
    c.wait_for_log("debugme", "target-up", Duration::from_secs(60));
    let uid = c.get_json(&["get", "pod", "debugme"]).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();

    // The debug container sees the target's processes, and through /proc/1/root (the target's
    // PID 1) the target's files: it waits there for a file the test makes in the target.
    let script = "echo debug-start; ps -o args; \
                  until [ -e /proc/1/root/tmp/go ]; do sleep 0.1; done; echo debug-done; exit 3";
    c.kubectl_ok(
        &[
            "debug",
            "debugme",
            &format!("--image={image}"),
            "--target=c",
            "--container=debugger",
            "--",
            "sh",
            "-c",
            script,
        ],
        None,
    );
    let ephemeral = |p: &Value, name: &str| -> Value {
        p["status"]["ephemeralContainerStatuses"]
            .as_array()
            .and_then(|all| all.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or_default()
    };
    let pod = c.wait_for(&["get", "pod", "debugme"], Duration::from_secs(30), |p| {
        ephemeral(p, "debugger")["state"]["running"].is_object()
    });
    let status = ephemeral(&pod, "debugger");
    assert_eq!(status["image"], image.as_str(), "{status}");
    assert!(
        status["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with("capstan://")),
        "{status}"
    );
    assert!(
        status["imageID"].as_str().is_some_and(|id| !id.is_empty()),
        "{status}"
    );
    assert_eq!(status["ready"], false, "{status}");
    assert_eq!(status["restartCount"], 0, "{status}");
    // The pod itself is unaffected.
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
    assert_eq!(condition(&pod, "Ready").unwrap()["status"], "True", "{pod}");

    c.kubectl_ok(
        &["exec", "debugme", "-c", "c", "--", "touch", "/tmp/go"],
        None,
    );
    let pod = c.wait_for(&["get", "pod", "debugme"], Duration::from_secs(30), |p| {
        ephemeral(p, "debugger")["state"]["terminated"].is_object()
    });
    let terminated = &ephemeral(&pod, "debugger")["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 3, "{pod}");
    assert_eq!(terminated["reason"], "Error", "{pod}");
    let logs = c.kubectl_ok(&["logs", "debugme", "-c", "debugger"], None);
    assert!(logs.contains("debug-start"), "{logs}");
    assert!(
        logs.contains("sleep 3617"),
        "the target's process not seen from the debug container:\n{logs}"
    );
    assert!(logs.contains("debug-done"), "{logs}");

    // The kubelet's events, about the ephemeral container by its field path.
    let path = "spec.ephemeralContainers{debugger}";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = container_events(&c, "debugme", path);
        let has = |reason: &str, message: &str| {
            events
                .iter()
                .any(|(t, r, m)| t == "Normal" && r == reason && m.starts_with(message))
        };
        if has("Pulled", "Container image")
            && has("Created", "Created container: debugger")
            && has("Started", "Started container debugger")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events of {path}: {events:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Never restarted: it stays terminated.
    std::thread::sleep(Duration::from_secs(2));
    let again = c.get_json(&["get", "pod", "debugme"]).unwrap();
    let status = ephemeral(&again, "debugger");
    assert_eq!(status["state"]["terminated"]["exitCode"], 3, "{again}");
    assert_eq!(status["restartCount"], 0, "{again}");

    // A second one without a target keeps running until the pod is deleted, and goes with it.
    c.kubectl_ok(
        &[
            "debug",
            "debugme",
            &format!("--image={image}"),
            "--container=lingering",
            "--",
            "sleep",
            "3618",
        ],
        None,
    );
    c.wait_for(&["get", "pod", "debugme"], Duration::from_secs(30), |p| {
        ephemeral(p, "lingering")["state"]["running"].is_object()
    });
    assert_eq!(processes_with("sleep 3618"), 1);
    c.kubectl_ok(
        &["delete", "pod", "debugme", "--wait=true", "--timeout=60s"],
        None,
    );
    let pod_dir = c.node.dir.join("agent/pods").join(&uid);
    let deadline = Instant::now() + Duration::from_secs(15);
    while processes_with("sleep 3618") != 0
        || processes_with("sleep 3617") != 0
        || monitors_under(c.dir.path()) != 0
        || pod_dir.exists()
    {
        assert!(
            Instant::now() < deadline,
            "the deleted pod left its ephemeral container, monitor or directory\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

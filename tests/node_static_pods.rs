//! `capstan node` end to end: static pods from a manifest directory, run by the real binary with
//! its built-in runtime, watched through the read-only API, the host's cgroups and processes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use capstan_testkit::images::{ManifestFormat, WEB_PAGE, WEB_PORT, catalog};
use capstan_testkit::registry::LocalRegistry;
use common::{CniSetup, RuntimeProcess, free_port, http_get, http_get_host};
use serde_json::Value;

fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "these tests run as root");
}

/// A registry with the test images, a CNI setup and a node, all private to one test.
struct Fixture {
    registry: LocalRegistry,
    node: RuntimeProcess,
    port: u16,
    _cni: CniSetup,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn start() -> Self {
        Self::start_with_config(None)
    }

    /// Starts the node with a KubeletConfiguration (YAML text) when given.
    fn start_with_config(kubelet_config: Option<&str>) -> Self {
        let registry = LocalRegistry::start().unwrap();
        let images = catalog().unwrap();
        for (name, image) in [("shell", &images.shell), ("web", &images.web)] {
            registry
                .client()
                .push_image(name, "1", image, ManifestFormat::Oci)
                .unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let cni = CniSetup::new(dir.path(), None);
        let config = format!(
            "[registry]\ninsecure = [\"{}\"]\n{}",
            registry.host(),
            cni.toml()
        );
        let port = free_port();
        let config_file = dir.path().join("kubelet.yaml");
        let mut extra = Vec::new();
        if let Some(text) = kubelet_config {
            std::fs::write(&config_file, text).unwrap();
            extra = vec!["--config", config_file.to_str().unwrap()];
        }
        let node = RuntimeProcess::start_node(dir.path(), &config, port, &extra);
        Fixture {
            registry,
            node,
            port,
            _cni: cni,
            dir,
        }
    }

    fn image(&self, name: &str) -> String {
        format!("{}/{name}:1", self.registry.host())
    }

    fn manifests(&self) -> std::path::PathBuf {
        self.dir.path().join("manifests")
    }

    fn write_manifest(&self, file: &str, text: &str) {
        // Written beside and renamed in, as editors and config tools do.
        let tmp = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.manifests().join(file)).unwrap();
    }

    fn pods(&self) -> Vec<Value> {
        match http_get(self.port, "/pods") {
            Ok((200, body)) => serde_json::from_str::<Value>(&body).unwrap()["items"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn pod(&self, name: &str) -> Option<Value> {
        self.pods()
            .into_iter()
            .find(|p| p["metadata"]["name"] == name)
    }

    /// Polls until `check` accepts the pod, or fails with the last status and the node's log.
    fn wait_pod(&self, name: &str, timeout: Duration, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let pod = self.pod(name);
            if let Some(pod) = &pod
                && check(pod)
            {
                return pod.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "pod {name} not as expected within {timeout:?}: {}\nnode log:\n{}",
                    serde_json::to_string_pretty(&pod).unwrap_or_default(),
                    tail(&self.node.log(), 60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_gone(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.pod(name).is_some() {
            assert!(
                Instant::now() < deadline,
                "pod {name} still listed after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn condition(pod: &Value, kind: &str) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

fn running_and_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && condition(pod, "Ready")
}

fn container(pod: &Value, name: &str) -> Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn monitors_under(dir: &Path) -> usize {
    let needle = format!("{}/", dir.display());
    procfs_cmdlines()
        .into_iter()
        .filter(|c| c.contains("monitor") && c.contains(&needle))
        .count()
}

fn procfs_cmdlines() -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .collect()
}

fn cgroup_dir(controller: &str, path: &str) -> std::path::PathBuf {
    let base = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup").to_path_buf()
    } else {
        Path::new("/sys/fs/cgroup").join(controller)
    };
    base.join(path.trim_start_matches('/'))
}

#[test]
fn a_static_web_pod_runs_serves_and_goes_with_its_file() {
    require_root();
    let f = Fixture::start();
    f.write_manifest(
        "web.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {{app: web}}\nspec:\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: web\n    image: {}\n    ports: [{{name: http, containerPort: 8080}}]\n    readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: 1}}\n    livenessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n    resources:\n      requests: {{cpu: 100m, memory: 32Mi}}\n      limits: {{cpu: 200m, memory: 64Mi}}\n",
            f.image("web")
        ),
    );
    let pod = f.wait_pod("web-node1", Duration::from_secs(60), running_and_ready);
    assert_eq!(pod["metadata"]["namespace"], "default");
    assert_eq!(pod["status"]["qosClass"], "Burstable");
    assert!(condition(&pod, "Initialized") && condition(&pod, "PodReadyToStartContainers"));
    let web = container(&pod, "web");
    assert_eq!(web["restartCount"], 0);
    assert!(
        web["containerID"]
            .as_str()
            .unwrap()
            .starts_with("capstan://")
    );
    let ip = pod["status"]["podIP"].as_str().expect("pod IP").to_string();
    // Ready came from the httpGet readiness probe (by port name); the tcpSocket liveness probe
    // passes too.
    // The liveness probe may run once before the server listens (as with the kubelet, nothing
    // delays it), so wait for a success rather than asserting that nothing failed.
    let probe_count = |metrics: &str, kind: &str, result: &str| -> u64 {
        let key = format!("prober_probe_total{{probe_type=\"{kind}\",result=\"{result}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (_, metrics) = http_get(f.port, "/metrics").unwrap();
        if probe_count(&metrics, "Liveness", "successful") > 0 || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        probe_count(&metrics, "Readiness", "successful") > 0,
        "{metrics}"
    );
    assert!(
        probe_count(&metrics, "Liveness", "successful") > 0,
        "{metrics}"
    );
    let (code, body) = http_get_host(&ip, WEB_PORT, "/").unwrap();
    assert_eq!((code, body.as_str()), (200, WEB_PAGE));

    // The pod's cgroup is in the burstable class, sized from its requests and limits.
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let root = f.node.cgroup_root.clone().unwrap();
    let pod_cgroup = format!("{root}/kubepods/burstable/pod{uid}");
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let read = |controller: &str, file: &str| {
        std::fs::read_to_string(cgroup_dir(controller, &pod_cgroup).join(file))
            .unwrap_or_else(|e| panic!("{pod_cgroup}/{file}: {e}"))
            .trim()
            .to_string()
    };
    if v2 {
        assert_eq!(read("memory", "memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("cpu", "cpu.max"), "20000 100000");
    } else {
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read("cpu", "cpu.shares"), "102");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "20000");
    }

    // Removing the file stops the pod and leaves nothing behind.
    let started = Instant::now();
    std::fs::remove_file(f.manifests().join("web.yaml")).unwrap();
    f.wait_gone("web-node1", Duration::from_secs(20));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stopped within its grace period"
    );
    assert_eq!(monitors_under(f.dir.path()), 0, "no pod monitor left");
    assert!(
        !cgroup_dir("memory", &pod_cgroup).exists(),
        "pod cgroup removed"
    );
    assert!(
        !f.dir.path().join("agent/pods").join(uid).exists(),
        "pod directory removed"
    );
}

#[test]
fn a_crashing_container_restarts_with_the_kubelets_back_off() {
    require_root();
    let f = Fixture::start();
    f.write_manifest(
        "crash.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: crash}}\nspec:\n  containers:\n  - name: crash\n    image: {}\n    command: [sh, -c, 'echo attempt; exit 3']\n",
            f.image("shell")
        ),
    );
    // Record when each restart count first shows up.
    let mut seen: Vec<(i64, Instant)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 3 && Instant::now() < deadline {
        if let Some(pod) = f.pod("crash-node1") {
            let c = container(&pod, "crash");
            let count = c["restartCount"].as_i64().unwrap_or(-1);
            if c["lastState"]["terminated"]["exitCode"] == 3
                && seen.last().is_none_or(|(n, _)| *n < count)
            {
                seen.push((count, Instant::now()));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        seen.len() >= 3,
        "restarts seen: {:?}\n{}",
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        tail(&f.node.log(), 40)
    );
    let gaps: Vec<f64> = seen
        .windows(2)
        .map(|w| (w[1].1 - w[0].1).as_secs_f64())
        .collect();
    // 10 s, then 20 s (the container itself runs for a moment each time).
    assert!((9.0..13.0).contains(&gaps[0]), "first back-off {gaps:?}");
    assert!((19.0..23.0).contains(&gaps[1]), "second back-off {gaps:?}");
    let pod = f.pod("crash-node1").unwrap();
    assert_eq!(pod["status"]["phase"], "Running");
    let c = container(&pod, "crash");
    assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff", "{c}");
    assert_eq!(c["lastState"]["terminated"]["reason"], "Error");
}

#[test]
fn init_containers_run_in_order_and_restart_policies_end_pods() {
    require_root();
    let f = Fixture::start();
    let shell = f.image("shell");
    // Init containers leave a trace in the shared emptyDir-less way: their exit order shows in
    // their finish times.
    f.write_manifest(
        "init.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: init}}\nspec:\n  initContainers:\n  - {{name: first, image: {shell}, command: [sh, -c, 'sleep 0.3']}}\n  - {{name: second, image: {shell}, command: [sh, -c, 'true']}}\n  containers:\n  - {{name: app, image: {shell}, command: [sh, -c, 'sleep 1000']}}\n"
        ),
    );
    f.write_manifest(
        "done.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: done}}\nspec:\n  restartPolicy: OnFailure\n  containers:\n  - {{name: a, image: {shell}, command: [sh, -c, 'exit 0']}}\n  - {{name: b, image: {shell}, command: [sh, -c, 'sleep 0.2']}}\n"
        ),
    );
    f.write_manifest(
        "failed.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: failed}}\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: a, image: {shell}, command: [sh, -c, 'exit 7']}}\n"
        ),
    );
    f.write_manifest(
        "badinit.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: badinit}}\nspec:\n  restartPolicy: Never\n  initContainers:\n  - {{name: setup, image: {shell}, command: [sh, -c, 'exit 2']}}\n  containers:\n  - {{name: app, image: {shell}, command: [sh, -c, 'sleep 1000']}}\n"
        ),
    );
    let pod = f.wait_pod("init-node1", Duration::from_secs(60), running_and_ready);
    let inits = pod["status"]["initContainerStatuses"].as_array().unwrap();
    let finished = |i: usize| {
        inits[i]["state"]["terminated"]["finishedAt"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let started = |i: usize| {
        inits[i]["state"]["terminated"]["startedAt"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(inits[0]["state"]["terminated"]["reason"], "Completed");
    assert!(
        finished(0) <= started(1),
        "second init started after the first finished: {inits:?}"
    );
    let app_started = container(&pod, "app")["state"]["running"]["startedAt"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(finished(1) <= app_started, "app started after the inits");

    let done = f.wait_pod("done-node1", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(
        container(&done, "a")["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(
        container(&done, "a")["restartCount"],
        0,
        "OnFailure does not restart a success"
    );
    let failed = f.wait_pod("failed-node1", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Failed"
    });
    let a = container(&failed, "a");
    assert_eq!(a["state"]["terminated"]["exitCode"], 7);
    assert_eq!(a["state"]["terminated"]["reason"], "Error");
    let badinit = f.wait_pod("badinit-node1", Duration::from_secs(60), |p| {
        p["status"]["phase"] == "Failed"
    });
    assert!(
        container(&badinit, "app")["state"]["waiting"].is_object(),
        "app never started: {badinit}"
    );
    assert!(!condition(&badinit, "Initialized"));
    // Finished pods stay listed, with their sandboxes stopped.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        container(&f.pod("failed-node1").unwrap(), "a")["restartCount"],
        0
    );
}

#[test]
fn a_sigkilled_node_adopts_its_pods_without_restarting_them() {
    require_root();
    let mut f = Fixture::start();
    f.write_manifest(
        "web.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  containers:\n  - {{name: web, image: {}}}\n",
            f.image("web")
        ),
    );
    let before = f.wait_pod("web-node1", Duration::from_secs(60), running_and_ready);
    let id = container(&before, "web")["containerID"].clone();
    let uid = before["metadata"]["uid"].clone();
    let ip = before["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(page_once_listening(&ip), WEB_PAGE);
    f.node.stop_with("KILL");
    // Still serving with no agent at all.
    assert_eq!(http_get_host(&ip, WEB_PORT, "/").unwrap().1, WEB_PAGE);
    f.node.respawn();
    let after = f.wait_pod("web-node1", Duration::from_secs(60), running_and_ready);
    assert_eq!(after["metadata"]["uid"], uid);
    let web = container(&after, "web");
    assert_eq!(
        web["containerID"],
        id,
        "the same container, adopted\n{}",
        tail(&f.node.log(), 80)
    );
    assert_eq!(web["restartCount"], 0);
    assert_eq!(http_get_host(&ip, WEB_PORT, "/").unwrap().1, WEB_PAGE);
}

/// The web pod's page at `ip`. A pod without a readiness probe is Ready once its container has
/// started, which can be before httpd listens: connections are retried for a while.
fn page_once_listening(ip: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match http_get_host(ip, WEB_PORT, "/") {
            Ok((_, body)) => return body,
            Err(e) if Instant::now() > deadline => panic!("{ip}:{WEB_PORT} never served: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Processes in `cgroup` or any cgroup below it.
fn processes_below(controller: &str, cgroup: &str) -> Vec<u32> {
    fn walk(dir: &Path, out: &mut Vec<u32>) {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&cgroup_dir(controller, cgroup), &mut out);
    out
}

/// The `sleep` process below `cgroup` (a container's process execs its command just after the
/// container counts as started).
fn wait_sleeper(controller: &str, cgroup: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = processes_below(controller, cgroup).into_iter().find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep"))
        });
        match found {
            Some(pid) => return pid,
            None if Instant::now() > deadline => panic!("no sleep process below {cgroup}"),
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn qos_classes_place_pods_in_the_kubelet_cgroup_tree() {
    require_root();
    let f = Fixture::start();
    let shell = f.image("shell");
    f.write_manifest(
        "guaranteed.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: guaranteed}}\nspec:\n  containers:\n  - name: app\n    image: {shell}\n    command: [sleep, '1000']\n    resources: {{limits: {{cpu: 250m, memory: 64Mi}}}}\n"
        ),
    );
    f.write_manifest(
        "besteffort.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: besteffort}}\nspec:\n  containers:\n  - {{name: app, image: {shell}, command: [sleep, '1000']}}\n"
        ),
    );
    let g = f.wait_pod(
        "guaranteed-node1",
        Duration::from_secs(90),
        running_and_ready,
    );
    let b = f.wait_pod(
        "besteffort-node1",
        Duration::from_secs(90),
        running_and_ready,
    );
    assert_eq!(g["status"]["qosClass"], "Guaranteed");
    assert_eq!(b["status"]["qosClass"], "BestEffort");
    let root = f.node.cgroup_root.clone().unwrap();
    let g_cgroup = format!(
        "{root}/kubepods/pod{}",
        g["metadata"]["uid"].as_str().unwrap()
    );
    let b_cgroup = format!(
        "{root}/kubepods/besteffort/pod{}",
        b["metadata"]["uid"].as_str().unwrap()
    );
    let read = |controller: &str, cgroup: &str, file: &str| {
        std::fs::read_to_string(cgroup_dir(controller, cgroup).join(file))
            .unwrap_or_else(|e| panic!("{cgroup}/{file}: {e}"))
            .trim()
            .to_string()
    };
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let weight = |shares: u64| capstan_runtime::cgroups::cpu_shares_to_weight(shares).to_string();
    if v2 {
        assert_eq!(read("cpu", &g_cgroup, "cpu.weight"), weight(256));
        assert_eq!(read("cpu", &g_cgroup, "cpu.max"), "25000 100000");
        assert_eq!(
            read("memory", &g_cgroup, "memory.max"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read("cpu", &b_cgroup, "cpu.weight"), "1");
        assert_eq!(read("memory", &b_cgroup, "memory.max"), "max");
    } else {
        assert_eq!(read("cpu", &g_cgroup, "cpu.shares"), "256");
        assert_eq!(read("cpu", &g_cgroup, "cpu.cfs_quota_us"), "25000");
        assert_eq!(
            read("memory", &g_cgroup, "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read("cpu", &b_cgroup, "cpu.shares"), "2");
    }
    // The containers' processes are inside their pods' cgroups, BestEffort ones first to be
    // OOM-killed.
    let g_procs = processes_below("memory", &g_cgroup);
    let b_procs = processes_below("memory", &b_cgroup);
    assert!(
        !g_procs.is_empty() && !b_procs.is_empty(),
        "{g_procs:?} {b_procs:?}"
    );
    let sleeper = wait_sleeper("memory", &b_cgroup);
    let adj = std::fs::read_to_string(format!("/proc/{sleeper}/oom_score_adj")).unwrap();
    assert_eq!(adj.trim(), "1000");
    // Guaranteed asks for -997; a runtime without CAP_SYS_RESOURCE (this VM withholds it)
    // cannot go below its own value and gives that instead of failing the start.
    let g_sleeper = wait_sleeper("memory", &g_cgroup);
    let g_adj: i32 = std::fs::read_to_string(format!("/proc/{g_sleeper}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        g_adj == -997 || (g_adj == own && own > -997),
        "Guaranteed oom_score_adj {g_adj}, own {own}"
    );
}

#[test]
fn pods_that_do_not_fit_are_rejected_with_the_kubelets_reasons() {
    require_root();
    let f = Fixture::start();
    let shell = f.image("shell");
    f.write_manifest(
        "huge.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: huge}}\nspec:\n  containers:\n  - name: app\n    image: {shell}\n    command: [sleep, '1000']\n    resources: {{requests: {{cpu: '500'}}}}\n"
        ),
    );
    for name in ["a", "b"] {
        f.write_manifest(
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: port-{name}}}\nspec:\n  hostNetwork: true\n  containers:\n  - name: app\n    image: {shell}\n    command: [sleep, '1000']\n    ports: [{{containerPort: 18080, hostPort: 18080}}]\n"
            ),
        );
    }
    let huge = f.wait_pod("huge-node1", Duration::from_secs(30), |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(huge["status"]["reason"], "OutOfcpu");
    assert!(
        huge["status"]["message"]
            .as_str()
            .unwrap()
            .contains("cpu, requested: 500000"),
        "{huge}"
    );
    f.wait_pod("port-a-node1", Duration::from_secs(60), running_and_ready);
    let b = f.wait_pod("port-b-node1", Duration::from_secs(30), |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(b["status"]["reason"], "HostPortConflict");
    // Rejected pods never ran: only port-a has a pod monitor.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(monitors_under(f.dir.path()), 1);
}

fn capstan(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .output()
        .expect("run capstan")
}

#[test]
fn read_only_endpoints_and_the_pods_logs_exec_commands() {
    require_root();
    let f = Fixture::start();
    f.write_manifest(
        "talk.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: talk, namespace: tools}}\nspec:\n  containers:\n  - name: talker\n    image: {}\n    command: [sh, -c, 'echo line one; echo line two >&2; echo line three; sleep 1000']\n",
            f.image("shell")
        ),
    );
    f.wait_pod("talk-node1", Duration::from_secs(60), running_and_ready);
    let address = format!("127.0.0.1:{}", f.port);
    assert_eq!(
        http_get(f.port, "/healthz").unwrap(),
        (200, "ok".to_string())
    );
    assert_eq!(http_get(f.port, "/nothing").unwrap().0, 404);

    let out = capstan(&["pods", "--address", &address]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let row = table
        .lines()
        .find(|l| l.contains("talk-node1"))
        .expect("pod row");
    assert!(
        row.starts_with("tools") && row.contains("1/1") && row.contains("Running"),
        "{table}"
    );

    // The log lines arrive as the container writes them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let out = capstan(&["logs", "talk-node1", "-n", "tools", "--address", &address]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.lines().count() >= 3 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut lines: Vec<&str> = logs.lines().collect();
    lines.sort();
    assert_eq!(lines, ["line one", "line three", "line two"], "{logs}");
    let out = capstan(&[
        "logs",
        "talk-node1",
        "-n",
        "tools",
        "--tail",
        "1",
        "--address",
        &address,
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let out = capstan(&[
        "logs",
        "talk-node1",
        "-n",
        "tools",
        "--previous",
        "--address",
        &address,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("previous terminated container"),
        "{out:?}"
    );
    let out = capstan(&["logs", "nope", "--address", &address]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pod default/nope is not on this node"),
        "{out:?}"
    );

    let endpoint = format!("unix://{}", f.node.socket().display());
    let out = capstan(&[
        "exec",
        "talk-node1",
        "-n",
        "tools",
        "--address",
        &address,
        "--runtime-endpoint",
        &endpoint,
        "--",
        "sh",
        "-c",
        "echo from inside; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from inside\n");

    let (code, metrics) = http_get(f.port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("kubelet_running_pods{phase=\"Running\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kubelet_running_containers{container_state=\"running\"} 1"));
    assert!(metrics.contains("kubelet_pod_start_duration_seconds_count 1"));
    assert!(metrics.contains(
        "kubelet_runtime_operations_duration_seconds_count{operation_type=\"run_pod_sandbox\"} 1"
    ));

    let (code, summary) = http_get(f.port, "/stats/summary").unwrap();
    assert_eq!(code, 200);
    let summary: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["node"]["nodeName"], "node1");
    assert!(
        summary["node"]["memory"]["availableBytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    let pod = &summary["pods"][0];
    assert_eq!(pod["podRef"]["name"], "talk-node1");
    assert_eq!(pod["containers"][0]["name"], "talker");
    assert!(
        pod["memory"]["workingSetBytes"].as_u64().unwrap() > 0,
        "{pod}"
    );
}

fn ready(pod: &Value) -> bool {
    condition(pod, "Ready")
}

#[test]
fn probes_drive_readiness_and_liveness_restarts() {
    require_root();
    let f = Fixture::start();
    f.write_manifest(
        "probed.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: probed}}\nspec:\n  containers:\n  - name: app\n    image: {}\n    command: [sh, -c, 'touch /tmp/alive; sleep 1000']\n    readinessProbe:\n      exec: {{command: [cat, /tmp/ready]}}\n      periodSeconds: 1\n    livenessProbe:\n      exec: {{command: [cat, /tmp/alive]}}\n      periodSeconds: 1\n      failureThreshold: 2\n      terminationGracePeriodSeconds: 1\n    startupProbe:\n      exec: {{command: [cat, /tmp/alive]}}\n      periodSeconds: 1\n",
            f.image("shell")
        ),
    );
    let pod = f.wait_pod("probed-node1", Duration::from_secs(60), |p| {
        container(p, "app")["started"] == true
    });
    assert!(
        !ready(&pod),
        "not ready before its readiness probe passes: {pod}"
    );
    let address = format!("127.0.0.1:{}", f.port);
    let endpoint = format!("unix://{}", f.node.socket().display());
    let exec = |script: &str| {
        let out = capstan(&[
            "exec",
            "probed-node1",
            "--address",
            &address,
            "--runtime-endpoint",
            &endpoint,
            "--",
            "sh",
            "-c",
            script,
        ]);
        assert!(out.status.success(), "{out:?}");
    };
    exec("touch /tmp/ready");
    f.wait_pod("probed-node1", Duration::from_secs(10), ready);
    exec("rm /tmp/ready");
    let pod = f.wait_pod("probed-node1", Duration::from_secs(10), |p| !ready(p));
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(container(&pod, "app")["restartCount"], 0);
    // Liveness fails twice in a row: the container is restarted (first restart at once).
    exec("rm /tmp/alive");
    // The probe-level grace period (1 s) applies, not the pod's 30 s: sh ignores SIGTERM.
    let killed = Instant::now();
    let pod = f.wait_pod("probed-node1", Duration::from_secs(15), |p| {
        container(p, "app")["restartCount"] == 1
    });
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(
        container(&pod, "app")["lastState"]["terminated"]["exitCode"],
        137
    );
    let (code, metrics) = http_get(f.port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("prober_probe_total{probe_type=\"Liveness\",result=\"failed\"}"),
        "{metrics}"
    );
    let _ = pod;
}

#[test]
fn volumes_env_and_hooks_reach_the_containers() {
    require_root();
    let f = Fixture::start();
    let objects = f.dir.path().join("objects");
    std::fs::create_dir_all(&objects).unwrap();
    let host_dir = f.dir.path().join("host-data");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("from-host"), "host file\n").unwrap();
    f.write_manifest(
        "vols.yaml",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: vols, labels: {{tier: backend}}}}
spec:
  terminationGracePeriodSeconds: 3
  initContainers:
  - name: init
    image: {shell}
    command: [sh, -c, 'echo from-init > /shared/note']
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: app
    image: {shell}
    env:
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: GREETING, value: 'hello $(POD_NAME)'}}
    command: [sh, -c, 'echo "$GREETING $POD_IP"; cat /shared/note /host/from-host /labels/labels; echo; trap "" TERM; while true; do sleep 1; done']
    lifecycle:
      preStop:
        exec: {{command: [sh, -c, 'echo stopping > /host/prestop']}}
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
    - {{name: host, mountPath: /host}}
    - {{name: info, mountPath: /labels}}
    - {{name: mem, mountPath: /mem}}
  volumes:
  - {{name: shared, emptyDir: {{}}}}
  - {{name: mem, emptyDir: {{medium: Memory, sizeLimit: 8Mi}}}}
  - {{name: host, hostPath: {{path: {host}, type: Directory}}}}
  - name: info
    downwardAPI:
      items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]
"#,
            shell = f.image("shell"),
            host = host_dir.display()
        ),
    );
    let pod = f.wait_pod("vols-node1", Duration::from_secs(60), running_and_ready);
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    let address = format!("127.0.0.1:{}", f.port);
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let out = capstan(&["logs", "vols-node1", "--address", &address]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("tier") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(log.contains(&format!("hello vols-node1 {ip}")), "{log}");
    assert!(
        log.contains("from-init") && log.contains("host file"),
        "{log}"
    );
    assert!(log.contains("tier=\"backend\""), "{log}");
    // The Memory emptyDir is a tmpfs of the size asked for, below the pod's directory.
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let pod_dir = f.dir.path().join("agent/pods").join(uid);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let tmpfs = mounts
        .lines()
        .find(|l| {
            l.contains(&pod_dir.display().to_string()) && l.contains("mem") && l.contains("tmpfs")
        })
        .unwrap_or_else(|| panic!("no tmpfs for the Memory volume:\n{mounts}"));
    assert!(tmpfs.contains("size=8192k"), "{tmpfs}");

    // preStop runs, then SIGTERM is ignored: the pod goes after its 3 s grace period.
    let started = Instant::now();
    std::fs::remove_file(f.manifests().join("vols.yaml")).unwrap();
    f.wait_gone("vols-node1", Duration::from_secs(20));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(10),
        "took {took:?}"
    );
    assert_eq!(
        std::fs::read_to_string(host_dir.join("prestop")).unwrap(),
        "stopping\n"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&pod_dir.display().to_string()),
        "volume mounts left behind"
    );
    assert!(!pod_dir.exists());
    assert!(
        host_dir.join("from-host").exists(),
        "hostPath contents are the host's"
    );
}

#[test]
fn a_bad_volume_is_reported_and_a_bad_manifest_disturbs_no_one() {
    require_root();
    let f = Fixture::start();
    let shell = f.image("shell");
    f.write_manifest(
        "good.yaml",
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: good}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: app, image: {shell}, command: [sleep, '1000']}}\n"),
    );
    f.write_manifest(
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: bad}\nspec:\n  containers:\n  - {name: app}\n",
    );
    f.write_manifest(
        "nohost.yaml",
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: nohost}}\nspec:\n  containers:\n  - {{name: app, image: {shell}, command: [sleep, '1000']}}\n  volumes:\n  - {{name: data, hostPath: {{path: /nonexistent/capstan-test, type: Directory}}}}\n"),
    );
    let good = f.wait_pod("good-node1", Duration::from_secs(60), running_and_ready);
    let nohost = f.wait_pod("nohost-node1", Duration::from_secs(30), |p| {
        p["status"]["reason"] == "FailedMount"
    });
    let message = nohost["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.volumes[0].hostPath")
            && message.contains("/nonexistent/capstan-test"),
        "{message}"
    );
    assert_eq!(nohost["status"]["phase"], "Pending");
    assert!(
        f.pod("bad-node1").is_none(),
        "an invalid manifest runs nothing"
    );
    let log = f.node.log();
    assert!(
        log.contains("bad.yaml") && log.contains("spec.containers[0].image"),
        "the invalid manifest is reported with file and field:\n{}",
        tail(&log, 30)
    );
    // Editing the good manifest recreates its pod under a new UID.
    let uid = good["metadata"]["uid"].clone();
    f.write_manifest(
        "good.yaml",
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: good, labels: {{edited: 'yes'}}}}\nspec:\n  containers:\n  - {{name: app, image: {shell}, command: [sleep, '1000']}}\n"),
    );
    let edited = f.wait_pod("good-node1", Duration::from_secs(60), |p| {
        p["metadata"]["uid"] != uid && running_and_ready(p)
    });
    assert_eq!(edited["metadata"]["labels"]["edited"], "yes");
    // The old pod goes once it has stopped (which takes longer on a loaded host): one pod
    // remains, never two for good.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let count = f
            .pods()
            .iter()
            .filter(|p| p["metadata"]["name"] == "good-node1")
            .count();
        if count == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} pods named good-node1 30 s after the edit"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn image_gc_removes_unused_images_over_the_threshold_and_keeps_used_ones() {
    require_root();
    // Any real filesystem is fuller than 1 %: collection runs and frees all it may.
    let f = Fixture::start_with_config(Some(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nimageGCHighThresholdPercent: 1\nimageGCLowThresholdPercent: 0\nimageMinimumGCAge: 0s\n",
    ));
    for (file, name, image) in [("a.yaml", "keep", "shell"), ("b.yaml", "drop", "web")] {
        f.write_manifest(
            file,
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: app, image: {}, command: [sleep, '1000']}}\n",
                f.image(image)
            ),
        );
    }
    f.wait_pod("keep-node1", Duration::from_secs(60), running_and_ready);
    f.wait_pod("drop-node1", Duration::from_secs(60), running_and_ready);
    std::fs::remove_file(f.manifests().join("b.yaml")).unwrap();
    f.wait_gone("drop-node1", Duration::from_secs(20));
    let mut cri = f.node.client().await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let tags = loop {
        let images = cri
            .images
            .list_images(capstan_proto::ListImagesRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .images;
        let tags: Vec<String> = images.into_iter().flat_map(|i| i.repo_tags).collect();
        if !tags.iter().any(|t| t.contains("/web:")) || Instant::now() > deadline {
            break tags;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        !tags.iter().any(|t| t.contains("/web:")),
        "the unused image is collected: {tags:?}"
    );
    assert!(
        tags.iter().any(|t| t.contains("/shell:")),
        "the used image stays: {tags:?}"
    );
    assert!(f.node.log().contains("removed unused image"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_drives_containerd_through_its_cri_endpoint() {
    use capstan_testkit::containerd::{ContainerdOptions, ContainerdProcess};
    require_root();
    let registry = LocalRegistry::start().unwrap();
    let images = catalog().unwrap();
    for (name, image) in [("pause", &images.pause), ("web", &images.web)] {
        registry
            .client()
            .push_image(name, "1", image, ManifestFormat::Oci)
            .unwrap();
    }
    let image = |name: &str| format!("{}/{name}:1", registry.host());
    let dir = tempfile::tempdir().unwrap();
    let cni = CniSetup::new(dir.path(), None);
    let containerd = ContainerdProcess::start(
        &dir.path().join("containerd"),
        ContainerdOptions {
            sandbox_image: image("pause"),
            insecure_registry: Some(registry.host()),
            cni_bin_dir: cni.bin_dir.clone(),
            cni_conf_dir: cni.conf_dir.clone(),
        },
    )
    .await
    .unwrap();
    let endpoint = format!("unix://{}", containerd.socket().display());
    let port = free_port();
    let node = RuntimeProcess::start_node(
        dir.path(),
        &cni.toml(),
        port,
        &["--container-runtime-endpoint", &endpoint],
    );
    std::fs::write(
        dir.path().join("manifests/web.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - {{name: web, image: {}}}\n",
            image("web")
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let pod = loop {
        let found = http_get(port, "/pods")
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|list| {
                list["items"]
                    .as_array()
                    .and_then(|items| items.first().cloned())
            });
        if let Some(pod) = found.filter(running_and_ready) {
            break pod;
        }
        assert!(
            Instant::now() < deadline,
            "not Ready through containerd:\nnode:\n{}\ncontainerd:\n{}",
            tail(&node.log(), 40),
            tail(&containerd.log(), 20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let web = container(&pod, "web");
    assert!(
        web["containerID"]
            .as_str()
            .unwrap()
            .starts_with("containerd://"),
        "{web}"
    );
    let ip = pod["status"]["podIP"].as_str().unwrap().to_string();
    assert_eq!(page_once_listening(&ip), WEB_PAGE);
    std::fs::remove_file(dir.path().join("manifests/web.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(port, "/pods").is_ok_and(|(_, body)| body.contains("web-node1")) {
        assert!(
            Instant::now() < deadline,
            "pod not removed through containerd"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(node);
}

#[test]
fn sidecars_start_before_and_stop_after_the_app_containers() {
    require_root();
    let f = Fixture::start();
    let host_dir = f.dir.path().join("order");
    std::fs::create_dir_all(&host_dir).unwrap();
    f.write_manifest(
        "sidecar.yaml",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: sidecar}}
spec:
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: proxy
    image: {shell}
    restartPolicy: Always
    command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 0.1; done']
    lifecycle: {{preStop: {{exec: {{command: [sh, -c, 'echo proxy >> /order/log']}}}}}}
    volumeMounts: [{{name: order, mountPath: /order}}]
  - name: setup
    image: {shell}
    command: [sh, -c, 'true']
  containers:
  - name: app
    image: {shell}
    command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 0.1; done']
    lifecycle: {{preStop: {{exec: {{command: [sh, -c, 'echo app >> /order/log']}}}}}}
    volumeMounts: [{{name: order, mountPath: /order}}]
  volumes:
  - {{name: order, hostPath: {{path: {host}}}}}
"#,
            shell = f.image("shell"),
            host = host_dir.display()
        ),
    );
    let pod = f.wait_pod("sidecar-node1", Duration::from_secs(60), running_and_ready);
    let inits = pod["status"]["initContainerStatuses"].as_array().unwrap();
    let proxy = inits.iter().find(|c| c["name"] == "proxy").unwrap();
    let setup = inits.iter().find(|c| c["name"] == "setup").unwrap();
    assert!(
        proxy["state"]["running"].is_object(),
        "the sidecar keeps running: {proxy}"
    );
    assert_eq!(setup["state"]["terminated"]["reason"], "Completed");
    let proxy_started = proxy["state"]["running"]["startedAt"].as_str().unwrap();
    let setup_started = setup["state"]["terminated"]["startedAt"].as_str().unwrap();
    let app_started = container(&pod, "app")["state"]["running"]["startedAt"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(proxy_started <= setup_started && setup_started <= app_started.as_str());
    std::fs::remove_file(f.manifests().join("sidecar.yaml")).unwrap();
    f.wait_gone("sidecar-node1", Duration::from_secs(20));
    let order = std::fs::read_to_string(host_dir.join("log")).unwrap();
    assert_eq!(order, "app\nproxy\n", "the sidecar stops after the app");
}

/// Serves UDP on `port` inside the network namespace of process `pid`, answering each datagram
/// with `pod:` and its text. The test images have no UDP server, so the test plays the pod's.
fn serve_udp_in_netns_of(pid: u32, port: u16) {
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // The thread stays in the pod's namespace; it ends with the test process.
    std::thread::spawn(move || {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = std::net::UdpSocket::bind(("0.0.0.0", port)).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 256];
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            let mut answer = b"pod:".to_vec();
            answer.extend_from_slice(&buf[..len]);
            let _ = socket.send_to(&answer, from);
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

/// Sends `text` to the host's `port` over UDP; the answer, if one comes within a second.
fn udp_ask(port: u16, text: &str) -> Option<String> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    socket.send_to(text.as_bytes(), ("127.0.0.1", port)).ok()?;
    let mut buf = [0u8; 256];
    let len = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..len]).to_string())
}

#[test]
fn a_host_port_reaches_the_pod_without_netfilter() {
    require_root();
    let f = Fixture::start();
    let host_port = free_port();
    let udp_host_port = free_port();
    f.write_manifest(
        "hp.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: hp}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: {}\n    ports:\n    - {{containerPort: 8080, hostPort: {host_port}}}\n    - {{containerPort: 5353, hostPort: {udp_host_port}, protocol: UDP}}\n",
            f.image("web")
        ),
    );
    let pod = f.wait_pod("hp-node1", Duration::from_secs(60), running_and_ready);
    // Ready without a probe: httpd may not listen yet, so the relayed request is retried.
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        match http_get(host_port, "/") {
            Ok((200, body)) => break body,
            _ if Instant::now() > deadline => panic!("the host port never served the page"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(page, WEB_PAGE);

    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let root = f.node.cgroup_root.clone().unwrap();
    let pod_cgroup = format!("{root}/kubepods/besteffort/pod{uid}");
    let web_pid = *processes_below("memory", &pod_cgroup)
        .first()
        .expect("the web container's process");
    serve_udp_in_netns_of(web_pid, 5353);
    // The first datagram may race the pod's socket; a client retries, as UDP clients do.
    let answer = (0..5).find_map(|_| udp_ask(udp_host_port, "ping"));
    assert_eq!(answer.as_deref(), Some("pod:ping"), "{}", f.node.log());

    std::fs::remove_file(f.manifests().join("hp.yaml")).unwrap();
    f.wait_gone("hp-node1", Duration::from_secs(20));
    assert!(
        http_get(host_port, "/").is_err(),
        "the host port is released with the pod"
    );
    std::net::UdpSocket::bind(("0.0.0.0", udp_host_port))
        .expect("the UDP host port is released with the pod");
}

#[test]
fn memory_qos_sets_memory_min_and_high_on_cgroup_v2() {
    require_root();
    let f = Fixture::start_with_config(Some(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nfeatureGates: {MemoryQoS: true}\nmemoryThrottlingFactor: 0.5\n",
    ));
    f.write_manifest(
        "mq.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: mq}}\nspec:\n  containers:\n  - name: app\n    image: {}\n    command: [sleep, '1000']\n    resources: {{requests: {{memory: 32Mi}}, limits: {{memory: 64Mi}}}}\n",
            f.image("shell")
        ),
    );
    let pod = f.wait_pod("mq-node1", Duration::from_secs(90), running_and_ready);
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    let id = container(&pod, "app")["containerID"]
        .as_str()
        .unwrap()
        .trim_start_matches("capstan://")
        .to_string();
    let root = f.node.cgroup_root.clone().unwrap();
    let pod_cgroup = format!("{root}/kubepods/burstable/pod{uid}");
    let container_cgroup = format!("{pod_cgroup}/{id}");
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let read = |cgroup: &str, file: &str| {
            std::fs::read_to_string(cgroup_dir("memory", cgroup).join(file))
                .unwrap_or_else(|e| panic!("{cgroup}/{file}: {e}"))
                .trim()
                .to_string()
        };
        assert_eq!(read(&pod_cgroup, "memory.min"), (32u64 << 20).to_string());
        assert_eq!(
            read(&container_cgroup, "memory.min"),
            (32u64 << 20).to_string()
        );
        // 32Mi + 0.5 × (64Mi − 32Mi) = 48Mi.
        assert_eq!(
            read(&container_cgroup, "memory.high"),
            (48u64 << 20).to_string()
        );
        assert_eq!(
            read(&container_cgroup, "memory.max"),
            (64u64 << 20).to_string()
        );
    } else {
        assert!(
            f.node.log().contains("MemoryQoS needs cgroup v2"),
            "{}",
            tail(&f.node.log(), 20)
        );
        assert!(cgroup_dir("memory", &container_cgroup).exists());
    }
}

#[test]
fn containers_of_a_pod_sharing_its_process_namespace_see_each_other() {
    require_root();
    let f = Fixture::start();
    let shell = f.image("shell");
    let script: String = [
        r#"list() { for p in /proc/[0-9]*; do echo "$(tr '\0' ' ' < $p/cmdline)"; done; }"#,
        "until list | grep -q '^sleep 3333'; do sleep 0.2; done",
        "list",
        "exec sleep 3334",
    ]
    .iter()
    .map(|line| format!("      {line}\n"))
    .collect();
    f.write_manifest(
        "share.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: share}}\nspec:\n  shareProcessNamespace: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: a\n    image: {shell}\n    command: [sleep, '3333']\n  - name: b\n    image: {shell}\n    command:\n    - sh\n    - -c\n    - |\n{script}"
        ),
    );
    f.wait_pod("share-node1", Duration::from_secs(60), running_and_ready);
    let deadline = Instant::now() + Duration::from_secs(15);
    let logs = loop {
        let (_, logs) = http_get(f.port, "/containerLogs/default/share-node1/b").unwrap();
        if logs.contains("sleep 3333") || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        logs.contains("sleep 3333"),
        "b does not see a's process:\n{logs}"
    );
    std::fs::remove_file(f.manifests().join("share.yaml")).unwrap();
    f.wait_gone("share-node1", Duration::from_secs(20));
}

/// Every file below `dir`, recursively.
fn files_below(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                files_below(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[test]
fn container_log_max_size_and_files_of_the_kubelet_config_rotate_pod_logs() {
    require_root();
    let f = Fixture::start_with_config(Some(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncontainerLogMaxSize: 2Ki\ncontainerLogMaxFiles: 2\n",
    ));
    f.write_manifest(
        "chatty.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: chatty}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {}\n    command: [sh, -c, 'i=0; while [ $i -lt 300 ]; do echo \"line $i padding-padding-padding-padding\"; i=$((i+1)); done; echo last-line; sleep 1000']\n",
            f.image("shell")
        ),
    );
    f.wait_pod("chatty-node1", Duration::from_secs(60), running_and_ready);
    let logs_dir = f.dir.path().join("logs");
    let deadline = Instant::now() + Duration::from_secs(15);
    let files = loop {
        let files: Vec<_> = files_below(&logs_dir)
            .into_iter()
            .filter(|p| p.display().to_string().contains("chatty"))
            .collect();
        let done = files
            .iter()
            .any(|p| std::fs::read_to_string(p).is_ok_and(|text| text.contains(" F last-line")));
        if done || Instant::now() > deadline {
            break files;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut names: Vec<String> = files
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["0.log", "0.log.1"],
        "containerLogMaxFiles: 2 keeps the live file and one rotated file: {files:?}\n{}",
        tail(&f.node.log(), 30)
    );
    for file in &files {
        let size = std::fs::metadata(file).unwrap().len();
        assert!(
            size <= 2048,
            "{} has {size} bytes, over containerLogMaxSize",
            file.display()
        );
    }
    let live = files.iter().find(|p| p.ends_with("0.log")).unwrap();
    assert!(
        std::fs::read_to_string(live)
            .unwrap()
            .contains(" F last-line")
    );
    std::fs::remove_file(f.manifests().join("chatty.yaml")).unwrap();
    f.wait_gone("chatty-node1", Duration::from_secs(20));
}

//! Pod sandboxes through CRI on the real binary: a monitor per pod holding its namespaces, CNI
//! networking with Capstan's bridge plugin, idempotent stop and remove that leave nothing
//! behind, and sandboxes that survive a SIGKILL of the daemon.

mod common;

use std::collections::HashMap;

use capstan_proto::{
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata, PodSandboxState,
    RemovePodSandboxRequest, StatusRequest, StopPodSandboxRequest,
};
use capstan_testkit::mounts::mounted_under;
use capstan_testkit::require_root;
use common::{CniSetup, RuntimeProcess, run_pod, sandbox_status};
use tonic::Code;

fn pod(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: name.into(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        ..Default::default()
    }
}

fn ipam_allocations(setup: &CniSetup) -> usize {
    walk(&setup.ipam_dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("10.199."))
        })
        .count()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_lifecycle_networks_the_pod_and_leaves_nothing_behind() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cni = CniSetup::new(dir.path(), None);
    let runtime = RuntimeProcess::start(dir.path(), &cni.toml());
    let mut cri = runtime.client().await;

    let status = cri
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let network = status
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(network.status, "network not ready: {}", network.message);
    // crictl info: the network config in force and how loading it went.
    assert_eq!(status.info["lastCNILoadStatus"], "OK");
    let cni_config: serde_json::Value = serde_json::from_str(&status.info["cniconfig"]).unwrap();
    assert_eq!(
        cni_config["list"]["plugins"][0]["bridge"],
        cni.bridge.as_str()
    );

    let id = run_pod(&mut cri, pod("web"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", runtime.log()));
    let status = sandbox_status(&mut cri, &id.clone()).await.unwrap();
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    let ip = status.network.unwrap().ip;
    assert!(
        ip.starts_with(&cni.prefix),
        "pod IP {ip} not from {}",
        cni.prefix
    );

    let netns = dir.path().join("run/pods").join(&id[..16]).join("ns/net");
    let inside = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-o", "addr"])
        .output()
        .unwrap();
    let inside = String::from_utf8_lossy(&inside.stdout);
    assert!(
        inside.contains(&format!("inet {ip}/24")),
        "eth0 lacks {ip}:\n{inside}"
    );
    let ping = std::process::Command::new("ping")
        .args(["-c1", "-W2", &ip])
        .output();
    if let Ok(ping) = ping {
        assert!(
            ping.status.success(),
            "the host cannot reach the pod at {ip}"
        );
    }
    assert_eq!(ipam_allocations(&cni), 1);
    assert_eq!(
        host_state(dir.path(), &cni).1,
        1,
        "the pod's veth is on the bridge"
    );

    // The same pod again is refused; a pod without a name is refused naming the field.
    let error = run_pod(&mut cri, pod("web")).await.unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists, "{}", error.message());
    let mut nameless = pod("x");
    nameless.metadata.as_mut().unwrap().name.clear();
    let error = run_pod(&mut cri, nameless).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("config.metadata.name"),
        "{}",
        error.message()
    );

    let listed = cri
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: HashMap::from([("app".to_string(), "web".to_string())]),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );

    for _ in 0..2 {
        cri.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap();
    }
    assert_eq!(
        ipam_allocations(&cni),
        0,
        "StopPodSandbox must release the IP"
    );
    for _ in 0..2 {
        cri.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap();
    }
    let error = sandbox_status(&mut cri, &id.clone()).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert!(
        mounted_under(dir.path()).is_empty(),
        "mounts left: {:?}",
        mounted_under(dir.path())
    );
    assert!(!dir.path().join("run/pods").join(&id[..16]).exists());
    assert!(!dir.path().join("state/pods").join(&id).exists());
    // The pod's veth is gone from the bridge (links of tests running alongside are not ours
    // to count).
    assert_eq!(
        host_state(dir.path(), &cni).1,
        0,
        "the pod's veth is still on the bridge"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_network_leaves_no_sandbox_debris() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cni = CniSetup::new(dir.path(), Some("not-a-subnet"));
    let runtime = RuntimeProcess::start(dir.path(), &cni.toml());
    let mut cri = runtime.client().await;
    let error = run_pod(&mut cri, pod("broken")).await.unwrap_err();
    assert!(
        error.message().contains("subnet"),
        "the plugin's reason must reach the caller: {}",
        error.message()
    );
    let listed = cri
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(listed.is_empty());
    assert!(
        mounted_under(dir.path()).is_empty(),
        "mounts left: {:?}",
        mounted_under(dir.path())
    );
    let pods = std::fs::read_dir(dir.path().join("run/pods"))
        .unwrap()
        .count();
    assert_eq!(pods, 0, "pod run directories left");
    let monitors = std::process::Command::new("pgrep")
        .args(["-f", &format!("monitor --run-dir {}", dir.path().display())])
        .output()
        .unwrap();
    assert!(monitors.stdout.is_empty(), "a pod monitor is still running");
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_survive_a_sigkill_of_the_runtime() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cni = CniSetup::new(dir.path(), None);
    let mut runtime = RuntimeProcess::start(dir.path(), &cni.toml());
    let mut cri = runtime.client().await;
    let id = run_pod(&mut cri, pod("durable")).await.unwrap();
    drop(cri);
    runtime.stop_with("KILL");

    let runtime = RuntimeProcess::start(dir.path(), &cni.toml());
    let mut cri = runtime.client().await;
    let status = sandbox_status(&mut cri, &id.clone()).await.unwrap();
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    let netns = dir.path().join("run/pods").join(&id[..16]).join("ns/net");
    assert_eq!(
        mounted_under(&netns).len(),
        1,
        "the pod's network namespace must still be pinned"
    );
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    assert!(mounted_under(dir.path()).is_empty());
    assert_eq!(ipam_allocations(&cni), 0);
}

/// What this test's pods hold on the host, scoped so that tests running in parallel do not
/// disturb the count: mounts under the test's directory, ports of its own bridge, its IPAM
/// allocations.
fn host_state(dir: &std::path::Path, setup: &CniSetup) -> (usize, usize, usize) {
    let mounts = mounted_under(dir).len();
    let ports = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", &setup.bridge])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0);
    (mounts, ports, ipam_allocations(setup))
}

/// Whether any cgroup directory of the given pods still exists, in any hierarchy.
fn pod_cgroups_left(runtime: &RuntimeProcess, ids: &[String]) -> Vec<String> {
    let pods_cgroup = runtime.pods_cgroup();
    let hierarchies = [
        "memory", "cpu", "pids", "cpuset", "blkio", "devices", "freezer", "",
    ];
    let mut left = Vec::new();
    for id in ids {
        for hierarchy in hierarchies {
            let dir = std::path::Path::new("/sys/fs/cgroup")
                .join(hierarchy)
                .join(pods_cgroup.trim_start_matches('/'))
                .join(format!("pod-{}", &id[..12]));
            if dir.exists() {
                left.push(dir.display().to_string());
            }
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_sandbox_cycles_leak_nothing() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cni = CniSetup::new(dir.path(), None);
    let runtime = RuntimeProcess::start(dir.path(), &cni.toml());
    let mut cri = runtime.client().await;
    // One pod first, so the bridge (which outlives pods by design) exists in both counts.
    let warm = run_pod(&mut cri, pod("warm-up")).await.unwrap();
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: warm,
        })
        .await
        .unwrap();
    let before = host_state(dir.path(), &cni);
    let mut ids = Vec::new();

    for cycle in 0..100 {
        let id = run_pod(&mut cri, pod(&format!("cycle-{cycle}")))
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        ids.push(id.clone());
        cri.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
    }

    let after = host_state(dir.path(), &cni);
    assert_eq!(
        (before.0, after.0),
        (0, 0),
        "mounts (netns pins, rootfs) left"
    );
    assert_eq!((before.1, after.1), (0, 0), "veths left on the bridge");
    assert_eq!((before.2, after.2), (0, 0), "IP allocations left");
    assert!(
        pod_cgroups_left(&runtime, &ids).is_empty(),
        "pod cgroups left: {:?}",
        pod_cgroups_left(&runtime, &ids)
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("run/pods"))
            .unwrap()
            .count(),
        0,
        "pod run dirs left"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/pods"))
            .unwrap()
            .count(),
        0,
        "pod state dirs left"
    );
    let monitors = std::process::Command::new("pgrep")
        .args(["-f", &format!("monitor --run-dir {}", dir.path().display())])
        .output()
        .unwrap();
    assert!(monitors.stdout.is_empty(), "pod monitors left running");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_sweeps_debris_and_notices_dead_monitors() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cni = CniSetup::new(dir.path(), None);
    let mut runtime = RuntimeProcess::start(dir.path(), &cni.toml());
    let mut cri = runtime.client().await;
    let id = run_pod(&mut cri, pod("orphaned")).await.unwrap();
    drop(cri);
    runtime.stop_with("KILL");
    // While the runtime is down, its pod monitor dies, and a crash left a pinned namespace of a
    // pod that never got a record.
    let monitor = format!(
        "monitor --run-dir {}",
        dir.path().join("run/pods").join(&id[..16]).display()
    );
    std::process::Command::new("pkill")
        .args(["-KILL", "-f", &monitor])
        .status()
        .unwrap();
    let stray = dir.path().join("run/pods/strayfeed");
    std::fs::create_dir_all(stray.join("ns")).unwrap();
    std::fs::File::create(stray.join("ns/net")).unwrap();
    let ns = capstan_testkit::netns::NetNs::new("swp").unwrap();
    nix::mount::mount(
        Some(ns.path()),
        &stray.join("ns/net"),
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();

    let runtime = RuntimeProcess::start(dir.path(), &cni.toml());
    let mut cri = runtime.client().await;
    assert!(
        !stray.exists(),
        "the stray pod directory was not swept:\n{}",
        runtime.log()
    );
    assert!(mounted_under(&stray).is_empty());
    assert!(
        runtime.log().contains("swept a pod run directory"),
        "sweeps must be logged"
    );
    let status = sandbox_status(&mut cri, &id.clone()).await.unwrap();
    assert_eq!(
        status.state,
        PodSandboxState::SandboxNotready as i32,
        "a sandbox without its monitor is not ready"
    );
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    assert!(
        mounted_under(dir.path()).is_empty(),
        "{:?}",
        mounted_under(dir.path())
    );
    assert_eq!(
        ipam_allocations(&cni),
        0,
        "removing the dead pod must still release its IP"
    );
}

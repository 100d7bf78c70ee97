//! CNI interoperability both ways, with real peers: Capstan's bridge + host-local + loopback
//! under Debian's containerd 1.6 (+ runc), and Debian's reference plugins
//! (containernetworking-plugins) under Capstan's runtime. Pods get addresses from the configured
//! range, reach each other or the host, and removal leaves no veth, IPAM allocation or mount.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use capstan_proto::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatusRequest, PullImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};
use capstan_testkit::cgroups::TestCgroup;
use capstan_testkit::containerd::{ContainerdOptions, ContainerdProcess};
use capstan_testkit::cri::CriClient;
use capstan_testkit::images::{ManifestFormat, WEB_PAGE, WEB_PORT, catalog};
use capstan_testkit::mounts::mounted_under;
use capstan_testkit::registry::LocalRegistry;
use capstan_testkit::require_root;
use common::{CniSetup, RuntimeProcess};

/// Where Debian installs the reference plugins.
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

fn pod_config(name: &str, logs: &Path, cgroup_parent: Option<&str>) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "interop".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.join(name).display().to_string(),
        linux: cgroup_parent.map(|parent| LinuxPodSandboxConfig {
            cgroup_parent: parent.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: HashMap::from([("name".to_string(), name.to_string())]),
        ..Default::default()
    }
}

async fn pull(cri: &mut CriClient, image: &str) {
    cri.images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("pull {image}: {e}"));
}

async fn run_pod(
    cri: &mut CriClient,
    config: PodSandboxConfig,
    log: impl Fn() -> String,
) -> String {
    cri.runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", log()))
        .into_inner()
        .pod_sandbox_id
}

async fn run_container(
    cri: &mut CriClient,
    pod: &str,
    sandbox: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    let id = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(sandbox.clone()),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}"))
        .into_inner()
        .container_id;
    cri.runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}"));
    id
}

async fn pod_ip(cri: &mut CriClient, pod: &str) -> String {
    cri.runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default()
}

async fn wait_exited(cri: &mut CriClient, id: &str) -> capstan_proto::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cri
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if status.state == ContainerState::ContainerExited as i32 {
            return status;
        }
        assert!(Instant::now() < deadline, "container {id} did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn remove_pod(cri: &mut CriClient, pod: &str) {
    cri.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}"));
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}"));
}

/// Links enslaved to `bridge`: one veth per attached pod.
fn bridge_ports(bridge: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .expect("ip link show master");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(str::to_string))
        .collect()
}

/// host-local records each allocation as a file named by the address, in any network's
/// directory under the data dir.
fn ipam_allocations(data_dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(networks) = std::fs::read_dir(data_dir) else {
        return found;
    };
    for network in networks.flatten() {
        for entry in std::fs::read_dir(network.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                found.push(entry.path());
            }
        }
    }
    found
}

fn assert_nothing_left(cni: &CniSetup, dir: &Path) {
    assert_eq!(
        bridge_ports(&cni.bridge),
        Vec::<String>::new(),
        "veths left"
    );
    assert_eq!(
        ipam_allocations(&cni.ipam_dir),
        Vec::<PathBuf>::new(),
        "IPAM allocations left"
    );
    assert_eq!(mounted_under(dir), Vec::<PathBuf>::new(), "mounts left");
}

#[tokio::test(flavor = "multi_thread")]
async fn capstan_plugins_network_pods_under_containerd() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    let images = catalog().unwrap();
    for (name, image) in [
        ("pause", &images.pause),
        ("web", &images.web),
        ("shell", &images.shell),
    ] {
        registry
            .client()
            .push_image(name, "1", image, ManifestFormat::Oci)
            .unwrap();
    }
    let image = |name: &str| format!("{}/{name}:1", registry.host());
    let dir = tempfile::tempdir().unwrap();
    // Our plugins: symlinks named bridge, host-local and loopback to the capstan binary.
    let cni = CniSetup::new(dir.path(), None);
    for plugin in ["bridge", "host-local", "loopback"] {
        assert_eq!(
            std::fs::read_link(cni.bin_dir.join(plugin)).unwrap(),
            Path::new(env!("CARGO_BIN_EXE_capstan"))
        );
    }
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
    let log = || containerd.log();
    let mut cri = containerd.client().await.unwrap();
    pull(&mut cri, &image("web")).await;
    pull(&mut cri, &image("shell")).await;
    let logs = dir.path().join("logs");

    let server_config = pod_config("server", &logs, Some(containerd.cgroup_parent()));
    let server = run_pod(&mut cri, server_config.clone(), log).await;
    run_container(
        &mut cri,
        &server,
        &server_config,
        container("web", &image("web"), &[]),
    )
    .await;
    let server_ip = pod_ip(&mut cri, &server).await;

    let client_config = pod_config("client", &logs, Some(containerd.cgroup_parent()));
    let client = run_pod(&mut cri, client_config.clone(), log).await;
    let client_ip = pod_ip(&mut cri, &client).await;
    for ip in [&server_ip, &client_ip] {
        assert!(
            ip.starts_with(&cni.prefix),
            "pod address {ip:?} not from our host-local range {}0/24",
            cni.prefix
        );
    }
    assert_ne!(server_ip, client_ip);
    assert_eq!(
        bridge_ports(&cni.bridge).len(),
        2,
        "one veth per pod on our bridge"
    );
    assert_eq!(ipam_allocations(&cni.ipam_dir).len(), 2);

    let fetch = format!(
        "for i in $(seq 1 100); do wget -q -O - http://{server_ip}:{WEB_PORT}/ && exit 0; sleep 0.1; done; exit 1"
    );
    let wget = run_container(
        &mut cri,
        &client,
        &client_config,
        container("wget", &image("shell"), &["sh", "-c", &fetch]),
    )
    .await;
    let ended = wait_exited(&mut cri, &wget).await;
    assert_eq!(
        ended.exit_code,
        0,
        "pod {client_ip} could not fetch from pod {server_ip}\n{}",
        log()
    );
    let output = std::fs::read_to_string(&ended.log_path).unwrap_or_default();
    assert!(
        output.contains(WEB_PAGE.trim_end()),
        "the page in the client's log: {output}"
    );

    remove_pod(&mut cri, &client).await;
    remove_pod(&mut cri, &server).await;
    assert_nothing_left(&cni, dir.path());
    drop(cri);
    drop(containerd);
    assert_eq!(mounted_under(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn reference_plugins_network_pods_under_capstan() {
    require_root();
    for plugin in ["bridge", "host-local", "loopback"] {
        assert!(
            Path::new(REFERENCE_PLUGINS).join(plugin).exists(),
            "Debian's containernetworking-plugins are missing (hack/deps.sh test installs them)"
        );
    }
    let registry = LocalRegistry::start().unwrap();
    registry
        .client()
        .push_image("web", "1", &catalog().unwrap().web, ManifestFormat::Oci)
        .unwrap();
    let image = format!("{}/web:1", registry.host());
    let dir = tempfile::tempdir().unwrap();
    // Our conflist (bridge, host-local with its data dir here, loopback), but only the
    // reference plugins on the runtime's plugin path.
    let cni = CniSetup::new(dir.path(), None);
    let config = format!(
        "[registry]\ninsecure = [\"{}\"]\n[cni]\nconf_dir = \"{}\"\nbin_dirs = [\"{REFERENCE_PLUGINS}\"]\n",
        registry.host(),
        cni.conf_dir.display()
    );
    let runtime = RuntimeProcess::start(dir.path(), &config);
    let mut cri = runtime.client().await;
    pull(&mut cri, &image).await;

    let logs = dir.path().join("logs");
    // A guarded parent, so the pod's cgroups go with the test whatever happens.
    let pods_cgroup = TestCgroup::new().unwrap();
    pods_cgroup.delegate_to_children();
    let sandbox = pod_config("served", &logs, Some(pods_cgroup.path()));
    let pod = run_pod(&mut cri, sandbox.clone(), || runtime.log()).await;
    let ip = pod_ip(&mut cri, &pod).await;
    assert!(
        ip.starts_with(&cni.prefix),
        "pod address {ip:?} not from the reference host-local's range {}0/24",
        cni.prefix
    );
    assert_eq!(
        bridge_ports(&cni.bridge).len(),
        1,
        "the reference bridge's veth"
    );
    assert_eq!(ipam_allocations(&cni.ipam_dir).len(), 1);
    run_container(&mut cri, &pod, &sandbox, container("web", &image, &[])).await;

    // The host reaches the pod through the reference bridge (its gateway address).
    let deadline = Instant::now() + Duration::from_secs(10);
    let response = loop {
        let attempt = std::net::TcpStream::connect((ip.as_str(), WEB_PORT)).and_then(|mut s| {
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut response = String::new();
            s.read_to_string(&mut response)?;
            Ok(response)
        });
        match attempt {
            Ok(response) => break response,
            Err(e) if Instant::now() > deadline => panic!("{ip}:{WEB_PORT}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(response.ends_with(WEB_PAGE), "{response}");

    remove_pod(&mut cri, &pod).await;
    assert_nothing_left(&cni, dir.path());
}

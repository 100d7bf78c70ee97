//! The runtime as a CNI runtime, through CRI on the real binary: plugins' VERSION gates a
//! config, STATUS drives NetworkReady, CHECK runs for adopted pods after a restart, GC releases
//! what no sandbox owns, and UpdateRuntimeConfig renders the network config from a template.

mod common;

use std::path::{Path, PathBuf};

use capstan_proto::{
    ListPodSandboxRequest, NetworkConfig, PodSandboxConfig, PodSandboxMetadata, PodSandboxState,
    RemovePodSandboxRequest, RuntimeCondition, RuntimeConfig, StatusRequest,
    UpdateRuntimeConfigRequest,
};
use capstan_testkit::cri::CriClient;
use capstan_testkit::mounts::mounted_under;
use capstan_testkit::require_root;
use common::{CniSetup, RuntimeProcess, run_pod, sandbox_status};
use serde_json::{Value, json};
use tonic::Code;

const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

fn pod(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        hostname: name.into(),
        ..Default::default()
    }
}

/// The setup's conflist, as JSON.
fn conflist(cni: &CniSetup) -> Value {
    let text = std::fs::read_to_string(cni.conf_dir.join("10-test.conflist")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Rewrites the setup's conflist with `edit` applied.
fn edit_conflist(cni: &CniSetup, edit: impl FnOnce(&mut Value)) {
    let mut list = conflist(cni);
    edit(&mut list);
    std::fs::write(cni.conf_dir.join("10-test.conflist"), list.to_string()).unwrap();
}

/// A setup whose conflist says cniVersion 1.1.0 (STATUS and GC).
fn setup_1_1(dir: &Path) -> CniSetup {
    let cni = CniSetup::new(dir, None);
    edit_conflist(&cni, |l| l["cniVersion"] = json!("1.1.0"));
    cni
}

async fn network_condition(cri: &mut CriClient) -> RuntimeCondition {
    let status = cri
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    status
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("a NetworkReady condition")
}

async fn remove(cri: &mut CriClient, id: &str) {
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        })
        .await
        .unwrap();
}

/// host-local's allocations in the setup's store: (address, holder's container ID).
fn allocations(cni: &CniSetup) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for network in std::fs::read_dir(&cni.ipam_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        for entry in std::fs::read_dir(network.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                let holder = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let id = holder.lines().next().unwrap_or_default().trim().to_string();
                found.push((name, id));
            }
        }
    }
    found
}

/// The runtime's CNI result cache entries.
fn cache_entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join("state/cni/results"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Ports on the setup's bridge (one veth per networked pod).
fn bridge_ports(cni: &CniSetup) -> usize {
    std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", &cni.bridge])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0)
}

fn pod_netns(dir: &Path, id: &str) -> PathBuf {
    dir.join("run/pods").join(&id[..16]).join("ns/net")
}

/// Kills the pod monitor of sandbox `id` (its network namespace goes with it).
fn kill_monitor(dir: &Path, id: &str) {
    let monitor = format!(
        "monitor --run-dir {}",
        dir.join("run/pods").join(&id[..16]).display()
    );
    std::process::Command::new("pkill")
        .args(["-KILL", "-f", &monitor])
        .status()
        .unwrap();
}

/// Removes the pod cgroup of a sandbox the runtime was made to forget (its Drop cleanup only
/// knows the pods it still has directories for).
fn remove_pod_cgroup(runtime: &RuntimeProcess, id: &str) {
    let relative = format!(
        "{}/pod-{}",
        runtime.pods_cgroup().trim_start_matches('/'),
        &id[..12]
    );
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path()));
    }
    for root in roots {
        let _ = capstan_testkit::cgroups::remove_tree(&root.join(&relative));
    }
}

/// The log lines of the runtime (colours removed) that contain every one of `needles`.
fn log_lines(runtime: &RuntimeProcess, needles: &[&str]) -> Vec<String> {
    runtime
        .log()
        .lines()
        .map(without_colours)
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

/// `line` without ANSI SGR sequences (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_without_the_config_version_is_refused() {
    require_root();
    assert!(
        Path::new(REFERENCE_PLUGINS).join("bridge").exists(),
        "Debian's containernetworking-plugins are missing (hack/deps.sh test installs them)"
    );
    let dir = tempfile::tempdir().unwrap();
    // Debian's plugins stop at spec 1.0.0; the list asks for 1.1.0.
    let cni = setup_1_1(dir.path());
    let config = format!(
        "[cni]\nconf_dir = \"{}\"\nbin_dirs = [\"{REFERENCE_PLUGINS}\"]\n",
        cni.conf_dir.display()
    );
    let runtime = RuntimeProcess::start(dir.path(), &config);
    let mut cri = runtime.client().await;
    let network = network_condition(&mut cri).await;
    assert!(!network.status, "{network:?}");
    assert_eq!(network.reason, "NetworkPluginNotReady");
    let file = cni.conf_dir.join("10-test.conflist");
    for part in [
        "CNI plugin bridge",
        "/usr/lib/cni/bridge",
        "0.4.0, 1.0.0",
        "not 1.1.0",
        &file.display().to_string(),
    ] {
        assert!(
            network.message.contains(part),
            "{part:?} missing from {:?}",
            network.message
        );
    }

    let error = run_pod(&mut cri, pod("refused")).await.unwrap_err();
    assert!(
        error
            .message()
            .contains("CNI plugin bridge (/usr/lib/cni/bridge)")
            && error.message().contains("not 1.1.0"),
        "{}",
        error.message()
    );
    let listed = cri
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(listed.is_empty(), "{listed:?}");
    assert!(mounted_under(dir.path()).is_empty());
    let pods = std::fs::read_dir(dir.path().join("run/pods"))
        .unwrap()
        .count();
    assert_eq!(pods, 0, "pod run directories left");
    assert!(
        !common::host_links().contains(&cni.bridge),
        "no plugin may have run ADD"
    );
    assert!(allocations(&cni).is_empty());
    assert!(cache_entries(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn network_readiness_follows_the_plugins_status() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cni = setup_1_1(dir.path());
    // A range of one address: one pod fills it, and host-local's STATUS says so.
    let only = format!("{}10", cni.prefix);
    edit_conflist(&cni, |l| {
        let range = &mut l["plugins"][0]["ipam"]["ranges"][0][0];
        range["rangeStart"] = json!(only);
        range["rangeEnd"] = json!(only);
    });
    let runtime = RuntimeProcess::start(dir.path(), &cni.toml());
    let mut cri = runtime.client().await;
    let network = network_condition(&mut cri).await;
    assert!(network.status, "{network:?}");

    let id = run_pod(&mut cri, pod("filler")).await.unwrap();
    let network = network_condition(&mut cri).await;
    assert!(
        !network.status,
        "a full range must make the network not ready"
    );
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(
        network.message.contains("STATUS") && network.message.contains("no free address"),
        "the plugin's message must reach the caller: {}",
        network.message
    );

    // Lists older than 1.1.0 have no STATUS: today's checks only.
    edit_conflist(&cni, |l| l["cniVersion"] = json!("1.0.0"));
    assert!(network_condition(&mut cri).await.status);
    edit_conflist(&cni, |l| l["cniVersion"] = json!("1.1.0"));
    assert!(!network_condition(&mut cri).await.status);

    remove(&mut cri, &id).await;
    let network = network_condition(&mut cri).await;
    assert!(
        network.status,
        "the freed address makes it ready: {network:?}"
    );
    assert!(allocations(&cni).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_checks_adopted_pods_and_reports_a_broken_one() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cni = setup_1_1(dir.path());
    let mut runtime = RuntimeProcess::start(dir.path(), &cni.toml());
    let mut cri = runtime.client().await;
    let healthy = run_pod(&mut cri, pod("healthy")).await.unwrap();
    let broken = run_pod(&mut cri, pod("broken")).await.unwrap();
    drop(cri);
    runtime.stop_with("KILL");
    // Behind the runtime's back, the broken pod loses its interface (and its veth pair).
    let deleted = std::process::Command::new("nsenter")
        .arg(format!(
            "--net={}",
            pod_netns(dir.path(), &broken).display()
        ))
        .args(["ip", "link", "del", "eth0"])
        .status()
        .unwrap();
    assert!(deleted.success());

    runtime.respawn();
    let mut cri = runtime.client().await;
    let failed = log_lines(&runtime, &["CNI CHECK failed", &broken]);
    assert_eq!(failed.len(), 1, "log:\n{}", runtime.log());
    assert!(
        failed[0].contains("eth0 is missing"),
        "the plugin's error must be logged: {}",
        failed[0]
    );
    assert!(
        log_lines(&runtime, &["CNI CHECK failed", &healthy]).is_empty(),
        "the healthy pod must pass"
    );
    assert_eq!(
        log_lines(&runtime, &["CNI CHECK passed", &healthy]).len(),
        1,
        "CHECK must have run for the healthy pod"
    );
    // Reported, not repaired: the pod stays, with its address.
    let status = sandbox_status(&mut cri, &broken).await.unwrap();
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(
        allocations(&cni).len(),
        2,
        "GC must keep known pods' addresses"
    );

    remove(&mut cri, &healthy).await;
    remove(&mut cri, &broken).await;
    assert!(allocations(&cni).is_empty());
    assert!(cache_entries(dir.path()).is_empty());
    assert_eq!(bridge_ports(&cni), 0);
    assert!(mounted_under(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_on_start_releases_what_no_sandbox_owns() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cni = setup_1_1(dir.path());
    let mut runtime = RuntimeProcess::start(dir.path(), &cni.toml());
    let mut cri = runtime.client().await;
    let live = run_pod(&mut cri, pod("live")).await.unwrap();
    let forgotten = run_pod(&mut cri, pod("forgotten")).await.unwrap();
    drop(cri);
    runtime.stop_with("KILL");
    // While the runtime is down: one pod vanishes with its record (its cache entry and
    // address stay), and an ADD run by hand allocates an address the runtime never cached.
    kill_monitor(dir.path(), &forgotten);
    std::fs::remove_dir_all(dir.path().join("state/pods").join(&forgotten)).unwrap();
    let mut stdin = conflist(&cni)["plugins"][0].clone();
    stdin["name"] = conflist(&cni)["name"].clone();
    stdin["cniVersion"] = json!("1.1.0");
    let manual = std::process::Command::new(cni.bin_dir.join("host-local"))
        .env_clear()
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "byhand")
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &cni.bin_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin.to_string().as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(manual.status.success(), "{manual:?}");
    let holders: Vec<String> = allocations(&cni).into_iter().map(|(_, id)| id).collect();
    assert_eq!(holders.len(), 3, "{holders:?}");
    assert_eq!(cache_entries(dir.path()).len(), 2);

    runtime.respawn();
    let mut cri = runtime.client().await;
    remove_pod_cgroup(&runtime, &forgotten);
    let held = allocations(&cni);
    assert_eq!(
        held.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(),
        vec![live.as_str()],
        "only the live pod keeps its address; log:\n{}",
        runtime.log()
    );
    let cached = cache_entries(dir.path());
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].contains(&live), "{cached:?}");
    let gc = log_lines(&runtime, &["CNI GC done"]);
    assert_eq!(gc.len(), 2, "one GC per start: {gc:?}");
    assert!(
        gc[1].contains(&forgotten) && gc[1].contains("valid_attachments=1"),
        "GC must log what it released: {}",
        gc[1]
    );
    let status = sandbox_status(&mut cri, &live).await.unwrap();
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(bridge_ports(&cni), 1, "only the live pod's veth");

    remove(&mut cri, &live).await;
    assert!(allocations(&cni).is_empty());
    assert!(cache_entries(dir.path()).is_empty());
    assert!(mounted_under(dir.path()).is_empty());
}

async fn update_pod_cidr(cri: &mut CriClient, cidr: &str) -> Result<(), tonic::Status> {
    cri.runtime
        .update_runtime_config(UpdateRuntimeConfigRequest {
            runtime_config: Some(RuntimeConfig {
                network_config: Some(NetworkConfig {
                    pod_cidr: cidr.into(),
                }),
            }),
        })
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn update_runtime_config_renders_the_template() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cni = setup_1_1(dir.path());
    // The setup's list as a template: ranges and routes come from the pod CIDR.
    let mut list = conflist(&cni);
    list["plugins"][0]["ipam"]["ranges"] = json!("RANGES");
    list["plugins"][0]["ipam"]["routes"] = json!("ROUTES");
    let template = dir.path().join("template.conflist");
    let text = list
        .to_string()
        .replace("\"RANGES\"", "{{.PodCIDRRanges}}")
        .replace("\"ROUTES\"", "{{.Routes}}");
    std::fs::write(&template, text).unwrap();
    let conf_dir = dir.path().join("rendered");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let config = format!(
        "[cni]\nconf_dir = \"{}\"\nbin_dirs = [\"{}\"]\nconf_template = \"{}\"\n",
        conf_dir.display(),
        cni.bin_dir.display(),
        template.display()
    );
    let runtime = RuntimeProcess::start(dir.path(), &config);
    let mut cri = runtime.client().await;
    let network = network_condition(&mut cri).await;
    assert!(!network.status, "no config before the pod CIDR");
    assert!(
        network.message.contains("conf_template"),
        "{}",
        network.message
    );

    let bad = update_pod_cidr(&mut cri, "10.0.0.0/24,10.1.0.0/33")
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message()
            .contains("runtime_config.network_config.pod_cidr")
            && bad.message().contains("10.1.0.0/33"),
        "{}",
        bad.message()
    );
    update_pod_cidr(&mut cri, "").await.unwrap();
    assert_eq!(std::fs::read_dir(&conf_dir).unwrap().count(), 0);

    let cidr = format!("{}0/24", cni.prefix);
    update_pod_cidr(&mut cri, &cidr).await.unwrap();
    let rendered = conf_dir.join("10-capstan.conflist");
    let written: Value = serde_json::from_slice(&std::fs::read(&rendered).unwrap()).unwrap();
    assert_eq!(
        written["plugins"][0]["ipam"]["ranges"],
        json!([[{ "subnet": cidr }]])
    );
    assert_eq!(
        written["plugins"][0]["ipam"]["routes"],
        json!([{ "dst": "0.0.0.0/0" }])
    );
    assert_eq!(
        std::fs::read_dir(&conf_dir).unwrap().count(),
        1,
        "no temporary file left"
    );
    assert!(network_condition(&mut cri).await.status);

    let id = run_pod(&mut cri, pod("templated")).await.unwrap();
    let ip = sandbox_status(&mut cri, &id)
        .await
        .unwrap()
        .network
        .unwrap()
        .ip;
    assert!(ip.starts_with(&cni.prefix), "pod IP {ip:?} outside {cidr}");

    // The same CIDR again rewrites nothing.
    let before = std::fs::metadata(&rendered).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    update_pod_cidr(&mut cri, &cidr).await.unwrap();
    assert_eq!(
        std::fs::metadata(&rendered).unwrap().modified().unwrap(),
        before
    );

    // A template that does not render to a conflist is refused, naming it; the config in
    // force stays.
    std::fs::write(
        &template,
        "{\"cniVersion\":\"1.1.0\",\"name\":{{.PodCIDR}}}",
    )
    .unwrap();
    let refused = update_pod_cidr(&mut cri, "10.77.0.0/16").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains(&template.display().to_string()),
        "{}",
        refused.message()
    );
    let kept: Value = serde_json::from_slice(&std::fs::read(&rendered).unwrap()).unwrap();
    assert_eq!(kept, written);

    remove(&mut cri, &id).await;
    assert!(allocations(&cni).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn update_runtime_config_without_a_template_writes_nothing() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let config = format!("[cni]\nconf_dir = \"{}\"\n", conf_dir.display());
    let runtime = RuntimeProcess::start(dir.path(), &config);
    let mut cri = runtime.client().await;
    update_pod_cidr(&mut cri, "10.88.0.0/16,fd00:88::/64")
        .await
        .unwrap();
    assert_eq!(std::fs::read_dir(&conf_dir).unwrap().count(), 0);
    assert_eq!(
        log_lines(&runtime, &["no [cni] conf_template"]).len(),
        1,
        "the runtime must say why nothing was written"
    );
    let bad = update_pod_cidr(&mut cri, "fd00::/129").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

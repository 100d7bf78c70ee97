//! Debian's containerd 1.6 (with runc) as a test peer: a private daemon whose root, state, socket
//! and pod cgroups all live under the caller's directory and below the test's own cgroup, torn
//! down completely when the guard drops, pods included, even when the test failed half-way.
//!
//! containerd 1.6 hard-codes two host paths whatever its config says: shim sockets in
//! `/run/containerd/s` and libcni's result cache in `/var/lib/cni/results`. The guard removes
//! what this daemon wrote there (shim sockets by their name, which is a hash of our socket and
//! the sandbox id; cached results by our network names) and the directories when they are
//! left empty and no other containerd runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capstan_proto::{
    ListPodSandboxRequest, RemovePodSandboxRequest, StopPodSandboxRequest, VersionRequest,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use crate::cgroups::TestCgroup;
use crate::cri::CriClient;
use crate::error::{Error, Result};

/// Where Debian installs containerd.
pub const CONTAINERD_BINARY: &str = "/usr/bin/containerd";

/// The CRI plugin's containerd namespace; shim socket names are derived from it.
const CRI_NAMESPACE: &str = "k8s.io";

/// The directory containerd 1.6 puts shim sockets in, regardless of its config.
const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// The directory libcni (inside containerd) caches results in, regardless of its config.
const CNI_RESULT_DIR: &str = "/var/lib/cni/results";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Plugins a CRI test does not need: other snapshotters, tracing. (The legacy v1 runtime stays:
/// 1.6's tasks service, which the CRI plugin needs, refuses to load without it.)
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.native",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
];

/// What the daemon is configured with.
#[derive(Debug, Clone)]
pub struct ContainerdOptions {
    /// The sandbox ("pause") image reference, e.g. `127.0.0.1:5000/pause:1`.
    pub sandbox_image: String,
    /// A `host:port` registry to reach over plain HTTP (the local test registry).
    pub insecure_registry: Option<String>,
    /// Directory of CNI plugin executables.
    pub cni_bin_dir: PathBuf,
    /// Directory of CNI network configs (the first one, by name, is used).
    pub cni_conf_dir: PathBuf,
}

/// A running containerd with a private configuration.
#[derive(Debug)]
pub struct ContainerdProcess {
    child: Option<Child>,
    dir: PathBuf,
    options: ContainerdOptions,
    /// Holds the daemon and, through inheritance, its shims: killing what is left in it ends
    /// every process this daemon started outside the pods.
    daemon_cgroup: TestCgroup,
    /// The parent of every pod's cgroup.
    pods_cgroup: TestCgroup,
}

impl ContainerdProcess {
    /// Writes a private config under `dir`, starts containerd and waits until its CRI answers.
    pub async fn start(dir: &Path, options: ContainerdOptions) -> Result<Self> {
        if !Path::new(CONTAINERD_BINARY).exists() {
            return Err(Error::Command(format!(
                "{CONTAINERD_BINARY} is missing: install Debian's containerd and runc (hack/deps.sh test)"
            )));
        }
        std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        let daemon_cgroup = TestCgroup::new()?;
        let pods_cgroup = TestCgroup::new()?;
        pods_cgroup.delegate_to_children();
        let config_path = dir.join("containerd.toml");
        let config = config_toml(dir, &options);
        std::fs::write(&config_path, config).map_err(Error::io("write", &config_path))?;
        let log_path = dir.join("containerd.log");
        let log = std::fs::File::create(&log_path).map_err(Error::io("create", &log_path))?;
        let child = Command::new(CONTAINERD_BINARY)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(Error::io("start", CONTAINERD_BINARY))?;
        let mut process = ContainerdProcess {
            child: Some(child),
            dir: dir.to_path_buf(),
            options,
            daemon_cgroup,
            pods_cgroup,
        };
        // The daemon joins its cgroup before it can start any shim: shims inherit it.
        if let Some(child) = &process.child {
            process.daemon_cgroup.add_process(child.id())?;
        }
        process.wait_ready().await?;
        Ok(process)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(Error::Command(format!(
                    "containerd exited with {status}:\n{}",
                    self.log()
                )));
            }
            let answer = match CriClient::connect(&self.socket(), Duration::from_millis(200)).await
            {
                Ok(mut client) => client
                    .runtime
                    .version(VersionRequest::default())
                    .await
                    .map_err(|e| Error::Command(format!("CRI Version: {e}"))),
                Err(e) => Err(e),
            };
            match answer {
                Ok(_) => return Ok(()),
                // The daemon serves, but its CRI plugin failed to load: waiting will not help.
                Err(e)
                    if Instant::now() > deadline || e.to_string().contains("unknown service") =>
                {
                    return Err(Error::Command(format!(
                        "containerd did not answer CRI Version: {e}\n{}",
                        self.log()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The CRI (and containerd API) socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// Connects a CRI client.
    pub async fn client(&self) -> Result<CriClient> {
        CriClient::connect(&self.socket(), Duration::from_secs(10)).await
    }

    /// The cgroup parent to pass as `linux.cgroup_parent` in RunPodSandbox: below the test's
    /// own cgroup, removed with the guard.
    pub fn cgroup_parent(&self) -> &str {
        self.pods_cgroup.path()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Process ids of the daemon and of every shim it started (for memory measurements).
    pub fn process_ids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.pid().into_iter().collect();
        pids.extend(self.shim_pids());
        pids
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Shims whose `-address` is this daemon's socket.
    fn shim_pids(&self) -> Vec<u32> {
        let socket = self.socket().display().to_string();
        processes_with_args(|args| {
            args.first()
                .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
                && args
                    .windows(2)
                    .any(|pair| pair[0] == "-address" && pair[1] == socket)
        })
    }

    /// Stops and removes every pod through CRI, as a kubelet would, from a thread with its own
    /// async runtime (Drop may run inside the test's runtime, which cannot be blocked on).
    /// Returns the ids of the pods it found.
    fn remove_pods(&self) -> Vec<String> {
        let socket = self.socket();
        let work = move || -> Vec<String> {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return Vec::new();
            };
            runtime.block_on(async move {
                let Ok(mut client) = CriClient::connect(&socket, Duration::from_secs(2)).await
                else {
                    return Vec::new();
                };
                let ids: Vec<String> = match tokio::time::timeout(
                    Duration::from_secs(10),
                    client
                        .runtime
                        .list_pod_sandbox(ListPodSandboxRequest::default()),
                )
                .await
                {
                    Ok(Ok(reply)) => reply.into_inner().items.into_iter().map(|p| p.id).collect(),
                    _ => return Vec::new(),
                };
                for id in &ids {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(20),
                        client.runtime.stop_pod_sandbox(StopPodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        }),
                    )
                    .await;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(20),
                        client.runtime.remove_pod_sandbox(RemovePodSandboxRequest {
                            pod_sandbox_id: id.clone(),
                        }),
                    )
                    .await;
                }
                ids
            })
        };
        std::thread::spawn(work).join().unwrap_or_default()
    }

    fn stop_daemon(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Network names of the configs in our CNI conf dir: libcni names its cached results
    /// `<network>-<container id>-<interface>`.
    fn network_names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.options.cni_conf_dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .filter_map(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string))
            .collect()
    }

    fn remove_host_files(&self, sandbox_ids: &BTreeSet<String>) {
        for id in sandbox_ids {
            let _ = std::fs::remove_file(
                Path::new(SHIM_SOCKET_DIR).join(shim_socket_name(&self.socket(), id)),
            );
        }
        let networks = self.network_names();
        if let Ok(entries) = std::fs::read_dir(CNI_RESULT_DIR) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let ours = networks.iter().any(|n| name.starts_with(&format!("{n}-")))
                    || sandbox_ids.iter().any(|id| name.contains(id.as_str()));
                if ours {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        // The shared directories go only when empty and no other containerd could be about to
        // use them (remove_dir refuses non-empty directories anyway).
        let others = processes_with_args(|args| {
            args.first().is_some_and(|a| {
                a.ends_with("/containerd") || a.ends_with("containerd-shim-runc-v2")
            })
        });
        if others.is_empty() {
            for dir in [
                SHIM_SOCKET_DIR,
                "/run/containerd",
                CNI_RESULT_DIR,
                "/var/lib/cni",
            ] {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }

    /// Kills the pods' processes and removes their cgroups in every hierarchy: runc, driving
    /// cgroupfs, also creates them in hierarchies the test cgroup guard does not manage (e.g.
    /// `name=systemd`, the hybrid `unified` one).
    fn remove_stray_cgroups(&self) {
        let relative = self.pods_cgroup.path().trim_start_matches('/').to_string();
        let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for line in table.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 2 && (fields[2] == "cgroup" || fields[2] == "cgroup2") {
                let dir = Path::new(fields[1]).join(&relative);
                if dir.exists()
                    && let Err(e) = crate::cgroups::remove_tree(&dir)
                {
                    eprintln!("capstan-testkit: leaked cgroup {}: {e}", dir.display());
                }
            }
        }
    }
}

impl Drop for ContainerdProcess {
    fn drop(&mut self) {
        let mut sandbox_ids: BTreeSet<String> = BTreeSet::new();
        if self.child.is_some() {
            sandbox_ids.extend(self.remove_pods());
        }
        self.stop_daemon();
        for pid in self.shim_pids() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        // Sandbox ids of pods the CRI could not remove are still named by runc's state dirs.
        if let Ok(entries) = std::fs::read_dir(self.dir.join("runc").join(CRI_NAMESPACE)) {
            sandbox_ids.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
        // Kills what is left of shims and pods (their cgroups are below ours) before unmounting.
        self.remove_stray_cgroups();
        for mount in crate::mounts::mounted_under(&self.dir).into_iter().rev() {
            let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
        }
        self.remove_host_files(&sandbox_ids);
    }
}

/// The containerd 1.6 config (version 2) for a private daemon under `dir`.
fn config_toml(dir: &Path, options: &ContainerdOptions) -> String {
    let quoted = |p: &Path| format!("{:?}", p.display().to_string());
    let disabled: Vec<String> = DISABLED_PLUGINS.iter().map(|p| format!("{p:?}")).collect();
    let mut toml = format!(
        r#"version = 2
root = {root}
state = {state}
disabled_plugins = [{disabled}]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {sandbox_image:?}
  # Pod network namespaces are pinned under our state dir, not /var/run/netns.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  systemd_cgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # PID 1 is not systemd here: runc manages cgroups through cgroupfs.
        SystemdCgroup = false
        Root = {runc_root}
"#,
        root = quoted(&dir.join("root")),
        state = quoted(&dir.join("state")),
        disabled = disabled.join(", "),
        socket = quoted(&dir.join("containerd.sock")),
        ttrpc = quoted(&dir.join("containerd.sock.ttrpc")),
        sandbox_image = options.sandbox_image,
        cni_bin = quoted(&options.cni_bin_dir),
        cni_conf = quoted(&options.cni_conf_dir),
        runc_root = quoted(&dir.join("runc")),
    );
    if let Some(registry) = &options.insecure_registry {
        toml.push_str(&format!(
            r#"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
"#
        ));
    }
    toml
}

/// The name containerd 1.6 gives a shim's socket in [`SHIM_SOCKET_DIR`]: the hex SHA-256 of
/// `<daemon socket>/<namespace>/<sandbox id>`.
fn shim_socket_name(daemon_socket: &Path, sandbox_id: &str) -> String {
    let key = daemon_socket.join(CRI_NAMESPACE).join(sandbox_id);
    hex::encode(Sha256::digest(key.as_os_str().as_encoded_bytes()))
}

/// Process ids whose command line (split into arguments) satisfies `wanted`.
fn processes_with_args(wanted: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            wanted(&args)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_every_path_under_the_test_dir() {
        let options = ContainerdOptions {
            sandbox_image: "127.0.0.1:5000/pause:1".into(),
            insecure_registry: Some("127.0.0.1:5000".into()),
            cni_bin_dir: "/t/cni-bin".into(),
            cni_conf_dir: "/t/cni-conf".into(),
        };
        let text = config_toml(Path::new("/t/ctrd"), &options);
        for line in [
            r#"root = "/t/ctrd/root""#,
            r#"state = "/t/ctrd/state""#,
            r#"address = "/t/ctrd/containerd.sock""#,
            r#"Root = "/t/ctrd/runc""#,
            r#"endpoint = ["http://127.0.0.1:5000"]"#,
            r#"sandbox_image = "127.0.0.1:5000/pause:1""#,
            r#"bin_dir = "/t/cni-bin""#,
            "SystemdCgroup = false",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("/var/lib/containerd") && !text.contains("/run/containerd"));
    }

    #[test]
    fn shim_socket_names_hash_socket_namespace_and_id() {
        let name = shim_socket_name(Path::new("/t/containerd.sock"), "abc");
        let expected = hex::encode(Sha256::digest(b"/t/containerd.sock/k8s.io/abc"));
        assert_eq!(name, expected);
    }
}

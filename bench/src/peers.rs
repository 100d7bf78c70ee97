//! The runtimes under test, each started by the harness with private directories, socket and
//! cgroups below the harness's own cgroup, and torn down (pods included) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capstan_proto::{
    ListPodSandboxRequest, RemovePodSandboxRequest, StopPodSandboxRequest, VersionRequest,
};
use capstan_testkit::cgroups::TestCgroup;
use capstan_testkit::containerd::{ContainerdOptions, ContainerdProcess};
use capstan_testkit::cri::CriClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The CNI network a peer's pods join: a bridge and host-local range of their own.
#[derive(Debug, Clone)]
pub struct Network {
    /// Plugin directory.
    pub bin_dir: PathBuf,
    /// Config directory (one conflist).
    pub conf_dir: PathBuf,
    /// The bridge's name, deleted by [`Network`]'s owner when the peer is gone.
    pub bridge: String,
}

impl Network {
    /// Writes a bridge + host-local + loopback conflist under `dir` for plugins in `bin_dir`.
    pub fn write(dir: &Path, bin_dir: &Path, bridge: &str, subnet: &str) -> std::io::Result<Self> {
        let conf_dir = dir.join("cni-conf");
        std::fs::create_dir_all(&conf_dir)?;
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("bench-{bridge}"),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": subnet }]],
                        "dataDir": dir.join("cni-ipam"),
                    }
                },
                { "type": "loopback" }
            ]
        });
        std::fs::write(conf_dir.join("10-bench.conflist"), conflist.to_string())?;
        Ok(Network {
            bin_dir: bin_dir.to_path_buf(),
            conf_dir,
            bridge: bridge.to_string(),
        })
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // The bridge outlives pods by design.
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// A runtime being measured.
pub enum Peer {
    /// `capstan runtime`.
    Capstan(CapstanDaemon),
    /// Debian's containerd + runc.
    Containerd(ContainerdProcess),
}

impl Peer {
    /// The CRI socket.
    pub fn socket(&self) -> PathBuf {
        match self {
            Peer::Capstan(c) => c.socket(),
            Peer::Containerd(c) => c.socket(),
        }
    }

    /// The cgroup parent pods are given.
    pub fn cgroup_parent(&self) -> &str {
        match self {
            Peer::Capstan(c) => c.pods_cgroup.path(),
            Peer::Containerd(c) => c.cgroup_parent(),
        }
    }

    /// The runtime's own processes: daemon plus pod monitors, or daemon plus shims.
    pub fn process_ids(&self) -> Vec<u32> {
        match self {
            Peer::Capstan(c) => c.process_ids(),
            Peer::Containerd(c) => c.process_ids(),
        }
    }

    /// Starts containerd with `network` and the sandbox image `pause`.
    pub async fn containerd(
        dir: &Path,
        network: &Network,
        registry: &str,
        pause: &str,
    ) -> Result<Self, String> {
        ContainerdProcess::start(
            dir,
            ContainerdOptions {
                sandbox_image: pause.to_string(),
                insecure_registry: Some(registry.to_string()),
                cni_bin_dir: network.bin_dir.clone(),
                cni_conf_dir: network.conf_dir.clone(),
            },
        )
        .await
        .map(Peer::Containerd)
        .map_err(|e| e.to_string())
    }
}

/// `capstan runtime` with its socket, state and config under one directory.
pub struct CapstanDaemon {
    child: Option<Child>,
    dir: PathBuf,
    /// Holds the daemon (and what it spawns, until it moves it).
    daemon_cgroup: TestCgroup,
    /// The parent of every pod's cgroup.
    pods_cgroup: TestCgroup,
}

impl CapstanDaemon {
    /// Starts `binary runtime` and waits until its CRI answers Version.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        network: &Network,
        registry: &str,
        log_level: &str,
    ) -> Result<Self, String> {
        let err = |what: &str| {
            let what = what.to_string();
            move |e: capstan_testkit::Error| format!("{what}: {e}")
        };
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let daemon_cgroup = TestCgroup::new().map_err(err("daemon cgroup"))?;
        let pods_cgroup = TestCgroup::new().map_err(err("pods cgroup"))?;
        pods_cgroup.delegate_to_children();
        let config = dir.join("runtime.toml");
        std::fs::write(
            &config,
            format!(
                "[registry]\ninsecure = [\"{registry}\"]\n[cni]\nconf_dir = \"{}\"\nbin_dirs = [\"{}\"]\n",
                network.conf_dir.display(),
                network.bin_dir.display()
            ),
        )
        .map_err(|e| format!("write {}: {e}", config.display()))?;
        let log = std::fs::File::create(dir.join("runtime.log")).map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .args(["--log-level", log_level, "runtime", "--listen"])
            .arg(format!("unix://{}", dir.join("run/capstan.sock").display()))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--runtime-config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {}: {e}", binary.display()))?;
        let daemon = CapstanDaemon {
            child: Some(child),
            dir: dir.to_path_buf(),
            daemon_cgroup,
            pods_cgroup,
        };
        if let Some(child) = &daemon.child {
            daemon
                .daemon_cgroup
                .add_process(child.id())
                .map_err(err("move the daemon"))?;
        }
        let mut client = CriClient::connect(&daemon.socket(), Duration::from_secs(20))
            .await
            .map_err(|e| format!("{e}\n{}", daemon.log()))?;
        client
            .runtime
            .version(VersionRequest::default())
            .await
            .map_err(|e| format!("CRI Version: {e}"))?;
        Ok(daemon)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("run/capstan.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("runtime.log")).unwrap_or_default()
    }

    fn monitor_pids(&self) -> Vec<u32> {
        let pods = format!("{}/", self.dir.join("run/pods").display());
        pids_where(|args| {
            args.iter().any(|a| a == "monitor")
                && args
                    .windows(2)
                    .any(|w| w[0] == "--run-dir" && w[1].starts_with(&pods))
        })
    }

    fn process_ids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.child.iter().map(Child::id).collect();
        pids.extend(self.monitor_pids());
        pids
    }
}

impl Drop for CapstanDaemon {
    fn drop(&mut self) {
        // Pods outlive their runtime by design: remove them through CRI first.
        let socket = self.socket();
        let _ = std::thread::spawn(move || remove_all_pods(&socket)).join();
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.monitor_pids() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
        for mount in capstan_testkit::mounts::mounted_under(&self.dir)
            .into_iter()
            .rev()
        {
            let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Stops and removes every pod of the runtime at `socket`, with an async runtime of its own.
fn remove_all_pods(socket: &Path) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        let Ok(mut client) = CriClient::connect(socket, Duration::from_secs(2)).await else {
            return;
        };
        let Ok(pods) = client
            .runtime
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
        else {
            return;
        };
        for pod in pods.into_inner().items {
            let _ = client
                .runtime
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.id.clone(),
                })
                .await;
            let _ = client
                .runtime
                .remove_pod_sandbox(RemovePodSandboxRequest {
                    pod_sandbox_id: pod.id,
                })
                .await;
        }
    });
}

/// Process ids whose arguments satisfy `wanted`.
fn pids_where(wanted: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            !args.is_empty() && wanted(&args)
        })
        .collect()
}

/// Total resident and proportional set size of `pids`, in KiB (PSS splits shared pages, such as
/// one binary's text mapped by many processes, between them).
pub fn memory_kib(pids: &[u32]) -> (u64, u64) {
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    pids.iter().fold((0, 0), |(rss, pss), pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        (rss + field(&status, "VmRSS:"), pss + field(&rollup, "Pss:"))
    })
}

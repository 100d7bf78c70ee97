//! Starting the real `capstan runtime` binary for end-to-end tests. Each test binary uses a
//! part of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use capstan_testkit::cri::CriClient;
use capstan_testkit::subnets::SubnetClaim;

pub mod control_plane;

/// A `capstan runtime` process with its own socket, state and config in a temp directory.
pub struct RuntimeProcess {
    child: Option<Child>,
    /// The directory holding socket, state, config and log.
    pub dir: PathBuf,
    /// For `capstan node`: the cgroup below which kubepods/ was made, removed on drop.
    pub cgroup_root: Option<String>,
    command: Vec<String>,
    /// The network namespace it runs in (its pin's path), if not the test's own.
    netns: Option<String>,
}

impl RuntimeProcess {
    /// Starts the runtime with `config` (TOML) in `dir`.
    pub fn start(dir: &Path, config: &str) -> Self {
        Self::start_command(dir, config, "runtime", &[], None)
    }

    /// Starts `capstan node` with `config` (runtime TOML) in `dir`: manifests in
    /// `dir/manifests`, volumes in `dir/agent`, logs in `dir/logs`, its own cgroup root, the
    /// read-only API on `read_only` (see [`free_port`]), node name `node1`.
    pub fn start_node(dir: &Path, config: &str, read_only: u16, extra: &[&str]) -> Self {
        let own = capstan_testkit::cgroups::own_path().unwrap_or_default();
        let root = format!(
            "{}/node-{}",
            own.trim_end_matches('/'),
            capstan_testkit::names::unique("", 6).trim_matches('-')
        );
        Self::start_agent(dir, "node", config, read_only, root, extra, None)
    }

    /// [`Self::start_node`] inside the network namespace pinned at `netns`: a host of its own.
    pub fn start_node_in(
        netns: &Path,
        dir: &Path,
        config: &str,
        read_only: u16,
        extra: &[&str],
    ) -> Self {
        let own = capstan_testkit::cgroups::own_path().unwrap_or_default();
        let root = format!(
            "{}/node-{}",
            own.trim_end_matches('/'),
            capstan_testkit::names::unique("", 6).trim_matches('-')
        );
        Self::start_agent(dir, "node", config, read_only, root, extra, netns.to_str())
    }

    /// Starts `capstan server` as [`Self::start_node`] starts a node, with the control plane's
    /// flags in `extra`.
    pub fn start_server(dir: &Path, config: &str, read_only: u16, extra: &[&str]) -> Self {
        let own = capstan_testkit::cgroups::own_path().unwrap_or_default();
        let root = format!(
            "{}/server-{}",
            own.trim_end_matches('/'),
            capstan_testkit::names::unique("", 6).trim_matches('-')
        );
        Self::start_agent(dir, "server", config, read_only, root, extra, None)
    }

    fn start_agent(
        dir: &Path,
        command: &str,
        config: &str,
        read_only: u16,
        root: String,
        extra: &[&str],
        netns: Option<&str>,
    ) -> Self {
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let mut args: Vec<String> = vec![
            "--pod-manifest-path".into(),
            dir.join("manifests").display().to_string(),
            "--root-dir".into(),
            dir.join("agent").display().to_string(),
            "--pod-logs-dir".into(),
            dir.join("logs").display().to_string(),
            "--read-only-address".into(),
            format!("127.0.0.1:{read_only}"),
            // Tests run side by side: each joined node's kubelet endpoint on a port of its own.
            "--kubelet-address".into(),
            "0.0.0.0:0".into(),
            "--cgroup-root".into(),
            root.clone(),
        ];
        if !extra.contains(&"--node-name") {
            args.extend(["--node-name".into(), "node1".into()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Self::start_command(dir, config, command, &args, netns);
        process.cgroup_root = Some(root);
        process
    }

    fn start_command(
        dir: &Path,
        config: &str,
        command: &str,
        extra: &[&str],
        netns: Option<&str>,
    ) -> Self {
        let config_path = dir.join("runtime.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("runtime.log"))
            .unwrap();
        let mut args: Vec<String> = vec![
            "--log-level".into(),
            "debug".into(),
            command.into(),
            "--listen".into(),
            format!("unix://{}", Self::socket_in(dir).display()),
            "--state-dir".into(),
            dir.join("state").display().to_string(),
            "--runtime-config".into(),
            config_path.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let netns = netns.map(str::to_string);
        let child = spawn(&args, log, netns.as_deref());
        RuntimeProcess {
            child: Some(child),
            dir: dir.to_path_buf(),
            cgroup_root: None,
            command: args,
            netns,
        }
    }

    /// Starts the same command again after [`Self::stop_with`] (e.g. after a SIGKILL).
    pub fn respawn(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("runtime.log"))
            .unwrap();
        self.child = Some(spawn(&self.command, log, self.netns.as_deref()));
    }

    fn socket_in(dir: &Path) -> PathBuf {
        dir.join("run").join("capstan.sock")
    }

    /// The CRI socket.
    pub fn socket(&self) -> PathBuf {
        Self::socket_in(&self.dir)
    }

    /// Connects a CRI client.
    pub async fn client(&self) -> CriClient {
        CriClient::connect(&self.socket(), Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("{e}\nruntime log:\n{}", self.log()))
    }

    /// The runtime's process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The runtime's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("runtime.log")).unwrap_or_default()
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn stop_with(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        child.wait().expect("wait for capstan runtime")
    }
}

impl RuntimeProcess {
    /// Sends SIGTERM, waits up to `grace` for the process to exit and kills it otherwise.
    pub fn stop_within(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let pid = self.pid()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if let Some(status) = self.wait_exit(grace) {
            return Some(status);
        }
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for RuntimeProcess {
    fn drop(&mut self) {
        // SIGTERM first, so that the node's shutdown takes its service VIPs off the host; a
        // SIGKILL only for a process that does not go.
        let _ = self.stop_within(Duration::from_secs(5));
        // Pods outlive their runtime by design; a test that failed half-way must not leave
        // them on the host. Only pods of this runtime's directory are touched.
        let pods = self.dir.join("run").join("pods");
        let has_pods = std::fs::read_dir(&pods).is_ok_and(|mut entries| entries.next().is_some());
        if has_pods {
            let _ = Command::new("pkill")
                .arg("-f")
                .arg(format!("monitor --run-dir {}/", pods.display()))
                .status();
            std::thread::sleep(Duration::from_millis(200));
        }
        // Volume mounts too of pods already gone from the run directory: an agent killed
        // between a pod's stop and its volumes' unmount leaves them (a joined node's
        // kube-api-access tmpfs, say).
        for mount in capstan_testkit::mounts::mounted_under(&self.dir)
            .into_iter()
            .rev()
        {
            let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
        }
        self.remove_cgroup_root();
    }
}

/// The cgroup (absolute, hierarchy-relative) that holds the pods a runtime in `dir` makes
/// without a cgroup parent in the request: below the test's own cgroup, one per state directory.
pub fn pods_cgroup(dir: &Path) -> String {
    let own = capstan_testkit::cgroups::own_path().unwrap_or_default();
    format!(
        "{}/{}",
        own.trim_end_matches('/'),
        capstan_runtime::server::pods_cgroup_name(&dir.join("state"))
    )
}

impl RuntimeProcess {
    /// See [`pods_cgroup`].
    pub fn pods_cgroup(&self) -> String {
        pods_cgroup(&self.dir)
    }

    /// Removes this process's cgroups: the pods parent of [`pods_cgroup`] (its alone, so all of
    /// it) and the node's cgroup root.
    fn remove_cgroup_root(&self) {
        for hierarchy in cgroup_hierarchies() {
            let _ = capstan_testkit::cgroups::remove_tree(
                &hierarchy.join(self.pods_cgroup().trim_start_matches('/')),
            );
        }
        if let Some(root) = &self.cgroup_root {
            for hierarchy in cgroup_hierarchies() {
                let _ = capstan_testkit::cgroups::remove_tree(
                    &hierarchy.join(root.trim_start_matches('/')),
                );
            }
        }
    }
}

/// A free loopback TCP port (bound and released: a small race the tests accept).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// GETs `path` from `127.0.0.1:port` over HTTP/1.0; returns the status code and body.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    http_get_host("127.0.0.1", port, path)
}

/// GETs `path` from `host:port` over HTTP/1.0; returns the status code and body.
pub fn http_get_host(host: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((host, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

fn spawn(args: &[String], log: std::fs::File, netns: Option<&str>) -> Child {
    let mut command = match netns {
        // nsenter execs the binary (the child's PID is capstan's own) and, unlike `ip netns
        // exec`, keeps the mounts: a fresh /sys would hide the cgroup hierarchies.
        Some(netns) => {
            let mut command = Command::new("nsenter");
            command
                .arg(format!("--net={netns}"))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_capstan"));
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_capstan")),
    };
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start capstan")
}

fn cgroup_hierarchies() -> Vec<PathBuf> {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return vec![PathBuf::from("/sys/fs/cgroup")];
    }
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // The cgroup2 mount of a hybrid host too: the runtime makes cgroups there as well.
            (fields.len() > 2 && matches!(fields[2], "cgroup" | "cgroup2"))
                .then(|| PathBuf::from(fields[1]))
        })
        .collect()
}

/// A CNI setup for the runtime: our plugins (the capstan binary under each plugin's name), a
/// bridge conflist with its own bridge and subnet, and IPAM state in the test's directory. The
/// bridge, which outlives pods by design, is deleted on drop.
pub struct CniSetup {
    /// Config directory.
    pub conf_dir: PathBuf,
    /// Plugin directory.
    pub bin_dir: PathBuf,
    /// IPAM state directory.
    pub ipam_dir: PathBuf,
    /// The bridge's name.
    pub bridge: String,
    /// The pod subnet's prefix, e.g. `10.199.7.`.
    pub prefix: String,
    /// Keeps the subnet this test's alone while the setup lives.
    _subnet: SubnetClaim,
}

impl CniSetup {
    /// Writes the setup under `dir`; `subnet_override` replaces the subnet (for broken configs).
    pub fn new(dir: &Path, subnet_override: Option<&str>) -> Self {
        let bin_dir = dir.join("cni-bin");
        let conf_dir = dir.join("cni-conf");
        let ipam_dir = dir.join("cni-ipam");
        std::fs::create_dir_all(&bin_dir).unwrap();
        std::fs::create_dir_all(&conf_dir).unwrap();
        for plugin in ["bridge", "host-local", "loopback"] {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_capstan"), bin_dir.join(plugin))
                .unwrap();
        }
        let suffix = capstan_testkit::names::unique("", 8).replace('-', "");
        let subnet_claim = SubnetClaim::new("10.199");
        let octet = subnet_claim.octet();
        let bridge = format!("cst{}", &suffix[suffix.len().saturating_sub(8)..]);
        let prefix = format!("10.199.{octet}.");
        let subnet = subnet_override
            .map(str::to_string)
            .unwrap_or_else(|| format!("{prefix}0/24"));
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("net-{bridge}"),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": true,
                    "ipam": { "type": "host-local", "ranges": [[{ "subnet": subnet }]], "dataDir": ipam_dir }
                },
                { "type": "loopback" }
            ]
        });
        std::fs::write(conf_dir.join("10-test.conflist"), conflist.to_string()).unwrap();
        CniSetup {
            conf_dir,
            bin_dir,
            ipam_dir,
            bridge,
            prefix,
            _subnet: subnet_claim,
        }
    }

    /// The runtime config section pointing at this setup.
    pub fn toml(&self) -> String {
        format!(
            "[cni]\nconf_dir = \"{}\"\nbin_dirs = [\"{}\"]\n",
            self.conf_dir.display(),
            self.bin_dir.display()
        )
    }
}

impl Drop for CniSetup {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// Names of the host's network links.
pub fn host_links() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect()
}

/// The status of container `id`, which must exist.
pub async fn container_status(cri: &mut CriClient, id: &str) -> capstan_proto::ContainerStatus {
    cri.runtime
        .container_status(capstan_proto::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

/// RunPodSandbox with `config`; the sandbox ID or the gRPC error.
pub async fn run_pod(
    cri: &mut CriClient,
    config: capstan_proto::PodSandboxConfig,
) -> Result<String, tonic::Status> {
    cri.runtime
        .run_pod_sandbox(capstan_proto::RunPodSandboxRequest {
            config: Some(config),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

/// The status of sandbox `id`; the gRPC error when there is none.
pub async fn sandbox_status(
    cri: &mut CriClient,
    id: &str,
) -> Result<capstan_proto::PodSandboxStatus, tonic::Status> {
    cri.runtime
        .pod_sandbox_status(capstan_proto::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        })
        .await
        .map(|r| r.into_inner().status.unwrap_or_default())
}

/// CreateContainer then StartContainer in `pod`; the container ID.
pub async fn create_and_start(
    cri: &mut CriClient,
    pod: &str,
    config: capstan_proto::ContainerConfig,
) -> String {
    let id = cri
        .runtime
        .create_container(capstan_proto::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: None,
        })
        .await
        .unwrap_or_else(|e| panic!("create: {e}"))
        .into_inner()
        .container_id;
    cri.runtime
        .start_container(capstan_proto::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    id
}

/// Runs `script` in `container` with ExecSync; its stdout, and whether it exited 0.
pub async fn exec_sh(cri: &mut CriClient, container: &str, script: &str) -> (String, bool) {
    let out = cri
        .runtime
        .exec_sync(capstan_proto::ExecSyncRequest {
            container_id: container.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        out.exit_code == 0,
    )
}

/// A runtime with CNI that has pulled the shell image from a local registry. Fields drop in
/// order: the runtime (and its pods) before the bridge, the directory and the registry.
pub struct ShellRuntime {
    /// The runtime.
    pub runtime: RuntimeProcess,
    _cni: CniSetup,
    /// Its directory.
    pub dir: tempfile::TempDir,
    _registry: capstan_testkit::registry::LocalRegistry,
    /// The pulled shell image's reference.
    pub shell: String,
}

impl ShellRuntime {
    /// Starts it.
    pub async fn start() -> Self {
        let registry = capstan_testkit::registry::LocalRegistry::start().unwrap();
        registry
            .client()
            .push_image(
                "shell",
                "1",
                &capstan_testkit::images::catalog().unwrap().shell,
                capstan_testkit::images::ManifestFormat::Oci,
            )
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cni = CniSetup::new(dir.path(), None);
        let config = format!(
            "[registry]\ninsecure = [\"{}\"]\n{}",
            registry.host(),
            cni.toml()
        );
        let runtime = RuntimeProcess::start(dir.path(), &config);
        let shell = format!("{}/shell:1", registry.host());
        runtime
            .client()
            .await
            .images
            .pull_image(capstan_proto::PullImageRequest {
                image: Some(capstan_proto::ImageSpec {
                    image: shell.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        ShellRuntime {
            runtime,
            _cni: cni,
            dir,
            _registry: registry,
            shell,
        }
    }
}

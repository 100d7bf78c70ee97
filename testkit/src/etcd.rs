//! A real etcd for tests: Debian's `etcd-server` (etcd 3.4), one member or a static cluster of
//! several, on free loopback ports with temporary data directories; every member is killed and
//! its directory removed when the guard drops.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{Error, Result};

/// Where Debian installs etcd.
pub const ETCD_BINARY: &str = "/usr/bin/etcd";

/// The request size the test etcd takes: above the store's 3 MiB value limit plus the key and
/// the request's framing (etcd's default, 1.5 MiB, is below it).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// One member of the cluster.
#[derive(Debug)]
struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    child: Option<Child>,
}

/// A running etcd cluster.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    dir: TempDir,
}

impl EtcdCluster {
    /// Starts one member and waits until it serves.
    pub fn start() -> Result<Self> {
        Self::start_members(1)
    }

    /// Starts a static cluster of `size` members and waits until every one serves with a
    /// leader.
    pub fn start_members(size: usize) -> Result<Self> {
        if !std::path::Path::new(ETCD_BINARY).exists() {
            return Err(Error::Command(format!(
                "{ETCD_BINARY} is missing: install Debian's etcd-server (hack/deps.sh test does)"
            )));
        }
        // A port picked from a closed listener can be taken before etcd binds it: try a few.
        let mut last_error = None;
        for _ in 0..3 {
            match Self::start_once(size) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Command("etcd did not start".into())))
    }

    fn start_once(size: usize) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("capstan-etcd-")
            .tempdir()
            .map_err(Error::io("create a temp dir in", std::env::temp_dir()))?;
        let ports = free_loopback_ports(2 * size)?;
        let members: Vec<Member> = ports
            .chunks(2)
            .enumerate()
            .map(|(i, pair)| Member {
                name: format!("m{i}"),
                client: pair[0],
                peer: pair[1],
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("capstan-test-{}-{}", std::process::id(), dir_suffix(&dir));
        let mut cluster = EtcdCluster { members, dir };
        for i in 0..size {
            let child = cluster.spawn(i, &initial_cluster, &token)?;
            cluster.members[i].child = Some(child);
        }
        cluster.wait_ready()?;
        Ok(cluster)
    }

    fn spawn(&self, i: usize, initial_cluster: &str, token: &str) -> Result<Child> {
        let member = &self.members[i];
        let log_path = self.log_path(i);
        let log = std::fs::File::create(&log_path).map_err(Error::io("create", &log_path))?;
        let log_err = log.try_clone().map_err(Error::io("dup", &log_path))?;
        let client_url = format!("http://{}", member.client);
        let peer_url = format!("http://{}", member.peer);
        Command::new(ETCD_BINARY)
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(self.dir.path().join(&member.name))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", token])
            .args(["--max-request-bytes", &MAX_REQUEST_BYTES.to_string()])
            // A short election timeout: a killed leader is replaced in about a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| Error::Command(format!("start {ETCD_BINARY}: {e}")))
    }

    /// `http://127.0.0.1:<port>` of every member, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{}", m.client))
            .collect()
    }

    /// Kills member `i` with SIGKILL and reaps it; the others go on.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let member = self
            .members
            .get_mut(i)
            .ok_or_else(|| Error::Command(format!("no etcd member {i}")))?;
        if let Some(mut child) = member.child.take() {
            child
                .kill()
                .map_err(|e| Error::Command(format!("kill etcd member {i}: {e}")))?;
            let _ = child.wait();
        }
        Ok(())
    }

    /// Member `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.log_path(i)) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.log"))
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let probe = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(1))
            .build();
        for i in 0..self.members.len() {
            loop {
                if let Some(Ok(Some(status))) = self.members[i].child.as_mut().map(|c| c.try_wait())
                {
                    return Err(Error::Command(format!(
                        "etcd member {i} exited during start-up ({status}): {}",
                        self.log(i)
                    )));
                }
                // /health answers true once the member serves and the cluster has a leader.
                let url = format!("http://{}/health", self.members[i].client);
                if let Ok(response) = probe.get(&url).call()
                    && response
                        .into_string()
                        .is_ok_and(|body| body.contains("\"true\""))
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::Command(format!(
                        "etcd member {i} not healthy after {STARTUP_TIMEOUT:?}: {}",
                        self.log(i)
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            let _ = self.kill(i);
        }
    }
}

fn dir_suffix(dir: &TempDir) -> String {
    dir.path()
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `n` distinct free ports: the listeners stay open until all are picked, so none repeats.
fn free_loopback_ports(n: usize) -> Result<Vec<SocketAddr>> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(
            std::net::TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind", "127.0.0.1:0"))?,
        );
    }
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map_err(Error::io("read the address of", "127.0.0.1:0"))
        })
        .collect()
}

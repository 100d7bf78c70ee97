//! `capstan control-plane`, the real binary, for tests of nodes that join it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use capstan_testkit::kubectl::{KUBECTL, Kubectl};

/// `capstan control-plane` on a free loopback port with its data in a temp directory; killed
/// on drop.
pub struct ControlPlane {
    child: Child,
    /// Its data directory (pki/, admin.kubeconfig).
    pub data_dir: PathBuf,
    /// The API server's port.
    pub port: u16,
    log: PathBuf,
    extra: Vec<String>,
    bind: String,
}

impl ControlPlane {
    /// Starts it in `dir` with `extra` flags and waits for /readyz.
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_on(dir, "127.0.0.1", extra)
    }

    /// [`Self::start`] listening on `bind` (an address other hosts reach).
    pub fn start_on(dir: &Path, bind: &str, extra: &[&str]) -> Self {
        let data_dir = dir.join("control-plane");
        let log = dir.join("control-plane.log");
        let port = super::free_port();
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let child = Self::spawn(&data_dir, &log, bind, port, &extra);
        let plane = ControlPlane {
            child,
            data_dir,
            port,
            log,
            extra,
            bind: bind.to_string(),
        };
        plane.wait_ready();
        plane
    }

    /// Stops it and starts it again on the same port and data (every client reconnects).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(
            &self.data_dir,
            &self.log,
            &self.bind,
            self.port,
            &self.extra,
        );
        self.wait_ready();
    }

    fn spawn(data_dir: &Path, log: &Path, bind: &str, port: u16, extra: &[String]) -> Child {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(["--log-level", "info", "control-plane"])
            .args(["--bind-address", bind])
            .args(extra)
            .arg("--secure-port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.kubeconfig().exists() {
                let out = self.kubectl().output_blocking(&["get", "--raw", "/readyz"]);
                if out.status.success() && out.stdout == b"ok" {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the control plane did not get ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The admin kubeconfig (system:masters).
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// kubectl 1.32 as admin.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::kubeconfig(KUBECTL, &self.kubeconfig())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

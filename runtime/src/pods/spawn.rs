//! Starting a pod monitor: this binary re-executed as `capstan monitor`, in its own session so
//! signals aimed at the daemon's process group never reach the pods.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::monitor::READY_LINE;
use crate::monitor::logs::Rotation;

use super::error::{PodError, Result};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// What the monitor is started with.
pub struct MonitorSpawn<'a> {
    /// The binary to re-execute.
    pub binary: &'a Path,
    /// The pod's run directory.
    pub run_dir: &'a Path,
    /// Where the monitor's own log goes.
    pub log_file: &'a Path,
    /// The pod's hostname.
    pub hostname: &'a str,
    /// hostNetwork.
    pub host_network: bool,
    /// hostIPC.
    pub host_ipc: bool,
    /// The pod's containers share one PID namespace.
    pub share_pid: bool,
    /// The pod's network namespace is already pinned in the run directory: join it.
    pub join_pinned_network: bool,
    /// Container log limits.
    pub rotation: Rotation,
}

/// Starts the monitor and waits until it serves; returns its pid. Blocking.
pub fn start_monitor(spawn: &MonitorSpawn<'_>) -> Result<u32> {
    std::fs::create_dir_all(spawn.run_dir)
        .map_err(|e| PodError::Internal(format!("create {}: {e}", spawn.run_dir.display())))?;
    let log = std::fs::File::create(spawn.log_file)
        .map_err(|e| PodError::Internal(format!("create {}: {e}", spawn.log_file.display())))?;
    let mut command = Command::new(spawn.binary);
    command
        .arg("monitor")
        .arg("--run-dir")
        .arg(spawn.run_dir)
        .arg("--hostname")
        .arg(spawn.hostname)
        .arg("--log-max-size")
        .arg(spawn.rotation.max_size.to_string())
        .arg("--log-max-files")
        .arg(spawn.rotation.max_files.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    if spawn.host_network {
        command.arg("--host-network");
    }
    if spawn.host_ipc {
        command.arg("--host-ipc");
    }
    if spawn.share_pid {
        command.arg("--share-pid");
    }
    if spawn.join_pinned_network {
        command.arg("--join-pinned-network");
    }
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn().map_err(|e| {
        PodError::Monitor(format!("start pod monitor {}: {e}", spawn.binary.display()))
    })?;
    let stdout = child.stdout.take();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let ok = stdout
            .map(|out| BufReader::new(out).read_line(&mut line).is_ok())
            .unwrap_or(false);
        let _ = tx.send(ok && line.trim() == READY_LINE);
    });
    let ready = rx.recv_timeout(READY_TIMEOUT).unwrap_or(false);
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(spawn.log_file).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        return Err(PodError::Monitor(format!(
            "the pod monitor did not start: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    let pid = child.id();
    // Reap it when it ends; after a daemon restart it is someone else's child.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}

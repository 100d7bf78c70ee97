//! ExecSync: a command run to completion inside a running container, through a short-lived
//! `capstan exec-in` process, with a timeout and a cap on the output kept.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::error::{PodError, Result};
use super::sandbox::find_sandbox;
use super::{PodManager, record};

/// Output kept per stream; the rest is read and dropped (as the kubelet's 16 MiB cap).
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;

/// What an ExecSync produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Standard output, capped.
    pub stdout: Vec<u8>,
    /// Standard error, capped.
    pub stderr: Vec<u8>,
    /// Exit status.
    pub exit_code: i32,
}

impl PodManager {
    /// Runs `argv` in container `id`; a `timeout` of 0 waits for ever.
    pub async fn exec_sync(
        &self,
        id: &str,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        if argv.is_empty() {
            return Err(PodError::Invalid("cmd is required".into()));
        }
        let (container, run_dir) = {
            let state = self.state.lock().await;
            let container = super::container::find_container_in(&state, id)?.clone();
            let sandbox = find_sandbox(&state.sandboxes, &container.sandbox_id)?;
            (container, sandbox.run_dir.clone())
        };
        if container.started_at == 0 || super::container::has_exited(&container) {
            return Err(PodError::FailedPrecondition(format!(
                "container {} is not running",
                container.id
            )));
        }
        let pid_file = container
            .state_dir
            .join(format!("exec-{}.pid", record::new_id()));
        let mut child = tokio::process::Command::new(&self.settings.monitor_binary)
            .arg("exec-in")
            .arg("--root")
            .arg(run_dir.join("libcontainer"))
            .arg("--id")
            .arg(&container.id)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg("--")
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| PodError::Internal(format!("start exec-in: {e}")))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let run = async {
            let (out, err, status) =
                tokio::join!(read_capped(stdout), read_capped(stderr), child.wait());
            (out, err, status)
        };
        let outcome = if timeout.is_zero() {
            Some(run.await)
        } else {
            tokio::time::timeout(timeout, run).await.ok()
        };
        let result = match outcome {
            Some((stdout, stderr, status)) => {
                let status =
                    status.map_err(|e| PodError::Internal(format!("wait for exec-in: {e}")))?;
                let exit_code = status.code().unwrap_or(128);
                if exit_code == 126 && stderr.starts_with(b"capstan exec-in:") {
                    Err(PodError::Internal(
                        String::from_utf8_lossy(&stderr).trim().to_string(),
                    ))
                } else {
                    Ok(ExecOutput {
                        stdout,
                        stderr,
                        exit_code,
                    })
                }
            }
            None => {
                // The helper dies with its handle; the process it started is in the container's
                // pid namespace and must be killed by its host pid.
                if let Some(pid) = std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                Err(PodError::DeadlineExceeded(format!(
                    "command {argv:?} in container {} timed out after {timeout:?}",
                    container.id
                )))
            }
        };
        let _ = std::fs::remove_file(&pid_file);
        result
    }
}

async fn read_capped<R: AsyncRead + Unpin>(reader: Option<R>) -> Vec<u8> {
    let Some(mut reader) = reader else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_EXEC_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
        }
    }
}

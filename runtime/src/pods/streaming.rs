//! What the streaming server needs to know about a container or sandbox: Exec, Attach and
//! PortForward requests are validated here, before a URL is handed out, so a bad request fails
//! at the RPC and names the field.

use super::error::{PodError, Result};
use super::sandbox::find_sandbox;
use super::{PodManager, container};
use crate::streaming::{AttachTarget, ExecTarget, PortForwardTarget, StreamFlags};

impl PodManager {
    /// Checks an Exec request: the container exists and runs, the command is not empty, and
    /// at least one stream is asked for.
    pub async fn exec_target(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        streams: StreamFlags,
    ) -> Result<ExecTarget> {
        super::exec::check_cmd(&cmd)?;
        check_streams(streams)?;
        let state = self.state.lock().await;
        let container =
            container::find_container_in(&state, container_id).map_err(|e| match e {
                PodError::NotFound(what) => PodError::NotFound(format!("container_id: {what}")),
                other => other,
            })?;
        let sandbox = find_sandbox(&state.sandboxes, &container.sandbox_id)?;
        if container.started_at == 0 || container::has_exited(container) {
            return Err(PodError::FailedPrecondition(format!(
                "container {} is not running",
                container.id
            )));
        }
        Ok(ExecTarget {
            container_id: container.id.clone(),
            libcontainer_root: sandbox.run_dir.join("libcontainer"),
            run_dir: sandbox.run_dir.clone(),
            state_dir: container.state_dir.clone(),
            binary: self.settings.monitor_binary.clone(),
            cmd,
            streams,
        })
    }

    /// Checks an Attach request: the container exists and runs, and was created with stdin if
    /// stdin is asked for.
    pub async fn attach_target(
        &self,
        container_id: &str,
        streams: StreamFlags,
    ) -> Result<AttachTarget> {
        check_streams(streams)?;
        let state = self.state.lock().await;
        let container =
            container::find_container_in(&state, container_id).map_err(|e| match e {
                PodError::NotFound(what) => PodError::NotFound(format!("container_id: {what}")),
                other => other,
            })?;
        let sandbox = find_sandbox(&state.sandboxes, &container.sandbox_id)?;
        if container.started_at == 0 || container::has_exited(container) {
            return Err(PodError::FailedPrecondition(format!(
                "container {} is not running",
                container.id
            )));
        }
        if streams.stdin && !container.config.stdin {
            return Err(PodError::Invalid(format!(
                "stdin: container {} was not created with stdin",
                container.id
            )));
        }
        Ok(AttachTarget {
            container_id: container.id.clone(),
            run_dir: sandbox.run_dir.clone(),
            streams,
            detach_at_stdin_eof: !container.config.stdin_once || container.config.tty,
        })
    }

    /// Checks a PortForward request: the sandbox exists and is ready.
    pub async fn port_forward_target(&self, sandbox_id: &str) -> Result<PortForwardTarget> {
        let state = self.state.lock().await;
        let sandbox = find_sandbox(&state.sandboxes, sandbox_id).map_err(|e| match e {
            PodError::NotFound(what) => PodError::NotFound(format!("pod_sandbox_id: {what}")),
            other => other,
        })?;
        if !sandbox.ready {
            return Err(PodError::FailedPrecondition(format!(
                "sandbox {} is not ready",
                sandbox.id
            )));
        }
        // A host-network pod's ports are the host's.
        let netns = sandbox
            .own_network
            .then(|| sandbox.run_dir.join(crate::monitor::NS_DIR).join("net"));
        Ok(PortForwardTarget {
            sandbox_id: sandbox.id.clone(),
            netns,
        })
    }
}

fn check_streams(streams: StreamFlags) -> Result<()> {
    if !streams.stdin && !streams.stdout && !streams.stderr {
        return Err(PodError::Invalid(
            "one of stdin, stdout or stderr must be true".into(),
        ));
    }
    if streams.tty && streams.stderr {
        return Err(PodError::Invalid(
            "tty and stderr cannot both be true: a terminal merges stderr into stdout".into(),
        ));
    }
    Ok(())
}

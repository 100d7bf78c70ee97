//! What the daemon and a pod monitor say to each other: one JSON request and one JSON reply per
//! connection on the monitor's unix socket. Blocking on both sides: the monitor has no async
//! runtime, and the daemon calls from a blocking task.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest request or reply line.
pub const MAX_LINE: usize = 1 << 20;

/// A request to the monitor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Create a container from an OCI bundle; its process waits for `Start`.
    Create(CreateRequest),
    /// Start a created container.
    Start {
        /// Container ID.
        id: String,
    },
    /// Signal every process of a container.
    Kill {
        /// Container ID.
        id: String,
        /// Signal number.
        signal: i32,
    },
    /// Forget a container whose processes are gone, removing its libcontainer state.
    Delete {
        /// Container ID.
        id: String,
    },
    /// Report every container the monitor holds.
    Status,
    /// Reopen a container's log file (after it was rotated away by someone else).
    ReopenLog {
        /// Container ID.
        id: String,
    },
    /// Keep the connection and send an [`ExitEvent`] line whenever a container exits.
    Subscribe,
    /// Keep the connection for a container's output and, with `stdin`, input: after the
    /// reply line it carries [`super::attach`] frames.
    Attach {
        /// Container ID.
        id: String,
        /// The client sends stdin.
        stdin: bool,
    },
    /// Kill everything, release the pod's namespaces and exit.
    Shutdown,
}

/// How to create a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRequest {
    /// Container ID.
    pub id: String,
    /// The OCI bundle (config.json with an absolute root path).
    pub bundle: PathBuf,
    /// Where the CRI-format log goes; empty for none.
    pub log_path: PathBuf,
    /// Directory where the monitor records the exit (`exit.json`).
    pub record_dir: PathBuf,
    /// Keep the container's stdin open for attach clients (CRI `stdin`).
    #[serde(default)]
    pub stdin: bool,
    /// Close it when the first attach client leaves (CRI `stdin_once`).
    #[serde(default)]
    pub stdin_once: bool,
    /// Run it on a terminal (CRI `tty`; the bundle's process asks for one too).
    #[serde(default)]
    pub tty: bool,
    /// Bind mounts whose propagation the monitor sets once libcontainer has made them
    /// (container path, `rprivate` or `rslave`); see [`super::propagation`].
    #[serde(default)]
    pub propagation: Vec<(PathBuf, String)>,
}

/// Sent to subscribers when a container exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitEvent {
    /// Container ID.
    pub id: String,
    /// Its exit status.
    pub exit_code: i32,
}

/// A container as the monitor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerReport {
    /// Container ID.
    pub id: String,
    /// Its init process, on the host.
    pub pid: i32,
    /// created, running or exited.
    pub state: String,
    /// Exit status once exited (128 + signal when killed by a signal).
    pub exit_code: Option<i32>,
}

/// The monitor's reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    /// Done.
    Ok,
    /// Created, with the init pid.
    Created {
        /// Host pid of the container's init.
        pid: i32,
    },
    /// The containers.
    Status {
        /// One report per container.
        containers: Vec<ContainerReport>,
    },
    /// Failed, with a message naming what.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// Why a call to a monitor failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The monitor could not be reached or hung up.
    #[error("pod monitor at {socket}: {message}")]
    Transport {
        /// Its socket.
        socket: PathBuf,
        /// What happened.
        message: String,
    },
    /// The monitor answered with an error.
    #[error("pod monitor: {0}")]
    Refused(String),
}

/// Sends one request and waits up to `timeout` for the reply.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Reply, CallError> {
    let transport = |message: String| CallError::Transport {
        socket: socket.to_path_buf(),
        message,
    };
    let mut stream = UnixStream::connect(socket).map_err(|e| transport(format!("connect: {e}")))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| transport(e.to_string()))?;
    let mut line = serde_json::to_vec(request).map_err(|e| transport(e.to_string()))?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .map_err(|e| transport(format!("send: {e}")))?;
    let mut reply = String::new();
    BufReader::new(std::io::Read::take(stream, MAX_LINE as u64))
        .read_line(&mut reply)
        .map_err(|e| transport(format!("no reply: {e}")))?;
    match serde_json::from_str::<Reply>(&reply) {
        Ok(Reply::Error { message }) => Err(CallError::Refused(message)),
        Ok(reply) => Ok(reply),
        Err(e) => Err(transport(format!("bad reply {reply:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::{Reply, Request};

    #[test]
    fn requests_and_replies_are_tagged_json() {
        let text = serde_json::to_string(&Request::Kill {
            id: "c1".into(),
            signal: 15,
        })
        .unwrap();
        assert_eq!(text, r#"{"op":"kill","id":"c1","signal":15}"#);
        let reply: Reply = serde_json::from_str(r#"{"result":"created","pid":42}"#).unwrap();
        assert!(matches!(reply, Reply::Created { pid: 42 }));
    }
}

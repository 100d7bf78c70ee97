//! The streaming server behind CRI Exec, Attach and PortForward: the RPC registers what to
//! stream under a single-use token and answers a URL on this server; the client (kubectl via an
//! API server, or crictl) upgrades an HTTP request on that URL to WebSocket (the
//! `v5.channel.k8s.io` family) or SPDY/3.1, as the kubelet's streaming server does.
//!
//! - [`tokens`]: single-use, expiring tokens;
//! - `http`: the HTTP/1.1 server and the upgrade negotiation;
//! - `websocket`, `spdy_command`: exec/attach sessions over each protocol;
//! - [`portforward`]: port-forward over SPDY (plain, or tunneled through WebSocket by
//!   `tunnel`) and dialing inside the pod's network namespace;
//! - [`exec`]: the command run through `capstan exec-in`, on pipes or a terminal;
//! - [`attach`]: the container's own stdio, through its pod monitor;
//! - [`session`]: the protocol-agnostic session and its status.

pub mod attach;
pub mod exec;
mod http;
pub mod portforward;
pub mod session;
pub mod spdy;
mod spdy_command;
pub mod tokens;
mod tunnel;
mod websocket;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use session::{Outcome, SessionIo};
use tokens::{TOKEN_TTL, Tokens};

/// Which standard streams a session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamFlags {
    /// The client sends stdin.
    pub stdin: bool,
    /// The client reads stdout.
    pub stdout: bool,
    /// The client reads stderr (never with a TTY: it is merged into stdout).
    pub stderr: bool,
    /// The process runs on a terminal.
    pub tty: bool,
}

/// A command to run in a running container.
#[derive(Debug, Clone)]
pub struct ExecTarget {
    /// The container.
    pub container_id: String,
    /// Its pod monitor's libcontainer root.
    pub libcontainer_root: PathBuf,
    /// The pod's run directory (short paths, for the terminal's unix socket).
    pub run_dir: PathBuf,
    /// Where the exec'd process's pid file goes.
    pub state_dir: PathBuf,
    /// The `capstan` binary, for `capstan exec-in`.
    pub binary: PathBuf,
    /// The command.
    pub cmd: Vec<String>,
    /// Its streams.
    pub streams: StreamFlags,
}

/// A container whose stdio to attach to.
#[derive(Debug, Clone)]
pub struct AttachTarget {
    /// The container.
    pub container_id: String,
    /// Its pod's run directory (the monitor's socket).
    pub run_dir: PathBuf,
    /// The streams.
    pub streams: StreamFlags,
    /// The session ends when the client's stdin does: the container keeps its stdin for the
    /// next client. Only a container with `stdin_once` and no terminal goes on to its end, its
    /// stdin closed, as containerd and the kubelet's docker runtime have it.
    pub detach_at_stdin_eof: bool,
}

/// A pod whose ports to forward.
#[derive(Debug, Clone)]
pub struct PortForwardTarget {
    /// The sandbox.
    pub sandbox_id: String,
    /// Its network namespace pin; None for a host-network pod.
    pub netns: Option<PathBuf>,
}

/// What a token stands for.
#[derive(Debug, Clone)]
pub enum Target {
    /// `/exec/TOKEN`.
    Exec(ExecTarget),
    /// `/attach/TOKEN`.
    Attach(AttachTarget),
    /// `/portforward/TOKEN`.
    PortForward(PortForwardTarget),
}

impl Target {
    /// The URL path segment of this kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Exec(_) => "exec",
            Target::Attach(_) => "attach",
            Target::PortForward(_) => "portforward",
        }
    }

    fn streams(&self) -> StreamFlags {
        match self {
            Target::Exec(exec) => exec.streams,
            Target::Attach(attach) => attach.streams,
            Target::PortForward(_) => StreamFlags::default(),
        }
    }
}

/// Runs an exec or attach session to its end.
async fn run_command(target: Target, io: SessionIo) -> Outcome {
    let kind = target.kind();
    match target {
        Target::Exec(exec) => {
            tracing::info!(container = %exec.container_id, cmd = ?exec.cmd, tty = exec.streams.tty, "exec session started");
            let container = exec.container_id.clone();
            let outcome = exec::run(exec, io).await;
            tracing::info!(%container, ?outcome, "exec session ended");
            outcome
        }
        Target::Attach(target) => {
            tracing::info!(container = %target.container_id, stdin = target.streams.stdin, "attach session started");
            let container = target.container_id.clone();
            let outcome = attach::run(target, io).await;
            tracing::info!(%container, ?outcome, "attach session ended");
            outcome
        }
        Target::PortForward(_) => Outcome::Failed(format!("{kind} is not a command")),
    }
}

/// The streaming server: its address and the pending tokens.
#[derive(Debug, Clone)]
pub struct StreamingServer {
    address: SocketAddr,
    tokens: Arc<Tokens<Target>>,
}

impl StreamingServer {
    /// Binds `listen` and serves on the current tokio runtime until the process ends.
    pub fn start(listen: SocketAddr) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let handle = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let listener = {
            let _guard = handle.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let tokens = Arc::new(Tokens::new(TOKEN_TTL));
        handle.spawn(http::serve(listener, Arc::clone(&tokens)));
        tracing::info!(%address, "streaming server listening");
        Ok(StreamingServer { address, tokens })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Registers `target` and returns the single-use URL that streams it.
    pub fn url(&self, target: Target) -> String {
        let kind = target.kind();
        let token = self.tokens.insert(target);
        format!("http://{}/{kind}/{token}", self.address)
    }
}

//! The containers one monitor holds: created through libcontainer from this single-threaded
//! process, their stdio pipes, and the exit records written when they end.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::signal::Signal as LcSignal;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use nix::poll::PollFlags;
use serde::{Deserialize, Serialize};

use super::attach;
use super::console;
use super::error_text::describe;
use super::logs::{LogWriter, Rotation, Stream};
use super::protocol::{ContainerReport, CreateRequest, Reply};
use super::stdio;

/// How a container ended, as the monitor records it in `exit.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit status (128 + signal when killed by a signal).
    pub exit_code: i32,
    /// When the monitor saw it end (Unix nanoseconds).
    pub finished_at: i64,
    /// The killing signal, if any.
    pub signal: Option<i32>,
    /// The cgroup's OOM killer fired.
    pub oom_killed: bool,
}

/// File name of the exit record in a container's record directory.
pub const EXIT_RECORD: &str = "exit.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Running,
    Exited(i32),
}

struct Held {
    container: Container,
    pid: i32,
    phase: Phase,
    record_dir: PathBuf,
    cgroups_path: Option<PathBuf>,
    log: Option<LogWriter>,
    outputs: Vec<(Stream, OwnedFd)>,
    /// The write end of the container's stdin, kept (non-blocking) when its config asked for
    /// stdin, for attach clients.
    stdin: Option<OwnedFd>,
    /// Close stdin when the first attach client with stdin leaves.
    stdin_once: bool,
    /// Client input the pipe has not taken yet.
    stdin_pending: Vec<u8>,
    /// Close stdin once `stdin_pending` is written (stdin_once: the client is done).
    close_stdin_when_written: bool,
    /// Attached clients, by serial number.
    clients: Vec<(u64, attach::Client)>,
    /// The terminal's master end, for resizing, when the container runs on one.
    terminal: Option<OwnedFd>,
}

/// What an attach-related descriptor in the poll set belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachPoll {
    /// An attached client of the container.
    Client(String, u64),
    /// The container's stdin pipe, which has input waiting.
    Stdin(String),
}

/// Client input waiting for the pipe beyond which clients are not read (backpressure).
const MAX_STDIN_PENDING: usize = 1 << 20;

/// Every container of the pod.
pub struct Containers {
    libcontainer_root: PathBuf,
    held: BTreeMap<String, Held>,
    rotation: Rotation,
    next_client: u64,
}

impl Containers {
    /// An empty set whose libcontainer state lives under `libcontainer_root`.
    pub fn new(libcontainer_root: &Path, rotation: Rotation) -> Self {
        Containers {
            libcontainer_root: libcontainer_root.to_path_buf(),
            held: BTreeMap::new(),
            rotation,
            next_client: 0,
        }
    }

    /// Creates a container; its process waits in libcontainer's init until `start`.
    pub fn create(&mut self, request: CreateRequest) -> Result<i32, String> {
        if self.held.contains_key(&request.id) {
            return Err(format!(
                "container {} already exists in this pod",
                request.id
            ));
        }
        let builder = builder(&self.libcontainer_root, &request.id)?;
        let (container, stdio) = if request.tty {
            // Beside the libcontainer root: the pod's run directory keeps socket paths short.
            let dir = self
                .libcontainer_root
                .parent()
                .unwrap_or(&self.libcontainer_root);
            stdio::create_on_terminal(builder, &request, dir)?
        } else {
            stdio::create_on_pipes(builder, &request)?
        };
        let mut container = container;
        let pid = container.pid().map(|p| p.as_raw()).unwrap_or(-1);
        if let Err(e) = super::propagation::apply(pid, &request.propagation) {
            // Never leave a container whose volumes propagate other than asked.
            if let Err(d) = container.delete(true) {
                tracing::warn!(id = %request.id, error = %describe(&d), "cannot delete the container");
            }
            return Err(format!("container {}: mount propagation: {e}", request.id));
        }
        let log = if request.log_path.as_os_str().is_empty() {
            None
        } else {
            Some(
                LogWriter::open(&request.log_path, self.rotation)
                    .map_err(|e| format!("open log {}: {e}", request.log_path.display()))?,
            )
        };
        let cgroups_path = container
            .spec()
            .ok()
            .and_then(|spec| spec.cgroup_path.to_str().map(PathBuf::from));
        self.held.insert(
            request.id.clone(),
            Held {
                container,
                pid,
                phase: Phase::Created,
                record_dir: request.record_dir,
                cgroups_path,
                log,
                outputs: stdio.outputs,
                stdin: stdio.stdin,
                terminal: stdio.terminal,
                stdin_once: request.stdin_once,
                stdin_pending: Vec::new(),
                close_stdin_when_written: false,
                clients: Vec::new(),
            },
        );
        tracing::info!(id = %request.id, pid, "container created");
        Ok(pid)
    }

    /// Starts a created container.
    pub fn start(&mut self, id: &str) -> Result<(), String> {
        let held = self.get(id)?;
        if held.phase != Phase::Created {
            return Err(format!("container {id} is not in the created state"));
        }
        held.container
            .start()
            .map_err(|e| format!("start container {id}: {}", describe(&e)))?;
        held.phase = Phase::Running;
        tracing::info!(%id, "container started");
        Ok(())
    }

    /// Sends `signal` to the container's init (which takes its pid namespace down with it on
    /// SIGKILL); an exited container is left alone.
    pub fn kill(&mut self, id: &str, signal: i32) -> Result<(), String> {
        let held = self.get(id)?;
        if matches!(held.phase, Phase::Exited(_)) {
            return Ok(());
        }
        let signal = LcSignal::try_from(signal).map_err(|e| format!("signal {signal}: {e}"))?;
        match held.container.kill(signal, true) {
            Ok(()) => Ok(()),
            // It died between our last reap and this signal.
            Err(_) if !process_alive(held.pid) => Ok(()),
            Err(e) => Err(format!("kill container {id}: {}", describe(&e))),
        }
    }

    /// Removes an exited (or never started) container's libcontainer state and cgroup.
    pub fn delete(&mut self, id: &str) -> Result<(), String> {
        let Some(mut held) = self.held.remove(id) else {
            return Ok(());
        };
        if matches!(held.phase, Phase::Running) && process_alive(held.pid) {
            let message = format!("container {id} is still running: stop it first");
            self.held.insert(id.to_string(), held);
            return Err(message);
        }
        held.container
            .delete(true)
            .map_err(|e| format!("delete container {id}: {}", describe(&e)))
    }

    /// Reports every container.
    pub fn reports(&self) -> Vec<ContainerReport> {
        self.held
            .iter()
            .map(|(id, held)| ContainerReport {
                id: id.clone(),
                pid: held.pid,
                state: match held.phase {
                    Phase::Created => "created",
                    Phase::Running => "running",
                    Phase::Exited(_) => "exited",
                }
                .to_string(),
                exit_code: match held.phase {
                    Phase::Exited(code) => Some(code),
                    _ => None,
                },
            })
            .collect()
    }

    /// Reopens the container's log file.
    pub fn reopen_log(&mut self, id: &str) -> Result<(), String> {
        let held = self.get(id)?;
        match held.log.as_mut() {
            Some(log) => log
                .reopen()
                .map_err(|e| format!("reopen the log of {id}: {e}")),
            None => Err(format!("container {id} has no log")),
        }
    }

    /// Records the end of the container whose init was `pid`, if any; returns its ID.
    pub fn on_exit(&mut self, pid: i32, exit_code: i32, signal: Option<i32>) -> Option<String> {
        let (id, held) = self.held.iter_mut().find(|(_, h)| h.pid == pid)?;
        held.phase = Phase::Exited(exit_code);
        let record = ExitRecord {
            exit_code,
            finished_at: chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
            signal,
            oom_killed: held.cgroups_path.as_deref().is_some_and(oom_killed),
        };
        let path = held.record_dir.join(EXIT_RECORD);
        let written = serde_json::to_vec(&record)
            .map_err(std::io::Error::other)
            .and_then(|data| write_atomic(&path, &data));
        if let Err(e) = written {
            tracing::error!(%id, path = %path.display(), error = %e, "cannot record the exit");
        }
        tracing::info!(%id, pid, exit_code, oom = record.oom_killed, "container exited");
        Some(id.clone())
    }

    /// The output pipes still open, for polling: (container, stream, fd).
    pub fn outputs(&self) -> Vec<(String, Stream, i32)> {
        self.held
            .iter()
            .flat_map(|(id, held)| {
                held.outputs
                    .iter()
                    .map(move |(stream, fd)| (id.clone(), *stream, fd.as_raw_fd()))
            })
            .collect()
    }

    /// Drains what `stream` of container `id` has to say into its log; closes it at EOF.
    pub fn drain(&mut self, id: &str, stream: Stream) {
        let Some(held) = self.held.get_mut(id) else {
            return;
        };
        let Some(index) = held.outputs.iter().position(|(s, _)| *s == stream) else {
            return;
        };
        let mut buffer = [0u8; 64 * 1024];
        loop {
            let read = match nix::unistd::read(held.outputs[index].1.as_raw_fd(), &mut buffer) {
                // A terminal whose last user is gone says EIO: its end of output.
                Err(nix::errno::Errno::EIO) => Ok(0),
                other => other,
            };
            match read {
                Ok(0) => {
                    if let Some(log) = held.log.as_mut() {
                        let _ = log.finish(stream);
                    }
                    held.outputs.remove(index);
                    if held.outputs.is_empty() {
                        // Nothing more to show: attach sessions end here.
                        for (_, client) in std::mem::take(&mut held.clients) {
                            client.finish();
                        }
                    }
                    return;
                }
                Ok(n) => {
                    if let Some(log) = held.log.as_mut()
                        && let Err(e) = log.write(stream, &buffer[..n])
                    {
                        tracing::warn!(%id, error = %e, "log write failed");
                    }
                    let kind = match stream {
                        Stream::Stdout => attach::STDOUT,
                        Stream::Stderr => attach::STDERR,
                    };
                    held.clients.retain_mut(|(serial, client)| {
                        let kept = client.send(kind, &buffer[..n]);
                        if !kept {
                            tracing::info!(%id, client = *serial, "dropping a stalled or gone attach client");
                        }
                        kept
                    });
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    /// Kills every container and deletes it, for shutdown.
    pub fn kill_all(&mut self) {
        let ids: Vec<String> = self.held.keys().cloned().collect();
        for id in &ids {
            let _ = self.kill(id, 9);
        }
    }

    /// Deletes every container whose processes are gone.
    pub fn delete_all(&mut self) {
        let ids: Vec<String> = self.held.keys().cloned().collect();
        for id in ids {
            if let Some(held) = self.held.get_mut(&id) {
                held.phase = Phase::Exited(137);
            }
            if let Err(e) = self.delete(&id) {
                tracing::warn!(%id, error = %e, "cannot delete container at shutdown");
            }
        }
    }

    /// Whether any container process is still alive.
    pub fn any_alive(&self) -> bool {
        self.held
            .values()
            .any(|h| !matches!(h.phase, Phase::Exited(_)) && process_alive(h.pid))
    }

    /// Attaches `stream` to container `id`: answers the request on it, then keeps it for
    /// output (and stdin when `stdin`).
    pub fn attach(&mut self, id: &str, stream: UnixStream, stdin: bool) -> Result<(), String> {
        let serial = self.next_client;
        let held = self.get(id)?;
        if held.outputs.is_empty() {
            return Err(format!(
                "container {id} has no more output: it has exited or closed its stdout and stderr"
            ));
        }
        if stdin && held.stdin.is_none() {
            return Err(format!(
                "container {id} has no stdin to attach to: its config did not ask for stdin, or stdin_once closed it"
            ));
        }
        let mut ok = serde_json::to_vec(&Reply::Ok).map_err(|e| e.to_string())?;
        ok.push(b'\n');
        (&stream)
            .write_all(&ok)
            .map_err(|e| format!("answer attach: {e}"))?;
        let client = attach::Client::new(stream, stdin).map_err(|e| format!("attach: {e}"))?;
        held.clients.push((serial, client));
        self.next_client += 1;
        tracing::info!(%id, client = serial, stdin, "client attached");
        Ok(())
    }

    /// The attach descriptors to poll: clients (readable; writable with a backlog) and stdin
    /// pipes with input waiting.
    pub fn attach_polls(&self) -> Vec<(AttachPoll, i32, PollFlags)> {
        let mut polls = Vec::new();
        for (id, held) in &self.held {
            for (serial, client) in &held.clients {
                let mut flags = PollFlags::empty();
                if held.stdin_pending.len() < MAX_STDIN_PENDING {
                    flags |= PollFlags::POLLIN;
                }
                if client.has_backlog() {
                    flags |= PollFlags::POLLOUT;
                }
                polls.push((
                    AttachPoll::Client(id.clone(), *serial),
                    client.fd().as_raw_fd(),
                    flags,
                ));
            }
            if let Some(stdin) = &held.stdin
                && !held.stdin_pending.is_empty()
            {
                polls.push((
                    AttachPoll::Stdin(id.clone()),
                    stdin.as_raw_fd(),
                    PollFlags::POLLOUT,
                ));
            }
        }
        polls
    }

    /// Serves an attach descriptor poll found ready.
    pub fn service_attach(&mut self, what: &AttachPoll) {
        match what {
            AttachPoll::Stdin(id) => {
                if let Some(held) = self.held.get_mut(id) {
                    feed_stdin(id, held);
                }
            }
            AttachPoll::Client(id, serial) => {
                let Some(held) = self.held.get_mut(id) else {
                    return;
                };
                let Some(index) = held.clients.iter().position(|(s, _)| s == serial) else {
                    return;
                };
                let client = &mut held.clients[index].1;
                let input = client.read();
                let flushed = client.flush();
                let had_stdin = client.stdin;
                if let (Some((width, height)), Some(terminal)) = (input.resize, &held.terminal)
                    && let Err(e) = console::set_size(terminal.as_raw_fd(), width, height)
                {
                    tracing::debug!(%id, error = %e, "cannot resize the terminal");
                }
                if !input.stdin.is_empty() && held.stdin.is_some() {
                    held.stdin_pending.extend_from_slice(&input.stdin);
                    feed_stdin(id, held);
                }
                if (input.stdin_closed || input.gone) && had_stdin && held.stdin_once {
                    tracing::info!(%id, "closing stdin: stdin_once and the first client is done");
                    held.close_stdin_when_written = true;
                    feed_stdin(id, held);
                }
                if input.gone || !flushed {
                    held.clients.remove(index);
                    tracing::info!(%id, client = *serial, "client detached");
                }
            }
        }
    }

    fn get(&mut self, id: &str) -> Result<&mut Held, String> {
        self.held
            .get_mut(id)
            .ok_or_else(|| format!("container {id} not found in this pod"))
    }
}

/// The libcontainer builder every container of the monitor starts from (state under `root`).
/// `capstan oci-bench` starts from it too, so it measures the monitor's own path.
pub fn builder(root: &Path, id: &str) -> Result<ContainerBuilder, String> {
    ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_executor(DefaultExecutor {})
        .with_root_path(root)
        .map_err(|e| format!("libcontainer root: {}", describe(&e)))
}

/// Writes what the stdin pipe takes now; a pipe whose reader is gone is closed.
fn feed_stdin(id: &str, held: &mut Held) {
    let Some(stdin) = &held.stdin else {
        held.stdin_pending.clear();
        return;
    };
    while !held.stdin_pending.is_empty() {
        match nix::unistd::write(stdin, &held.stdin_pending) {
            Ok(n) => {
                held.stdin_pending.drain(..n);
            }
            Err(nix::errno::Errno::EAGAIN) => return,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::info!(%id, error = %e, "container stdin closed");
                held.stdin = None;
                held.stdin_pending.clear();
                return;
            }
        }
    }
    if held.close_stdin_when_written {
        // The container reads EOF.
        held.stdin = None;
    }
}

fn process_alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Whether the kernel's OOM killer acted in the container's memory cgroup (v2 `memory.events`,
/// v1 `memory.oom_control`, both carry an `oom_kill` counter).
fn oom_killed(cgroups_path: &Path) -> bool {
    let relative = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
    let candidates = [
        Path::new("/sys/fs/cgroup")
            .join(relative)
            .join("memory.events"),
        Path::new("/sys/fs/cgroup/memory")
            .join(relative)
            .join("memory.oom_control"),
    ];
    candidates.iter().any(|file| {
        std::fs::read_to_string(file)
            .map(|text| {
                text.lines().any(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
            .unwrap_or(false)
    })
}

fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, data)?;
    std::fs::rename(&temp, path)
}

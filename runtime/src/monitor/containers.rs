//! The containers one monitor holds: created through libcontainer from this single-threaded
//! process, their stdio pipes, and the exit records written when they end.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::signal::Signal as LcSignal;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::unistd::pipe2;
use serde::{Deserialize, Serialize};

use super::logs::{LogWriter, Rotation, Stream};
use super::protocol::{ContainerReport, CreateRequest};

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
}

/// Every container of the pod.
pub struct Containers {
    libcontainer_root: PathBuf,
    held: BTreeMap<String, Held>,
    rotation: Rotation,
}

impl Containers {
    /// An empty set whose libcontainer state lives under `libcontainer_root`.
    pub fn new(libcontainer_root: &Path, rotation: Rotation) -> Self {
        Containers {
            libcontainer_root: libcontainer_root.to_path_buf(),
            held: BTreeMap::new(),
            rotation,
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
        // Pipes, never /dev/null: libcontainer reopens /dev/null read-only for stdio.
        let (stdin_read, stdin_write) =
            pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let (stdout_read, stdout_write) =
            pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let (stderr_read, stderr_write) =
            pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let container = create_init(
            &self.libcontainer_root,
            &request.id,
            &request.bundle,
            [stdin_read, stdout_write, stderr_write],
        )?;
        // The container reads EOF on stdin: CRI stdin is not attached.
        drop(stdin_write);
        let pid = container.pid().map(|p| p.as_raw()).unwrap_or(-1);
        for fd in [&stdout_read, &stderr_read] {
            fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
                .map_err(|e| format!("fcntl: {e}"))?;
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
                outputs: vec![(Stream::Stdout, stdout_read), (Stream::Stderr, stderr_read)],
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
            .map_err(|e| format!("start container {id}: {e}"))?;
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
            Err(e) => Err(format!("kill container {id}: {e}")),
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
            .map_err(|e| format!("delete container {id}: {e}"))
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
            match nix::unistd::read(held.outputs[index].1.as_raw_fd(), &mut buffer) {
                Ok(0) => {
                    if let Some(log) = held.log.as_mut() {
                        let _ = log.finish(stream);
                    }
                    held.outputs.remove(index);
                    return;
                }
                Ok(n) => {
                    if let Some(log) = held.log.as_mut()
                        && let Err(e) = log.write(stream, &buffer[..n])
                    {
                        tracing::warn!(%id, error = %e, "log write failed");
                    }
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

    fn get(&mut self, id: &str) -> Result<&mut Held, String> {
        self.held
            .get_mut(id)
            .ok_or_else(|| format!("container {id} not found in this pod"))
    }
}

/// Creates container `id` from the OCI bundle at `bundle` with libcontainer, its state under
/// `root` and `stdio` (stdin, stdout, stderr) as its standard streams; its process waits in
/// libcontainer's init until started. The one place the monitor (and `capstan oci-bench`, which
/// measures exactly this path) builds containers.
pub fn create_init(
    root: &Path,
    id: &str,
    bundle: &Path,
    stdio: [OwnedFd; 3],
) -> Result<Container, String> {
    let [stdin, stdout, stderr] = stdio;
    ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_executor(DefaultExecutor {})
        .with_root_path(root)
        .map_err(|e| format!("libcontainer root: {e}"))?
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("create container {id}: {e}"))
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

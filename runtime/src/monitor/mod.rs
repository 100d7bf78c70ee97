//! The pod monitor: one small process per pod (this binary re-executed, no async runtime) that
//! holds the pod's namespaces, creates its containers through libcontainer, is their subreaper,
//! writes their logs and records how they exit. The daemon talks to it over a unix socket and
//! can die and come back without any container noticing.

pub mod attach;
pub mod confined;
pub mod console;
pub mod containers;
pub mod error_text;
pub mod exec;
pub mod logs;
pub mod memory;
pub mod namespaces;
pub mod oci_bench;
pub mod propagation;
pub mod protocol;
mod signals;
pub mod stdio;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use containers::{AttachPoll, Containers};
use logs::{Rotation, Stream};
use namespaces::PodNamespaces;
use protocol::{Reply, Request};

/// File names inside a pod's run directory.
pub const SOCKET_NAME: &str = "monitor.sock";
/// Directory of the pinned namespaces inside a pod's run directory.
pub const NS_DIR: &str = "ns";
/// What the monitor prints on standard output once it serves.
pub const READY_LINE: &str = "ready";
/// How long the monitor must have been quiet before it gives back memory it does not need
/// ([`memory::trim`]): long enough that a pod's start (sandbox, create, start calls in a row)
/// never pays for pages faulted back in between its steps.
const TRIM_AFTER_IDLE_MS: u16 = 1000;

/// How a monitor is started (the daemon passes these as flags).
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// The pod's run directory: socket, namespace pins, libcontainer state.
    pub run_dir: PathBuf,
    /// Namespaces of the pod's own.
    pub namespaces: PodNamespaces,
    /// Hostname in the pod's UTS namespace.
    pub hostname: String,
    /// The daemon created and pinned the pod's network namespace already: join it.
    pub network_pinned: bool,
    /// Log limits for the pod's containers.
    pub rotation: Rotation,
}

/// Runs the monitor until told to shut down; returns the process exit code.
pub fn run(options: MonitorOptions) -> i32 {
    match serve(&options) {
        Ok(()) => 0,
        Err(message) => {
            tracing::error!(run_dir = %options.run_dir.display(), error = %message, "pod monitor failed");
            eprintln!("capstan monitor: {message}");
            1
        }
    }
}

fn serve(options: &MonitorOptions) -> Result<(), String> {
    // Orphaned container processes must come to us, not to PID 1, so exits are seen at once.
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("become subreaper: {e}"))?;
    let ns_dir = options.run_dir.join(NS_DIR);
    let pid_init = namespaces::create(
        options.namespaces,
        &options.hostname,
        &ns_dir,
        options.network_pinned,
    )?;
    let socket = options.run_dir.join(SOCKET_NAME);
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).map_err(|e| format!("listen on {}: {e}", socket.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let signals = signals::SignalPipe::install()?;
    let mut containers = Containers::new(&options.run_dir.join("libcontainer"), options.rotation);

    announce_ready()?;
    tracing::info!(run_dir = %options.run_dir.display(), pid = std::process::id(), "pod monitor serving");

    let mut subscribers: Vec<UnixStream> = Vec::new();
    let mut shutting_down = false;
    // Start-up touched far more than the idle loop needs.
    let mut active_since_trim = true;
    while !shutting_down {
        let outputs = containers.outputs();
        let mut fds = vec![
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.read_fd(), PollFlags::POLLIN),
        ];
        for (_, _, raw) in &outputs {
            // SAFETY: the descriptors belong to `containers`, which outlives this poll round
            // and closes them only in `drain`, after the poll.
            fds.push(PollFd::new(
                unsafe { BorrowedFd::borrow_raw(*raw) },
                PollFlags::POLLIN,
            ));
        }
        let attach_polls = containers.attach_polls();
        for (_, raw, flags) in &attach_polls {
            // SAFETY: as above: clients and stdin pipes are owned by `containers` and only
            // dropped while serving, after the poll.
            fds.push(PollFd::new(unsafe { BorrowedFd::borrow_raw(*raw) }, *flags));
        }
        let timeout = if active_since_trim {
            PollTimeout::from(TRIM_AFTER_IDLE_MS)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(0) => {
                drop(fds);
                // Not logged: formatting a line would fault back much of what was released.
                memory::trim();
                active_since_trim = false;
                continue;
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => active_since_trim = true,
            Err(e) => return Err(format!("poll: {e}")),
        }
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let listener_ready = ready(&fds[0]);
        let signals_ready = ready(&fds[1]);
        let drains: Vec<(String, Stream)> = outputs
            .iter()
            .zip(&fds[2..])
            .filter(|(_, fd)| ready(fd))
            .map(|((id, stream, _), _)| (id.clone(), *stream))
            .collect();
        let attach_ready: Vec<AttachPoll> = attach_polls
            .iter()
            .zip(&fds[2 + outputs.len()..])
            .filter(|(_, fd)| ready(fd))
            .map(|((what, _, _), _)| what.clone())
            .collect();
        drop(fds);
        for (id, stream) in drains {
            containers.drain(&id, stream);
        }
        for what in &attach_ready {
            containers.service_attach(what);
        }
        if signals_ready {
            for signal in signals.drain() {
                if signal == nix::libc::SIGCHLD {
                    for event in reap(&mut containers) {
                        publish(&mut subscribers, &event);
                    }
                } else {
                    tracing::info!(signal, "pod monitor told to stop");
                    shutting_down = true;
                }
            }
        }
        if listener_ready {
            while let Ok((stream, _)) = listener.accept() {
                match handle(stream, &mut containers) {
                    Outcome::Done => {}
                    Outcome::Shutdown => shutting_down = true,
                    Outcome::Subscribed(stream) => subscribers.push(stream),
                }
            }
        }
    }
    shutdown(&mut containers, pid_init, &ns_dir, &socket)
}

/// Tells the daemon we serve, then lets go of stdout so the daemon's pipe closes.
fn announce_ready() -> Result<(), String> {
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{READY_LINE}")
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("announce: {e}"))?;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?;
    nix::unistd::dup2(null.as_raw_fd(), 1).map_err(|e| format!("detach stdout: {e}"))?;
    Ok(())
}

/// What serving one connection led to.
enum Outcome {
    /// Replied; the connection is closed.
    Done,
    /// Replied; the monitor is to shut down.
    Shutdown,
    /// The connection stays open for exit events.
    Subscribed(UnixStream),
}

/// Sends an exit event to every subscriber, dropping those that hung up or stall.
fn publish(subscribers: &mut Vec<UnixStream>, event: &protocol::ExitEvent) {
    let Ok(mut line) = serde_json::to_vec(event) else {
        return;
    };
    line.push(b'\n');
    subscribers.retain_mut(|stream| (&*stream).write_all(&line).is_ok());
}

/// Serves one request.
fn handle(stream: UnixStream, containers: &mut Containers) -> Outcome {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut reader = BufReader::new(std::io::Read::take(&stream, protocol::MAX_LINE as u64));
    if reader.read_line(&mut line).is_err() {
        return Outcome::Done;
    }
    let request = serde_json::from_str::<Request>(&line);
    if let Ok(Request::Attach { id, stdin }) = &request {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let attached = stream
            .try_clone()
            .map_err(|e| format!("attach: {e}"))
            .and_then(|kept| containers.attach(id, kept, *stdin));
        if let Err(message) = attached {
            let mut text = serde_json::to_vec(&Reply::Error { message }).unwrap_or_default();
            text.push(b'\n');
            let _ = (&stream).write_all(&text);
        }
        return Outcome::Done;
    }
    if matches!(request, Ok(Request::Subscribe)) {
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let mut ok = serde_json::to_vec(&Reply::Ok).unwrap_or_default();
        ok.push(b'\n');
        return match (&stream).write_all(&ok) {
            Ok(()) => Outcome::Subscribed(stream),
            Err(_) => Outcome::Done,
        };
    }
    let (reply, stop) = match request {
        Err(e) => (
            Reply::Error {
                message: format!("bad request: {e}"),
            },
            false,
        ),
        Ok(request) => dispatch(request, containers),
    };
    let mut text = serde_json::to_vec(&reply)
        .unwrap_or_else(|_| b"{\"result\":\"error\",\"message\":\"reply\"}".to_vec());
    text.push(b'\n');
    let _ = (&stream).write_all(&text);
    if stop {
        Outcome::Shutdown
    } else {
        Outcome::Done
    }
}

fn dispatch(request: Request, containers: &mut Containers) -> (Reply, bool) {
    let outcome = match request {
        Request::Create(create) => containers.create(create).map(|pid| Reply::Created { pid }),
        Request::Start { id } => containers.start(&id).map(|()| Reply::Ok),
        Request::Kill { id, signal } => containers.kill(&id, signal).map(|()| Reply::Ok),
        Request::Delete { id } => containers.delete(&id).map(|()| Reply::Ok),
        Request::Status => Ok(Reply::Status {
            containers: containers.reports(),
        }),
        Request::ReopenLog { id } => containers.reopen_log(&id).map(|()| Reply::Ok),
        // Handled before dispatch: they keep the connection.
        Request::Subscribe | Request::Attach { .. } => Ok(Reply::Ok),
        Request::Shutdown => return (Reply::Ok, true),
    };
    let reply = outcome.unwrap_or_else(|message| Reply::Error { message });
    (reply, false)
}

/// Reaps every exited child; returns the exits of containers.
fn reap(containers: &mut Containers) -> Vec<protocol::ExitEvent> {
    let mut events = Vec::new();
    loop {
        let (pid, code, signal) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, code, None),
            Ok(WaitStatus::Signaled(pid, signal, _)) => {
                (pid, 128 + signal as i32, Some(signal as i32))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return events,
            Ok(_) => continue,
        };
        if let Some(id) = containers.on_exit(pid.as_raw(), code, signal) {
            events.push(protocol::ExitEvent {
                id,
                exit_code: code,
            });
        }
    }
}

fn shutdown(
    containers: &mut Containers,
    pid_init: Option<Pid>,
    ns_dir: &Path,
    socket: &Path,
) -> Result<(), String> {
    containers.kill_all();
    for _ in 0..250 {
        let _ = reap(containers);
        if !containers.any_alive() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(init) = pid_init {
        // Ends the pod's PID namespace, and with it anything the containers left in it.
        let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(init, None);
    }
    containers.delete_all();
    let _ = std::fs::remove_file(socket);
    namespaces::release(ns_dir)?;
    tracing::info!("pod monitor stopped");
    Ok(())
}

//! An interactive command in a running container, through a short-lived `capstan exec-in`
//! (as ExecSync, so the daemon never forks from its async threads): on pipes, or on a terminal
//! made inside the container whose master end `exec-in` has libcontainer send to a unix socket
//! of ours, the OCI console socket.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use super::ExecTarget;
use super::session::{Outcome, SessionIo, TermSize};
use crate::monitor::console;

/// How long `exec-in` may take to hand over the terminal.
const TERMINAL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long output may go on after the command exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Runs the command to its end; the exit status or why it could not run.
pub async fn run(target: ExecTarget, io: SessionIo) -> Outcome {
    let id = crate::pods::record::new_id();
    let pid_file = target.state_dir.join(format!("exec-{}.pid", &id[..16]));
    let outcome = if target.streams.tty {
        run_on_terminal(&target, io, &pid_file, &id[..12]).await
    } else {
        run_on_pipes(&target, io, &pid_file).await
    };
    let _ = std::fs::remove_file(&pid_file);
    let _ = std::fs::remove_file(error_file(&pid_file));
    outcome
}

/// Where `exec-in` says why it could not start the command.
fn error_file(pid_file: &Path) -> std::path::PathBuf {
    pid_file.with_extension("error")
}

fn exec_in(target: &ExecTarget, pid_file: &Path) -> Command {
    let mut command = Command::new(&target.binary);
    command
        .arg("exec-in")
        .arg("--root")
        .arg(&target.libcontainer_root)
        .arg("--id")
        .arg(&target.container_id)
        .arg("--pid-file")
        .arg(pid_file)
        .arg("--error-file")
        .arg(error_file(pid_file))
        .kill_on_drop(true);
    command
}

/// Resolves when the client has gone away (never if it cannot tell).
async fn hung_up(mut hangup: watch::Receiver<bool>) {
    loop {
        if *hangup.borrow_and_update() {
            return;
        }
        if hangup.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Kills the exec'd process (in the container's pid namespace, not our child) and lets
/// `exec-in` reap it before it goes.
async fn kill(child: &mut Child, pid_file: &Path) {
    crate::pods::kill_exec(child, pid_file).await;
}

/// The exit status, or why `exec-in` could not start the command (its error file).
fn exit_outcome(status: std::io::Result<std::process::ExitStatus>, pid_file: &Path) -> Outcome {
    match status {
        Ok(status) => match std::fs::read_to_string(error_file(pid_file)) {
            Ok(message) if status.code() == Some(126) => {
                Outcome::Failed(message.trim().to_string())
            }
            _ => Outcome::Exited(status.code().unwrap_or(128)),
        },
        Err(e) => Outcome::Failed(format!("wait for exec-in: {e}")),
    }
}

async fn run_on_pipes(target: &ExecTarget, io: SessionIo, pid_file: &Path) -> Outcome {
    let mut command = exec_in(target, pid_file);
    if io.stdin.is_some() {
        command.arg("--stdin").stdin(Stdio::piped());
    } else {
        command.stdin(Stdio::null());
    }
    command
        .arg("--")
        .args(&target.cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome::Failed(format!("start exec-in: {e}")),
    };
    let stdin_task = match (io.stdin, child.stdin.take()) {
        (Some(mut input), Some(mut pipe)) => Some(tokio::spawn(async move {
            while let Some(data) = input.recv().await {
                if pipe.write_all(&data).await.is_err() {
                    break;
                }
            }
            // Dropping the pipe is the command's EOF.
        })),
        _ => None,
    };
    let stdout = pump(child.stdout.take(), io.stdout);
    let stderr = pump(child.stderr.take(), io.stderr);
    let output = async { tokio::join!(stdout, stderr) };
    let finished = tokio::select! {
        done = wait_with_output(&mut child, output) => Some(done),
        () = hung_up(io.hangup) => None,
    };
    let outcome = match finished {
        Some((status, _)) => exit_outcome(status, pid_file),
        None => {
            kill(&mut child, pid_file).await;
            Outcome::Failed("the client went away".into())
        }
    };
    if let Some(task) = stdin_task {
        task.abort();
    }
    outcome
}

/// Waits for `exec-in` (which exits with the command) and the command's output. Output still
/// open a moment after the command exited is cut off: a background process the command left
/// holds it, and the session ends with the command, not with that process.
async fn wait_with_output<O: std::future::Future>(
    child: &mut Child,
    output: O,
) -> (std::io::Result<std::process::ExitStatus>, Option<O::Output>) {
    tokio::pin!(output);
    let output_first = tokio::select! {
        done = &mut output => Ok(done),
        status = child.wait() => Err(status),
    };
    match output_first {
        Ok(done) => (child.wait().await, Some(done)),
        Err(status) => (
            status,
            tokio::time::timeout(OUTPUT_GRACE, &mut output).await.ok(),
        ),
    }
}

/// Copies `from` to `to` (or drops it when the client does not read it).
async fn pump<R: AsyncRead + Unpin>(from: Option<R>, to: Option<mpsc::Sender<Bytes>>) {
    let Some(mut from) = from else {
        return;
    };
    let mut to = to;
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Some(sender) = &to
                    && sender
                        .send(Bytes::copy_from_slice(&buffer[..n]))
                        .await
                        .is_err()
                {
                    to = None;
                }
            }
        }
    }
}

async fn run_on_terminal(target: &ExecTarget, io: SessionIo, pid_file: &Path, id: &str) -> Outcome {
    // In the pod's run directory: unix socket paths must stay under 108 bytes.
    let socket_path = target.run_dir.join(format!("tty-{id}.sock"));
    let listener = match tokio::net::UnixListener::bind(&socket_path) {
        Ok(listener) => listener,
        Err(e) => {
            return Outcome::Failed(format!("console socket {}: {e}", socket_path.display()));
        }
    };
    let mut command = exec_in(target, pid_file);
    command
        .arg("--console-socket")
        .arg(&socket_path)
        .arg("--")
        .args(&target.cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let spawned = command.spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = std::fs::remove_file(&socket_path);
            return Outcome::Failed(format!("start exec-in: {e}"));
        }
    };
    let master = tokio::select! {
        accepted = listener.accept() => match accepted {
            Ok((stream, _)) => receive_fd(stream).await,
            Err(e) => Err(format!("accept on the console socket: {e}")),
        },
        status = child.wait() => {
            let _ = std::fs::remove_file(&socket_path);
            return match exit_outcome(status, pid_file) {
                Outcome::Exited(code) => Outcome::Failed(format!(
                    "exec-in exited with {code} before handing over the terminal"
                )),
                other => other,
            };
        }
        () = tokio::time::sleep(TERMINAL_TIMEOUT) => Err("no terminal from exec-in in time".to_string()),
    };
    let _ = std::fs::remove_file(&socket_path);
    let master = match master.and_then(|fd| terminal(fd).map_err(|e| format!("terminal: {e}"))) {
        Ok(master) => Arc::new(master),
        Err(message) => {
            kill(&mut child, pid_file).await;
            return Outcome::Failed(message);
        }
    };
    let input = tokio::spawn(feed_terminal(Arc::clone(&master), io.stdin, io.resize));
    let output = read_terminal(Arc::clone(&master), io.stdout);
    let finished = tokio::select! {
        (status, _) = wait_with_output(&mut child, output) => Some(status),
        () = hung_up(io.hangup) => None,
    };
    let outcome = match finished {
        Some(status) => exit_outcome(status, pid_file),
        None => {
            kill(&mut child, pid_file).await;
            Outcome::Failed("the client went away".into())
        }
    };
    input.abort();
    outcome
}

/// Receives the terminal's master end, sent with SCM_RIGHTS by libcontainer.
async fn receive_fd(stream: tokio::net::UnixStream) -> Result<OwnedFd, String> {
    let stream = stream
        .into_std()
        .map_err(|e| format!("console socket: {e}"))?;
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(TERMINAL_TIMEOUT)))
        .map_err(|e| format!("console socket: {e}"))?;
    tokio::task::spawn_blocking(move || console::receive_fd(&stream))
        .await
        .map_err(|e| format!("receive the terminal: {e}"))?
}

fn terminal(fd: OwnedFd) -> std::io::Result<AsyncFd<File>> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(std::io::Error::from)?;
    // SAFETY: the File owns the descriptor and keeps it open, unchanged, for as long as the
    // AsyncFd holding it lives.
    unsafe { AsyncFd::register(File::from(fd)) }.map_err(|e| std::io::Error::other(e.to_string()))
}

/// Copies the terminal's output to the client until the last process on it is gone (EIO).
async fn read_terminal(master: Arc<AsyncFd<File>>, to: Option<mpsc::Sender<Bytes>>) {
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let Ok(mut guard) = master.readable().await else {
            return;
        };
        match guard.try_io(|inner| inner.get_ref().read(&mut buffer)) {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => {
                if let Some(to) = &to {
                    let _ = to.send(Bytes::copy_from_slice(&buffer[..n])).await;
                }
            }
            Err(_would_block) => continue,
        }
    }
}

/// Types the client's input on the terminal and applies its size changes.
async fn feed_terminal(
    master: Arc<AsyncFd<File>>,
    stdin: Option<mpsc::Receiver<Bytes>>,
    resize: Option<mpsc::Receiver<TermSize>>,
) {
    let mut stdin = stdin;
    let mut resize = resize;
    loop {
        tokio::select! {
            data = async { match stdin.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                let Some(data) = data else {
                    // A terminal has no EOF to pass on; the user ends the shell.
                    stdin = None;
                    if resize.is_none() { return; }
                    continue;
                };
                if write_all(&master, &data).await.is_err() {
                    return;
                }
            }
            size = async { match resize.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                match size {
                    Some(size) => set_size(master.get_ref(), size),
                    None => {
                        resize = None;
                        if stdin.is_none() { return; }
                    }
                }
            }
        }
    }
}

async fn write_all(master: &AsyncFd<File>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = master.writable().await?;
        match guard.try_io(|inner| inner.get_ref().write(data)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

fn set_size(master: &File, size: TermSize) {
    if let Err(e) = console::set_size(master.as_raw_fd(), size.width, size.height) {
        tracing::debug!(error = %e, "cannot resize the terminal");
    }
}

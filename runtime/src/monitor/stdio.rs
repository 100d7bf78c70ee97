//! A new container's standard streams: pipes, or a terminal made inside the container whose
//! master end libcontainer sends to the monitor over a console socket.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::unistd::pipe2;

use super::console;
use super::error_text::describe;
use super::logs::Stream;
use super::protocol::CreateRequest;

/// A new container's ends of its stdio.
pub struct Stdio {
    /// The output ends to drain, by stream.
    pub outputs: Vec<(Stream, OwnedFd)>,
    /// The input end, kept for attach clients when the config asked for stdin.
    pub stdin: Option<OwnedFd>,
    /// The terminal's master end, for resizing.
    pub terminal: Option<OwnedFd>,
}

/// Creates the container with pipes for stdio.
pub fn create_on_pipes(
    builder: ContainerBuilder,
    request: &CreateRequest,
) -> Result<(Container, Stdio), String> {
    // Pipes, never /dev/null: libcontainer reopens /dev/null read-only for stdio.
    let (stdin_read, stdin_write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (stdout_read, stdout_write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (stderr_read, stderr_write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let container = builder
        .with_stdin(stdin_read)
        .with_stdout(stdout_write)
        .with_stderr(stderr_write)
        .as_init(&request.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| {
            let mut text = format!("create container {}: {}", request.id, describe(&e));
            // libcontainer's init sends its parent a bare "failed syscall"; the call and the
            // errno are only in what it logged on the container's stderr before dying.
            if let Some(cause) = init_error(&stderr_read) {
                text.push_str(" (");
                text.push_str(&cause);
                text.push(')');
            }
            text
        })?;
    // Without stdin in its config the container reads EOF; with it, the pipe stays open
    // for attach clients (and the container waits for input as under a kubelet).
    let stdin = if request.stdin {
        set_nonblocking(&stdin_write)?;
        Some(stdin_write)
    } else {
        drop(stdin_write);
        None
    };
    set_nonblocking(&stdout_read)?;
    set_nonblocking(&stderr_read)?;
    Ok((
        container,
        Stdio {
            outputs: vec![(Stream::Stdout, stdout_read), (Stream::Stderr, stderr_read)],
            stdin,
            terminal: None,
        },
    ))
}

/// The first error libcontainer's init logged on the container's stderr (`stderr`, whose
/// write ends are all closed once the init is gone), without colours or timestamps.
fn init_error(stderr: &OwnedFd) -> Option<String> {
    set_nonblocking(stderr).ok()?;
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    // Bounded: a pipe holds 64 KiB unless resized, and this runs only on failure.
    while bytes.len() < 256 * 1024 {
        match nix::unistd::read(stderr.as_raw_fd(), &mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    text.lines()
        .map(strip_ansi)
        .find(|line| line.contains("ERROR"))
        .map(|line| match line.split_once("ERROR") {
            Some((_, rest)) => rest.trim().to_string(),
            None => line,
        })
}

/// `line` without terminal colour sequences (ESC [ ... m).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Makes reads and writes on `fd` return EAGAIN instead of waiting.
pub fn set_nonblocking(fd: &OwnedFd) -> Result<(), String> {
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| format!("fcntl: {e}"))?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map(drop)
    .map_err(|e| format!("fcntl: {e}"))
}

/// Creates the container on a terminal made inside it; its master end is its only output
/// (stdout, as the kubelet logs a terminal) and, with stdin, its input.
pub fn create_on_terminal(
    builder: ContainerBuilder,
    request: &CreateRequest,
    dir: &Path,
) -> Result<(Container, Stdio), String> {
    let short = request.id.get(..12).unwrap_or(&request.id);
    let socket = dir.join(format!("console-{short}.sock"));
    let _ = std::fs::remove_file(&socket);
    let listener = std::os::unix::net::UnixListener::bind(&socket)
        .map_err(|e| format!("console socket {}: {e}", socket.display()))?;
    let built = builder
        .with_console_socket(Some(&socket))
        .as_init(&request.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build();
    let master = built
        .map_err(|e| format!("create container {}: {}", request.id, describe(&e)))
        .and_then(|container| {
            console::receive(&listener, std::time::Duration::from_secs(10))
                .map(|master| (container, master))
        });
    let _ = std::fs::remove_file(&socket);
    let (container, master) = master?;
    set_nonblocking(&master)?;
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| format!("dup the terminal: {e}"));
    let stdin = if request.stdin {
        Some(dup(&master)?)
    } else {
        None
    };
    Ok((
        container,
        Stdio {
            outputs: vec![(Stream::Stdout, dup(&master)?)],
            stdin,
            terminal: Some(master),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inits_first_error_line_is_found_without_colours() {
        let (read, write) = pipe2(OFlag::O_CLOEXEC).unwrap();
        let log = "\u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m \u{1b}[34mDEBUG\u{1b}[0m mounting\n\
                   \u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m \
                   \u{1b}[2mlibcontainer::process::init\u{1b}[0m\u{1b}[2m:\u{1b}[0m failed to drop capabilities \
                   \u{1b}[3merr\u{1b}[0m\u{1b}[2m=\u{1b}[0mEPERM\n";
        nix::unistd::write(&write, log.as_bytes()).unwrap();
        drop(write);
        assert_eq!(
            init_error(&read).as_deref(),
            Some("libcontainer::process::init: failed to drop capabilities err=EPERM")
        );
    }
}

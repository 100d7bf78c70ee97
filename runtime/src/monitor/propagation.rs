//! Sets the propagation of a created container's bind mounts inside its mount namespace.
//! libcontainer 0.7 clones a bind mount with `open_tree` and never applies the spec's
//! `rprivate`/`rslave` option, so the copy keeps its source's propagation: a volume asked to be
//! a slave would still push the container's mounts out to the host. The container's init is
//! waiting for StartContainer at this point, so nothing of the container runs yet.

use std::io::Read;
use std::path::PathBuf;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, pipe};

/// Applies each `(container path, "rprivate" | "rslave" | "rshared")` in the mount namespace
/// of `pid` (the container's init, as the host sees it).
pub fn apply(pid: i32, mounts: &[(PathBuf, String)]) -> Result<(), String> {
    if mounts.is_empty() {
        return Ok(());
    }
    let mut flags = Vec::with_capacity(mounts.len());
    for (path, propagation) in mounts {
        let flag = match propagation.as_str() {
            "rprivate" => MsFlags::MS_PRIVATE,
            "rslave" => MsFlags::MS_SLAVE,
            "rshared" => MsFlags::MS_SHARED,
            other => return Err(format!("{}: unknown propagation {other:?}", path.display())),
        };
        flags.push((path.clone(), flag | MsFlags::MS_REC));
    }
    let namespace = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .map_err(|e| format!("open the mount namespace of {pid}: {e}"))?;
    let (read, write) = pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the monitor is single-threaded (no async runtime, no helper threads), so the
    // child may run anything; it only makes syscalls and leaves through _exit, never returning
    // into the monitor's code or running its destructors.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(read);
            // Joining a mount namespace also moves root and cwd to its root: the container's,
            // as pivot_root left it, so the paths are the container's own.
            let outcome = setns(&namespace, CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("join the container's mount namespace: {e}"))
                .and_then(|()| {
                    flags.iter().try_for_each(|(path, flag)| {
                        mount(None::<&str>, path, None::<&str>, *flag, None::<&str>)
                            .map_err(|e| format!("{}: {e}", path.display()))
                    })
                });
            let code = match outcome {
                Ok(()) => 0,
                Err(message) => {
                    let _ = nix::unistd::write(&write, message.as_bytes());
                    1
                }
            };
            // SAFETY: _exit ends the child without running the parent's atexit handlers or
            // flushing its buffers, which belong to the monitor.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(write);
            let mut message = String::new();
            let _ = std::fs::File::from(read).read_to_string(&mut message);
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            match status {
                Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                Ok(_) if !message.is_empty() => Err(message),
                other => Err(format!("setting mount propagation: {other:?}")),
            }
        }
    }
}

//! Pod monitors no record owns: a monitor serving one of this runtime's pod run directories
//! that no sandbox record names (the record was lost, or the daemon died before saving it).
//! Its containers run on, unseen by any CRI call, and sweeping its directories would unmount
//! their rootfs under them; it is stopped first, with its containers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::pods::State;

/// How long a monitor told to stop may take: it gives its containers up to five seconds to
/// die, then releases its namespaces.
const STOP_WAIT: Duration = Duration::from_secs(8);
/// How long a SIGKILLed monitor may take to go.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Stops every live monitor under `run_root` whose run directory no sandbox of `state` has:
/// through its socket when it still answers, else with SIGTERM (on which it stops its
/// containers and releases its namespaces, as on a shutdown request), SIGKILL as a last resort.
pub(super) fn stop_unowned(run_root: &Path, state: &State) {
    for (pid, run_dir) in monitors_under(run_root) {
        if state.sandboxes.values().any(|s| s.run_dir == run_dir) {
            continue;
        }
        let socket = run_dir.join(crate::monitor::SOCKET_NAME);
        let asked = socket.exists()
            && crate::monitor::protocol::call(
                &socket,
                &crate::monitor::protocol::Request::Shutdown,
                crate::pods::MONITOR_TIMEOUT,
            )
            .is_ok();
        let reason = if asked {
            "no sandbox record names its run directory"
        } else {
            "no sandbox record names its run directory, and its socket does not answer"
        };
        if !asked {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if wait_gone(pid, STOP_WAIT) {
            tracing::warn!(pid, run_dir = %run_dir.display(), reason, "stopped a pod monitor no sandbox record owns, with its containers");
            continue;
        }
        // Its containers, if it left any, go with the pod cgroup sweep: no live monitor owns
        // them any more.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        if wait_gone(pid, KILL_WAIT) {
            tracing::warn!(pid, run_dir = %run_dir.display(), reason, "killed a pod monitor no sandbox record owns: it did not stop when told");
        } else {
            tracing::error!(pid, run_dir = %run_dir.display(), reason, "a pod monitor no sandbox record owns survived SIGKILL");
        }
    }
}

/// Live pod monitors serving a run directory below `run_root`: (pid, run directory).
fn monitors_under(run_root: &Path) -> Vec<(i32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id();
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).is_ok_and(|p| p != own))
        .filter_map(|pid| Some((pid, monitor_run_dir(pid)?)))
        .filter(|(pid, dir)| dir.parent() == Some(run_root) && alive(*pid))
        .collect()
}

/// The `--run-dir` of process `pid` if it is a pod monitor (`<binary> monitor --run-dir DIR`).
pub(super) fn monitor_run_dir(pid: i32) -> Option<PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    match args.as_slice() {
        [_, b"monitor", b"--run-dir", dir, ..] => {
            Some(PathBuf::from(String::from_utf8_lossy(dir).into_owned()))
        }
        _ => None,
    }
}

/// Whether `pid` runs: a zombie (a monitor whose parent, the dead daemon, cannot reap it)
/// has stopped.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat[stat.rfind(')')? + 1..].trim_start().chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Waits up to `timeout` for `pid` to stop running.
fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::{alive, monitor_run_dir, monitors_under};

    #[test]
    fn monitors_are_told_from_other_processes() {
        let own = i32::try_from(std::process::id()).unwrap();
        assert!(alive(own));
        assert!(!alive(i32::MAX), "no such process");
        assert_eq!(
            monitor_run_dir(own),
            None,
            "a test binary is no pod monitor"
        );
        let root = tempfile::tempdir().unwrap();
        assert!(monitors_under(root.path()).is_empty());
    }
}

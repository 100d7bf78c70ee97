//! The start-up sweep: removes what a crash between two steps can leave, and logs each removal
//! with its reason.
//!
//! - pod run directories without a sandbox record (namespace pins included);
//! - pod state directories without a sandbox record (made before the record is saved, after
//!   CNI ADD), with anything mounted below them;
//! - container directories without a container record (rootfs mounts included);
//! - pod cgroups below the runtime's default parent without a sandbox record, and container
//!   cgroups of known sandboxes without a container record (see [`cgroups`]).
//!
//! Before any of that, pod monitors serving a run directory no sandbox record names are
//! stopped with their containers (see [`monitors`]): sweeping their directories would unmount
//! the rootfs of containers still running.
//!
//! It also marks sandboxes whose monitor is gone as not ready.

mod cgroups;
mod monitors;
mod mounts;

use std::path::Path;

use super::record::SANDBOX_FILE;
use super::{PodSettings, State};

/// Sweeps the debris of a previous run; see the module documentation.
pub(super) fn sweep(settings: &PodSettings, state: &mut State) {
    monitors::stop_unowned(&settings.run_root, state);
    sweep_run_dirs(settings, state);
    sweep_state_dirs(settings, state);
    sweep_container_dirs(state);
    cgroups::sweep(settings, state);
    for sandbox in state.sandboxes.values_mut() {
        let socket = sandbox.run_dir.join(crate::monitor::SOCKET_NAME);
        if sandbox.ready && std::os::unix::net::UnixStream::connect(&socket).is_err() {
            tracing::warn!(id = %sandbox.id, "the pod monitor is gone: sandbox marked not ready");
            sandbox.ready = false;
        }
    }
}

fn sweep_run_dirs(settings: &PodSettings, state: &State) {
    let Ok(entries) = std::fs::read_dir(&settings.run_root) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if state.sandboxes.values().any(|s| s.run_dir == dir) {
            continue;
        }
        stop_unrecorded_monitor(&dir);
        let _ = crate::monitor::namespaces::release(&dir.join(crate::monitor::NS_DIR));
        remove_dir(&dir, "swept a pod run directory without a record");
    }
}

/// Stops the monitor serving in `run_dir`, a pod the daemon died creating before it saved the
/// record: the monitor was started in a session of its own and outlives the daemon. A monitor
/// that had not yet announced itself exits on its own when the announcement finds no reader.
fn stop_unrecorded_monitor(run_dir: &Path) {
    let socket = run_dir.join(crate::monitor::SOCKET_NAME);
    if !socket.exists() {
        return;
    }
    match crate::monitor::protocol::call(
        &socket,
        &crate::monitor::protocol::Request::Shutdown,
        super::MONITOR_TIMEOUT,
    ) {
        Ok(_) => {
            tracing::info!(dir = %run_dir.display(), "stopped the monitor of a pod without a record")
        }
        Err(e) => {
            tracing::warn!(dir = %run_dir.display(), error = %e, "cannot stop the monitor of a pod without a record");
            return;
        }
    }
    // It releases its namespaces and removes its socket last.
    for _ in 0..250 {
        if !socket.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn sweep_state_dirs(settings: &PodSettings, state: &State) {
    let Ok(entries) = std::fs::read_dir(&settings.state_root) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir())
            || state.sandboxes.values().any(|s| s.state_dir == dir)
        {
            continue;
        }
        if dir.join(SANDBOX_FILE).exists() {
            // A record that could not be read is kept for a person to look at, and so is
            // what it describes.
            tracing::warn!(dir = %dir.display(), "a pod state directory with an unreadable record is kept");
            continue;
        }
        remove_dir(&dir, "swept a pod state directory without a sandbox record");
    }
}

fn sweep_container_dirs(state: &State) {
    for sandbox in state.sandboxes.values() {
        let Ok(entries) = std::fs::read_dir(sandbox.state_dir.join("containers")) else {
            continue;
        };
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if !state.containers.contains_key(&id) {
                remove_dir(
                    &entry.path(),
                    "swept a container directory without a record",
                );
            }
        }
    }
}

/// Unmounts everything below `dir`, then removes it, logging `message` on success. A directory
/// something stays mounted in is left: removing it would delete inside the mounted file system.
fn remove_dir(dir: &Path, message: &'static str) {
    if !mounts::unmount_below(dir) {
        tracing::warn!(dir = %dir.display(), "left: something below it is still mounted");
        return;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => tracing::info!(dir = %dir.display(), "{message}"),
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot sweep a directory"),
    }
}

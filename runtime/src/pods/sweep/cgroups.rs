//! Cgroups a crash left: pod cgroups below the runtime's default parent whose sandbox has no
//! record, and container cgroups of known sandboxes whose container has no record.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::monitors::monitor_run_dir;
use crate::cgroups::Hierarchy;
use crate::pods::sandbox::sandbox_cgroup_parent;
use crate::pods::{PodSettings, State, pod_cgroup};

/// How long killed processes may take to leave their cgroup.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Who may keep processes in a cgroup the sweep would otherwise remove.
struct Owners<'a> {
    /// Monitors of the sandboxes this runtime has records of.
    known_monitors: HashSet<i32>,
    /// This runtime's pod run directories: a monitor serving one outside it belongs to another
    /// runtime that shares the cgroup parent (tests run several side by side).
    run_root: &'a Path,
}

/// Removes orphan pod and container cgroups in every hierarchy, deepest first. Processes in
/// them are killed first unless they descend from a live pod monitor (one of a known sandbox,
/// or another runtime's): those cgroups are left, with a warning.
pub(super) fn sweep(settings: &PodSettings, state: &State) {
    let hierarchy = Hierarchy::detect();
    let owners = Owners {
        known_monitors: state
            .sandboxes
            .values()
            .filter_map(|s| i32::try_from(s.monitor_pid).ok())
            .filter(|pid| *pid > 0)
            .collect(),
        run_root: &settings.run_root,
    };
    let parent = &settings.default_cgroup_parent;
    for name in children(&hierarchy, parent) {
        // Only names this runtime gives pod cgroups; anything else below is not ours.
        let Some(short) = name.strip_prefix("pod-") else {
            continue;
        };
        if short.is_empty() || state.sandboxes.keys().any(|id| id.starts_with(short)) {
            continue;
        }
        remove(
            &hierarchy,
            &format!("{parent}/{name}"),
            "no sandbox record",
            &owners,
        );
    }
    for sandbox in state.sandboxes.values() {
        let parent = sandbox_cgroup_parent(&sandbox.config)
            .unwrap_or_else(|| pod_cgroup(&settings.default_cgroup_parent, &sandbox.id));
        for name in children(&hierarchy, &parent) {
            // A pod cgroup the kubelet named may hold more than containers: only container
            // IDs are the runtime's.
            if !is_container_id(&name) || state.containers.contains_key(&name) {
                continue;
            }
            let path = format!("{}/{name}", parent.trim_end_matches('/'));
            remove(&hierarchy, &path, "no container record", &owners);
        }
    }
}

/// Removes cgroup `path` (its processes killed first unless owned), logging what and why.
fn remove(hierarchy: &Hierarchy, path: &str, why: &str, owners: &Owners<'_>) {
    let pids = processes(hierarchy, path);
    if let Some((pid, owner)) = pids
        .iter()
        .find_map(|pid| owners.owner_of(*pid).map(|o| (pid, o)))
    {
        tracing::warn!(cgroup = %path, reason = why, pid, owner = %owner, "cgroup left: it holds a process of a live pod");
        return;
    }
    if !pids.is_empty() && !kill_all(hierarchy, path) {
        tracing::warn!(cgroup = %path, reason = why, "cgroup left: its processes did not exit");
        return;
    }
    match hierarchy.remove(path) {
        Ok(()) => {
            tracing::info!(cgroup = %path, reason = why, killed = pids.len(), "swept a cgroup without a record")
        }
        Err(e) => tracing::warn!(cgroup = %path, reason = why, error = %e, "cannot sweep a cgroup"),
    }
}

/// SIGKILLs everything in `path` until it is empty (processes may fork meanwhile); whether it
/// emptied in time.
fn kill_all(hierarchy: &Hierarchy, path: &str) -> bool {
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let pids = processes(hierarchy, path);
        if pids.is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        for pid in pids {
            tracing::info!(cgroup = %path, pid, "killing a process of a cgroup without a record");
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Owners<'_> {
    /// What keeps `pid`: the live pod monitor it descends from, if that monitor is a known
    /// sandbox's or another runtime's.
    fn owner_of(&self, pid: i32) -> Option<String> {
        let mut current = pid;
        // Bounded: a parent chain is short, and a racing exit must not loop forever.
        for _ in 0..256 {
            if current <= 1 {
                return None;
            }
            if self.known_monitors.contains(&current) {
                return Some(format!("monitor {current} of a known sandbox"));
            }
            if let Some(run_dir) = monitor_run_dir(current)
                && !run_dir.starts_with(self.run_root)
            {
                return Some(format!(
                    "monitor {current} of another runtime ({})",
                    run_dir.display()
                ));
            }
            current = parent_pid(current)?;
        }
        None
    }
}

/// The parent of `pid` from `/proc/<pid>/stat` (the field after the parenthesised name, which
/// may itself hold spaces and parentheses).
fn parent_pid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Every process in `path` or below, in any hierarchy.
fn processes(hierarchy: &Hierarchy, path: &str) -> BTreeSet<i32> {
    let mut pids = BTreeSet::new();
    for dir in hierarchy.dirs(path) {
        collect_processes(&dir, &mut pids);
    }
    pids
}

fn collect_processes(dir: &Path, pids: &mut BTreeSet<i32>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_processes(&entry.path(), pids);
        }
    }
}

/// Names of the child cgroups of `parent`, over every hierarchy.
fn children(hierarchy: &Hierarchy, parent: &str) -> BTreeSet<String> {
    hierarchy
        .dirs(parent)
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Whether `name` looks like a container ID this runtime makes (64 lower-case hex digits).
fn is_container_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::{is_container_id, monitor_run_dir, parent_pid};

    #[test]
    fn container_ids_and_process_parents_are_read() {
        assert!(is_container_id(&"ab12".repeat(16)));
        assert!(!is_container_id("pod-0123456789ab"));
        assert!(!is_container_id(&"AB12".repeat(16)));
        let own = i32::try_from(std::process::id()).unwrap();
        let parent = i32::try_from(std::os::unix::process::parent_id()).unwrap();
        assert_eq!(parent_pid(own), Some(parent));
        assert_eq!(
            monitor_run_dir(own),
            None,
            "a test binary is no pod monitor"
        );
    }
}

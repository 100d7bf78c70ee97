//! Resource usage read from a cgroup's files, on v2 or v1 alike.

use std::path::{Path, PathBuf};

/// Usage of one cgroup at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time used, in nanoseconds.
    pub cpu_nanos: Option<u64>,
    /// Memory charged, in bytes.
    pub memory_bytes: Option<u64>,
    /// Memory charged minus inactive file pages: what the kubelet evicts on.
    pub working_set_bytes: Option<u64>,
    /// Anonymous memory.
    pub rss_bytes: Option<u64>,
    /// Memory limit, when one is set.
    pub limit_bytes: Option<u64>,
    /// Processes in the cgroup and below.
    pub processes: Option<u64>,
}

/// Reads the usage of cgroup `path` (absolute within the hierarchy).
pub fn read(path: &str) -> CgroupUsage {
    let relative = path.trim_start_matches('/');
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        read_v2(&Path::new("/sys/fs/cgroup").join(relative))
    } else {
        read_v1(relative)
    }
}

fn read_v2(dir: &Path) -> CgroupUsage {
    let cpu_nanos = stat_field(&dir.join("cpu.stat"), "usage_usec").map(|us| us * 1000);
    let memory = number(&dir.join("memory.current"));
    let memory_stat = dir.join("memory.stat");
    let inactive = stat_field(&memory_stat, "inactive_file").unwrap_or(0);
    CgroupUsage {
        cpu_nanos,
        memory_bytes: memory,
        working_set_bytes: memory.map(|m| m.saturating_sub(inactive)),
        rss_bytes: stat_field(&memory_stat, "anon"),
        limit_bytes: number(&dir.join("memory.max")),
        processes: number(&dir.join("pids.current")),
    }
}

fn read_v1(relative: &str) -> CgroupUsage {
    let at = |controller: &str, file: &str| -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(relative)
            .join(file)
    };
    let memory = number(&at("memory", "memory.usage_in_bytes"));
    let inactive = stat_field(&at("memory", "memory.stat"), "total_inactive_file").unwrap_or(0);
    // v1 reports "no limit" as a huge page-aligned number.
    let limit = number(&at("memory", "memory.limit_in_bytes")).filter(|l| *l < (1 << 62));
    CgroupUsage {
        cpu_nanos: number(&at("cpuacct", "cpuacct.usage")),
        memory_bytes: memory,
        working_set_bytes: memory.map(|m| m.saturating_sub(inactive)),
        rss_bytes: stat_field(&at("memory", "memory.stat"), "total_rss"),
        limit_bytes: limit,
        processes: number(&at("pids", "pids.current")),
    }
}

fn number(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn stat_field(file: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(' ')?;
            (name == key).then(|| value.trim().parse().ok()).flatten()
        })
}

#[cfg(test)]
mod tests {
    use super::stat_field;

    #[test]
    fn stat_files_are_read_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.stat");
        std::fs::write(&file, "anon 4096\ninactive_file 100\ntotal_rss 7\n").unwrap();
        assert_eq!(stat_field(&file, "inactive_file"), Some(100));
        assert_eq!(stat_field(&file, "anon"), Some(4096));
        assert_eq!(stat_field(&file, "missing"), None);
    }
}

//! Resource usage read from a cgroup's files, on v2 or v1 alike.

use std::path::{Path, PathBuf};

/// Usage of one cgroup at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time used, in nanoseconds.
    pub cpu_nanos: Option<u64>,
    /// CPU time used in user mode, in nanoseconds.
    pub cpu_user_nanos: Option<u64>,
    /// CPU time used in kernel mode, in nanoseconds.
    pub cpu_system_nanos: Option<u64>,
    /// Memory charged, in bytes.
    pub memory_bytes: Option<u64>,
    /// Memory charged minus inactive file pages: what the kubelet evicts on.
    pub working_set_bytes: Option<u64>,
    /// Anonymous memory.
    pub rss_bytes: Option<u64>,
    /// Page cache (file-backed memory).
    pub cache_bytes: Option<u64>,
    /// Processes the kernel's OOM killer killed in the cgroup.
    pub oom_kills: Option<u64>,
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
    let cpu_stat = dir.join("cpu.stat");
    let usec = |key| stat_field(&cpu_stat, key).map(|us| us.saturating_mul(1000));
    let memory = number(&dir.join("memory.current"));
    let memory_stat = dir.join("memory.stat");
    let inactive = stat_field(&memory_stat, "inactive_file").unwrap_or(0);
    CgroupUsage {
        cpu_nanos: usec("usage_usec"),
        cpu_user_nanos: usec("user_usec"),
        cpu_system_nanos: usec("system_usec"),
        memory_bytes: memory,
        working_set_bytes: memory.map(|m| m.saturating_sub(inactive)),
        rss_bytes: stat_field(&memory_stat, "anon"),
        cache_bytes: stat_field(&memory_stat, "file"),
        oom_kills: stat_field(&dir.join("memory.events"), "oom_kill"),
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
    let cpuacct_stat = at("cpuacct", "cpuacct.stat");
    let ticks = |key| stat_field(&cpuacct_stat, key).map(ticks_to_nanos);
    CgroupUsage {
        cpu_nanos: number(&at("cpuacct", "cpuacct.usage")),
        cpu_user_nanos: ticks("user"),
        cpu_system_nanos: ticks("system"),
        memory_bytes: memory,
        working_set_bytes: memory.map(|m| m.saturating_sub(inactive)),
        rss_bytes: stat_field(&at("memory", "memory.stat"), "total_rss"),
        cache_bytes: stat_field(&at("memory", "memory.stat"), "total_cache"),
        // Kernels before 4.13 have no oom_kill line: then there is no count to report.
        oom_kills: stat_field(&at("memory", "memory.oom_control"), "oom_kill"),
        limit_bytes: limit,
        processes: number(&at("pids", "pids.current")),
    }
}

/// cpuacct.stat counts in USER_HZ ticks, not nanoseconds.
fn ticks_to_nanos(ticks: u64) -> u64 {
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|hz| u64::try_from(hz).ok())
        .filter(|hz| *hz > 0)
        // USER_HZ is 100 on every architecture Linux exports these files on.
        .unwrap_or(100);
    ticks.saturating_mul(1_000_000_000) / per_second
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
    use super::{read_v2, stat_field, ticks_to_nanos};

    #[test]
    fn v2_files_fill_cpu_split_cache_and_oom_kills() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write(
            "cpu.stat",
            "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\n",
        );
        write("memory.current", "8192\n");
        write("memory.stat", "anon 4096\nfile 2048\ninactive_file 1024\n");
        write("memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 1\n");
        write("memory.max", "max\n");
        write("pids.current", "3\n");
        let usage = read_v2(dir.path());
        assert_eq!(usage.cpu_nanos, Some(3_000_000));
        assert_eq!(usage.cpu_user_nanos, Some(2_000_000));
        assert_eq!(usage.cpu_system_nanos, Some(1_000_000));
        assert_eq!(usage.working_set_bytes, Some(7168));
        assert_eq!(usage.cache_bytes, Some(2048));
        assert_eq!(usage.oom_kills, Some(1));
        assert_eq!(usage.limit_bytes, None, "\"max\" is no limit");
        assert_eq!(usage.processes, Some(3));
    }

    #[test]
    fn user_hz_ticks_become_nanoseconds() {
        // USER_HZ is 100 on the architectures these tests run on: one tick is 10 ms.
        assert_eq!(ticks_to_nanos(150), 1_500_000_000);
    }

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

//! Which controllers a cgroup can use on this host: v1 hierarchies that are mounted, v2
//! controllers enabled down to it. A runtime asked for a limit of a controller the host lacks
//! skips it, as runc does, instead of failing the container.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::{CGROUP_MOUNT, Driver};

/// A mounted cgroup v1 hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Mount {
    /// Where it is mounted, e.g. `/sys/fs/cgroup/cpu,cpuacct`.
    pub mount_point: PathBuf,
    /// The controllers it carries, e.g. `cpu` and `cpuacct`; empty for a named hierarchy such
    /// as `name=systemd`.
    pub controllers: Vec<String>,
}

/// v1 controllers a kernel can have (mount options that name a controller rather than a flag).
const V1_CONTROLLER_NAMES: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// The cgroup v1 hierarchies mounted below /sys/fs/cgroup, from this process's mountinfo.
pub fn v1_mounts() -> Vec<V1Mount> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    v1_mounts_from(&table)
}

fn v1_mounts_from(mountinfo: &str) -> Vec<V1Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // "<id> <parent> <dev> <root> <mount point> <options> [optional...] - <type> <source> <super options>"
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split_whitespace();
            if right.next()? != "cgroup" {
                return None;
            }
            let super_options = right.nth(1).unwrap_or("");
            let mount_point = PathBuf::from(unescape(left.split_whitespace().nth(4)?));
            if !mount_point.starts_with(CGROUP_MOUNT) {
                return None;
            }
            let controllers = super_options
                .split(',')
                .filter(|o| V1_CONTROLLER_NAMES.contains(o))
                .map(str::to_string)
                .collect();
            Some(V1Mount {
                mount_point,
                controllers,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The controllers a new cgroup at `path` (absolute in its hierarchy) could use: on v1 those
/// with a mounted hierarchy; on v2 those its nearest existing ancestor has in
/// `cgroup.controllers`, which a runtime creating the levels in between enables on its way
/// down (a controller the ancestor itself lacks can never reach below it).
pub fn available(driver: Driver, path: &str) -> BTreeSet<String> {
    match driver {
        Driver::V1 => v1_mounts()
            .into_iter()
            .flat_map(|m| m.controllers)
            .collect(),
        Driver::V2 => {
            let mut dir = Path::new(CGROUP_MOUNT).join(path.trim_start_matches('/'));
            loop {
                if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.controllers")) {
                    return text.split_whitespace().map(str::to_string).collect();
                }
                if !dir.pop() || !dir.starts_with(CGROUP_MOUNT) {
                    return BTreeSet::new();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
35 34 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
36 34 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 34 0:32 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
38 34 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
39 27 0:34 / /mnt/odd\\040place rw - cgroup cgroup rw,pids
";

    #[test]
    fn v1_hierarchies_and_their_controllers() {
        let mounts = v1_mounts_from(HYBRID);
        assert_eq!(
            mounts,
            vec![
                V1Mount {
                    mount_point: "/sys/fs/cgroup/cpu,cpuacct".into(),
                    controllers: vec!["cpu".into(), "cpuacct".into()],
                },
                V1Mount {
                    mount_point: "/sys/fs/cgroup/memory".into(),
                    controllers: vec!["memory".into()],
                },
                V1Mount {
                    mount_point: "/sys/fs/cgroup/systemd".into(),
                    controllers: vec![],
                },
            ]
        );
    }

    #[test]
    fn unescaped_mount_points() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
    }
}

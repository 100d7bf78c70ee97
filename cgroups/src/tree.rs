//! Creating, configuring and removing a cgroup by its absolute path, on either driver.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::{CGROUP_MOUNT, cpu_shares_to_weight};

/// Which cgroup version holds the controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Controllers on v1 hierarchies (pure v1 or hybrid hosts).
    V1,
    /// One unified v2 hierarchy.
    V2,
}

impl Driver {
    /// The driver of this host.
    pub fn detect() -> Driver {
        if Path::new(CGROUP_MOUNT).join("cgroup.controllers").exists() {
            Driver::V2
        } else {
            Driver::V1
        }
    }
}

/// v1 hierarchies a pod cgroup gets a directory in: every one a container's cgroup may be
/// created below, so that removal finds them all.
const V1_HIERARCHIES: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "pids",
    "blkio",
    "devices",
    "freezer",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
];

/// v2 controllers enabled for the children of each cgroup this crate creates.
const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "io", "memory", "pids", "hugetlb"];

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {what}: {source}")]
pub struct CgroupError {
    /// The file or directory.
    pub path: PathBuf,
    /// What was being done.
    pub what: &'static str,
    /// Why.
    pub source: std::io::Error,
}

/// Resource values of one cgroup, in v1 units; each is converted for v2 where it differs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `cpu.shares` (v2: `cpu.weight` through the corrected conversion).
    pub cpu_shares: Option<u64>,
    /// CFS quota and period in µs (v2: `cpu.max`).
    pub cpu_quota: Option<(i64, u64)>,
    /// Memory limit in bytes (v1 `memory.limit_in_bytes`, v2 `memory.max`).
    pub memory_limit: Option<i64>,
    /// Memory protection in bytes (v2 `memory.min`; v1 has no equivalent and ignores it).
    pub memory_min: Option<i64>,
    /// Maximum number of tasks (`pids.max`).
    pub pids_max: Option<i64>,
}

/// The host's cgroup mounts, and operations on cgroups by absolute path.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    driver: Driver,
    mount: PathBuf,
}

impl Default for Hierarchy {
    fn default() -> Self {
        Hierarchy::detect()
    }
}

impl Hierarchy {
    /// The host's hierarchy under /sys/fs/cgroup.
    pub fn detect() -> Self {
        Hierarchy {
            driver: Driver::detect(),
            mount: PathBuf::from(CGROUP_MOUNT),
        }
    }

    /// The driver.
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// Directories of `path` in every hierarchy that has it or could (v1: one per mounted
    /// controller hierarchy; v2: one).
    pub fn dirs(&self, path: &str) -> Vec<PathBuf> {
        let relative = path.trim_start_matches('/');
        match self.driver {
            Driver::V2 => vec![self.mount.join(relative)],
            Driver::V1 => V1_HIERARCHIES
                .iter()
                .map(|controller| self.mount.join(controller))
                // cpu and cpuacct are usually one hierarchy under two names.
                .filter(|dir| dir.is_dir() && !is_alias_symlink(dir))
                .map(|dir| dir.join(relative))
                .collect(),
        }
    }

    /// The directory holding `controller`'s files for `path`.
    pub fn controller_dir(&self, controller: &str, path: &str) -> PathBuf {
        let relative = path.trim_start_matches('/');
        match self.driver {
            Driver::V2 => self.mount.join(relative),
            Driver::V1 => self.mount.join(controller).join(relative),
        }
    }

    /// Creates `path` (and its parents) in every hierarchy. On v2, each new level's parent
    /// delegates the controllers it has to its children, or limits below would not apply.
    pub fn create(&self, path: &str) -> Result<(), CgroupError> {
        match self.driver {
            Driver::V1 => {
                for dir in self.dirs(path) {
                    std::fs::create_dir_all(&dir).map_err(|source| CgroupError {
                        path: dir.clone(),
                        what: "create",
                        source,
                    })?;
                }
                Ok(())
            }
            Driver::V2 => {
                let mut dir = self.mount.clone();
                for part in path.split('/').filter(|p| !p.is_empty()) {
                    let child = dir.join(part);
                    if !child.is_dir() {
                        delegate_controllers(&dir);
                        std::fs::create_dir(&child).or_else(|source| {
                            if source.kind() == ErrorKind::AlreadyExists {
                                Ok(())
                            } else {
                                Err(CgroupError {
                                    path: child.clone(),
                                    what: "create",
                                    source,
                                })
                            }
                        })?;
                    }
                    dir = child;
                }
                delegate_controllers(&dir);
                Ok(())
            }
        }
    }

    /// Writes `limits` into `path`; unset values are left as they are.
    pub fn apply(&self, path: &str, limits: &Limits) -> Result<(), CgroupError> {
        let v2 = self.driver == Driver::V2;
        if let Some(shares) = limits.cpu_shares {
            if v2 {
                let weight = cpu_shares_to_weight(shares).max(1);
                self.write("cpu", path, "cpu.weight", &weight.to_string())?;
            } else {
                self.write("cpu", path, "cpu.shares", &shares.to_string())?;
            }
        }
        if let Some((quota, period)) = limits.cpu_quota {
            if v2 {
                let quota = if quota < 0 {
                    "max".to_string()
                } else {
                    quota.to_string()
                };
                self.write("cpu", path, "cpu.max", &format!("{quota} {period}"))?;
            } else {
                self.write("cpu", path, "cpu.cfs_period_us", &period.to_string())?;
                self.write("cpu", path, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if let Some(limit) = limits.memory_limit {
            if v2 {
                let value = if limit < 0 {
                    "max".to_string()
                } else {
                    limit.to_string()
                };
                self.write("memory", path, "memory.max", &value)?;
            } else {
                self.write("memory", path, "memory.limit_in_bytes", &limit.to_string())?;
            }
        }
        if let (Some(min), true) = (limits.memory_min, v2) {
            self.write("memory", path, "memory.min", &min.max(0).to_string())?;
        }
        if let Some(max) = limits.pids_max {
            let value = if max < 0 {
                "max".to_string()
            } else {
                max.to_string()
            };
            self.write("pids", path, "pids.max", &value)?;
        }
        Ok(())
    }

    /// Reads one control file of `path` (trimmed).
    pub fn read(&self, controller: &str, path: &str, file: &str) -> Result<String, CgroupError> {
        let file = self.controller_dir(controller, path).join(file);
        std::fs::read_to_string(&file)
            .map(|text| text.trim().to_string())
            .map_err(|source| CgroupError {
                path: file,
                what: "read",
                source,
            })
    }

    fn write(
        &self,
        controller: &str,
        path: &str,
        file: &str,
        value: &str,
    ) -> Result<(), CgroupError> {
        let file = self.controller_dir(controller, path).join(file);
        std::fs::write(&file, value).map_err(|source| CgroupError {
            path: file,
            what: "write",
            source,
        })
    }

    /// Removes `path` and every cgroup below it, deepest first, in every hierarchy. Cgroups
    /// that still hold processes cannot be removed: that is an error naming the first one.
    pub fn remove(&self, path: &str) -> Result<(), CgroupError> {
        let mut first_error = None;
        for dir in self.dirs(path) {
            if let Err(e) = remove_tree(&dir) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// `cpuacct` → `cpu,cpuacct` style links: the hierarchy is reached under its other name.
fn is_alias_symlink(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir).is_ok_and(|meta| meta.file_type().is_symlink())
}

/// Enables for `dir`'s children every controller `dir` has. Failures are left to show where
/// they matter: a limit written below that cannot apply reports its own error.
fn delegate_controllers(dir: &Path) {
    let Ok(available) = std::fs::read_to_string(dir.join("cgroup.controllers")) else {
        return;
    };
    let wanted: Vec<String> = available
        .split_whitespace()
        .filter(|c| V2_CONTROLLERS.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if wanted.is_empty() {
        return;
    }
    if let Err(e) = std::fs::write(dir.join("cgroup.subtree_control"), wanted.join(" ")) {
        tracing::debug!(dir = %dir.display(), error = %e, "cannot delegate cgroup controllers");
    }
}

fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(CgroupError {
                path: dir.to_path_buf(),
                what: "list",
                source,
            });
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CgroupError {
            path: dir.to_path_buf(),
            what: "remove",
            source,
        }),
    }
}

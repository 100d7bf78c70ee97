//! Cgroups for root tests, created only below the test process's own cgroup and removed with
//! everything beneath them (processes killed first) when the guard drops.
//!
//! Hosts come in two shapes here: a pure cgroup v2 hierarchy, and hybrid/v1 hosts whose
//! controllers each have a v1 hierarchy. On v1 the cgroup path is the same in every hierarchy,
//! anchored at the process's memory cgroup, because that is the cgroup the build machines track
//! processes by (the other controllers often report `/`, the hierarchy root, where tests must
//! never create anything).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Result};
use crate::names::unique;

/// Where cgroup file systems are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// v1 controllers a test cgroup is created in (when the host has them).
const V1_CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "hugetlb",
];

/// v2 controllers delegated to the test cgroup's children when the host allows it.
const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "io", "memory", "pids", "hugetlb"];

/// Which cgroup version holds the controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// Controllers on v1 hierarchies (pure v1 or hybrid hosts).
    V1,
    /// A unified v2 hierarchy.
    V2,
}

/// Detects the cgroup driver of this host.
pub fn driver() -> Driver {
    if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
        Driver::V2
    } else {
        Driver::V1
    }
}

/// The test process's own cgroup path (absolute within its hierarchy): the v2 path on v2, the
/// memory controller's path on v1.
pub fn own_path() -> Result<String> {
    let table = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(Error::io("read", "/proc/self/cgroup"))?;
    own_path_from(&table, driver())
}

fn own_path_from(table: &str, driver: Driver) -> Result<String> {
    let wanted = |controllers: &str| match driver {
        Driver::V2 => controllers.is_empty(),
        Driver::V1 => controllers.split(',').any(|c| c == "memory"),
    };
    table
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let _id = fields.next()?;
            Some((fields.next()?, fields.next()?))
        })
        .find(|(controllers, _)| wanted(controllers))
        .map(|(_, path)| path.to_string())
        .ok_or_else(|| Error::Command(format!("no {driver:?} entry in /proc/self/cgroup")))
}

/// A test cgroup, present in every controller hierarchy of the host.
#[derive(Debug)]
pub struct TestCgroup {
    driver: Driver,
    path: String,
    /// Directory of the cgroup per hierarchy (keyed by controller; "" for v2).
    dirs: BTreeMap<String, PathBuf>,
    /// Directories this guard created, parents before children, removed in reverse.
    created: Vec<PathBuf>,
}

impl TestCgroup {
    /// Creates `<own cgroup>/<unique name>` in every hierarchy.
    pub fn new() -> Result<Self> {
        let driver = driver();
        let own = own_path()?;
        let path = format!(
            "{}/{}",
            own.trim_end_matches('/'),
            unique("capstan-test", 40)
        );
        let mut cgroup = TestCgroup {
            driver,
            path,
            dirs: BTreeMap::new(),
            created: Vec::new(),
        };
        match driver {
            Driver::V2 => {
                let dir = Path::new(CGROUP_ROOT).join(cgroup.path.trim_start_matches('/'));
                cgroup.make_dirs(&dir, "")?;
                cgroup.dirs.insert(String::new(), dir);
                cgroup.delegate_v2_controllers();
            }
            Driver::V1 => {
                for (controller, mount) in v1_hierarchies() {
                    let dir = mount.join(cgroup.path.trim_start_matches('/'));
                    cgroup.make_dirs(&dir, &controller)?;
                    cgroup.dirs.insert(controller, dir);
                }
            }
        }
        Ok(cgroup)
    }

    /// The cgroup driver in use.
    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// The cgroup's absolute path inside its hierarchies (what an OCI `cgroupsPath` takes).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The cgroup's directory for a controller (on v2 every controller shares one directory).
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        match self.driver {
            Driver::V2 => self.dirs.get(""),
            Driver::V1 => self.dirs.get(controller),
        }
        .map(PathBuf::as_path)
    }

    /// Moves a process (a child of the test) into this cgroup in every hierarchy.
    pub fn add_process(&self, pid: u32) -> Result<()> {
        for dir in self.dirs.values() {
            let procs = dir.join("cgroup.procs");
            std::fs::write(&procs, pid.to_string()).map_err(Error::io("write", &procs))?;
        }
        Ok(())
    }

    fn make_dirs(&mut self, dir: &Path, controller: &str) -> Result<()> {
        let mut missing = Vec::new();
        let mut cursor = dir;
        while !cursor.exists() {
            missing.push(cursor.to_path_buf());
            cursor = match cursor.parent() {
                Some(parent) => parent,
                None => break,
            };
        }
        for new_dir in missing.into_iter().rev() {
            match std::fs::create_dir(&new_dir) {
                Ok(()) => self.created.push(new_dir.clone()),
                // Another test created the shared parent first.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("create cgroup", &new_dir)(e)),
            }
            if controller == "cpuset" {
                inherit_cpuset(&new_dir)?;
            }
        }
        Ok(())
    }

    /// Makes the controllers available in the test cgroup (best effort: the parent may hold
    /// processes, which v2 forbids for a cgroup that delegates).
    fn delegate_v2_controllers(&self) {
        let own = Path::new(CGROUP_ROOT).join(self.path.trim_start_matches('/'));
        if let Some(parent) = own.parent() {
            enable_v2_controllers(parent);
        }
    }

    /// On v2, lets this cgroup's children use the controllers. The cgroup itself may then hold
    /// no process (v2's no-internal-process rule): use it only as a parent afterwards.
    pub fn delegate_to_children(&self) {
        if let (Driver::V2, Some(dir)) = (self.driver, self.dirs.get("")) {
            enable_v2_controllers(dir);
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in self.dirs.values() {
            if let Err(e) = remove_tree(dir) {
                eprintln!("capstan-testkit: leaked cgroup {}: {e}", dir.display());
            }
        }
        // Parents this guard had to create; another test may still use them (EBUSY), which is
        // fine: the last one out removes them.
        for dir in self.created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn enable_v2_controllers(dir: &Path) {
    for controller in V2_CONTROLLERS {
        let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{controller}"));
    }
}

/// Kills every process in `dir` and below, then removes the cgroups bottom-up.
pub fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let children = std::fs::read_dir(dir).map_err(Error::io("list", dir))?;
    for entry in children.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_tree(&entry.path())?;
        }
    }
    let procs = dir.join("cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = std::fs::read_to_string(&procs).unwrap_or_default();
        let pids: Vec<i32> = pids.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Command(format!(
                "processes {pids:?} in {} did not die",
                dir.display()
            )));
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // A cgroup whose last process just died can report EBUSY for a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(Error::io("remove cgroup", dir)(e)),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The v1 hierarchies holding the controllers tests use: controller name → mount point.
/// Co-mounted controllers (`cpu,cpuacct`) map to one mount and are created once.
fn v1_hierarchies() -> BTreeMap<String, PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut found = BTreeMap::new();
    let mut seen_mounts = Vec::new();
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 || fields[2] != "cgroup" {
            continue;
        }
        let mount = PathBuf::from(fields[1]);
        let controller = fields[3]
            .split(',')
            .find(|option| V1_CONTROLLERS.contains(option));
        if let Some(controller) = controller
            && !seen_mounts.contains(&mount)
        {
            seen_mounts.push(mount.clone());
            found.insert(controller.to_string(), mount);
        }
    }
    found
}

/// A new v1 cpuset cgroup starts with no CPUs or memory nodes, and a process can join it only
/// once it has both: copy the parent's.
fn inherit_cpuset(dir: &Path) -> Result<()> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let current = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if current.trim().is_empty() {
            let value = std::fs::read_to_string(parent.join(file))
                .map_err(Error::io("read", parent.join(file)))?;
            std::fs::write(dir.join(file), value.trim())
                .map_err(Error::io("write", dir.join(file)))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Driver, own_path_from};

    const HYBRID: &str = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n";

    #[test]
    fn v1_anchor_is_the_memory_cgroup() {
        assert_eq!(
            own_path_from(HYBRID, Driver::V1).unwrap(),
            "/process_api/abc"
        );
    }

    #[test]
    fn v2_anchor_is_the_unified_entry() {
        assert_eq!(
            own_path_from("0::/user.slice/test\n", Driver::V2).unwrap(),
            "/user.slice/test"
        );
        assert!(own_path_from("4:memory:/x\n", Driver::V2).is_err());
    }
}

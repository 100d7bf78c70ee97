//! Cgroups behind one small interface for the runtime and the agent: which driver the host has
//! (a unified v2 hierarchy, or v1 hierarchies as on hybrid hosts), the process's own cgroup, and
//! the create / set / remove of the pod cgroups the kubelet's layout calls for.

pub mod controllers;
mod convert;
mod tree;

pub use convert::cpu_shares_to_weight;
pub use tree::{CgroupError, Driver, Hierarchy, Limits};

/// Where cgroup file systems are mounted.
pub const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// This process's own cgroup path (absolute within its hierarchy): the v2 path on a unified
/// host, the memory controller's path on v1, because that is the cgroup machines track
/// processes by (the other v1 controllers often say `/`, where nothing should be created).
pub fn own_path(driver: Driver) -> String {
    let table = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    own_path_from(&table, driver)
}

fn own_path_from(table: &str, driver: Driver) -> String {
    table
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let _id = fields.next()?;
            Some((fields.next()?, fields.next()?))
        })
        .find(|(controllers, _)| match driver {
            Driver::V2 => controllers.is_empty(),
            Driver::V1 => controllers.split(',').any(|c| c == "memory"),
        })
        .map(|(_, path)| path.trim_end_matches('/').to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_path_follows_the_driver() {
        let table = "12:memory:/user.slice/job-1\n4:cpu,cpuacct:/\n0::/user.slice/job-1/v2\n";
        assert_eq!(own_path_from(table, Driver::V1), "/user.slice/job-1");
        assert_eq!(own_path_from(table, Driver::V2), "/user.slice/job-1/v2");
        assert_eq!(own_path_from("0::/\n", Driver::V2), "");
    }
}

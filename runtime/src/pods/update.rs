//! UpdateContainerResources: new CPU and memory limits written straight into the running
//! container's cgroup, in the file format of the host's driver.

use std::path::Path;

use capstan_proto::LinuxContainerResources;

use super::PodManager;
use super::container::{find_container_in, has_exited};
use super::error::{PodError, Result};
use crate::cgroups::cpu_shares_to_weight;

impl PodManager {
    /// Applies `resources` to container `id`; zero fields are left as they are.
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: &LinuxContainerResources,
    ) -> Result<()> {
        let container = {
            let state = self.state.lock().await;
            find_container_in(&state, id)?.clone()
        };
        if has_exited(&container) {
            return Err(PodError::FailedPrecondition(format!(
                "container {} has exited",
                container.id
            )));
        }
        if container.cgroups_path.is_empty() {
            return Err(PodError::FailedPrecondition(format!(
                "container {} has no cgroup recorded",
                container.id
            )));
        }
        for (field, value) in [
            ("linux.cpu_period", resources.cpu_period),
            ("linux.cpu_quota", resources.cpu_quota),
            ("linux.cpu_shares", resources.cpu_shares),
            (
                "linux.memory_limit_in_bytes",
                resources.memory_limit_in_bytes,
            ),
        ] {
            if value < 0 && !(field == "linux.cpu_quota" && value == -1) {
                return Err(PodError::Invalid(format!("{field}: {value} is negative")));
            }
        }
        let writes = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            v2_writes(&container.cgroups_path, resources)
        } else {
            v1_writes(&container.cgroups_path, resources)
        };
        for (file, value) in writes {
            std::fs::write(&file, &value).map_err(|e| {
                PodError::Internal(format!("write {value:?} to {}: {e}", file.display()))
            })?;
        }
        // Recorded, so ContainerStatus reports what is in force, also after a restart.
        let mut state = self.state.lock().await;
        if let Some(record) = state.containers.get_mut(&container.id) {
            let linux = record.config.linux.get_or_insert_with(Default::default);
            merge(
                linux.resources.get_or_insert_with(Default::default),
                resources,
            );
            super::record::save(
                &record.state_dir.join(super::record::CONTAINER_FILE),
                record,
            )?;
        }
        tracing::info!(id = %container.id, "container resources updated");
        Ok(())
    }
}

/// Copies the fields an update sets (the non-zero ones, as applied) into `current`.
fn merge(current: &mut LinuxContainerResources, update: &LinuxContainerResources) {
    if update.cpu_period > 0 {
        current.cpu_period = update.cpu_period;
    }
    if update.cpu_quota != 0 {
        current.cpu_quota = update.cpu_quota;
    }
    if update.cpu_shares > 0 {
        current.cpu_shares = update.cpu_shares;
    }
    if update.memory_limit_in_bytes > 0 {
        current.memory_limit_in_bytes = update.memory_limit_in_bytes;
    }
    if !update.cpuset_cpus.is_empty() {
        current.cpuset_cpus = update.cpuset_cpus.clone();
    }
    if !update.cpuset_mems.is_empty() {
        current.cpuset_mems = update.cpuset_mems.clone();
    }
    for (key, value) in &update.unified {
        current.unified.insert(key.clone(), value.clone());
    }
}

fn v1_writes(path: &str, r: &LinuxContainerResources) -> Vec<(std::path::PathBuf, String)> {
    let relative = path.trim_start_matches('/');
    let file = |controller: &str, name: &str| {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(relative)
            .join(name)
    };
    let mut writes = Vec::new();
    if r.cpu_shares > 0 {
        writes.push((file("cpu", "cpu.shares"), r.cpu_shares.to_string()));
    }
    if r.cpu_period > 0 {
        writes.push((file("cpu", "cpu.cfs_period_us"), r.cpu_period.to_string()));
    }
    if r.cpu_quota != 0 {
        writes.push((file("cpu", "cpu.cfs_quota_us"), r.cpu_quota.to_string()));
    }
    if !r.cpuset_cpus.is_empty() {
        writes.push((file("cpuset", "cpuset.cpus"), r.cpuset_cpus.clone()));
    }
    if !r.cpuset_mems.is_empty() {
        writes.push((file("cpuset", "cpuset.mems"), r.cpuset_mems.clone()));
    }
    if r.memory_limit_in_bytes > 0 {
        writes.push((
            file("memory", "memory.limit_in_bytes"),
            r.memory_limit_in_bytes.to_string(),
        ));
    }
    writes
}

fn v2_writes(path: &str, r: &LinuxContainerResources) -> Vec<(std::path::PathBuf, String)> {
    let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let mut writes = Vec::new();
    if r.cpu_shares > 0 {
        writes.push((
            dir.join("cpu.weight"),
            cpu_shares_to_weight(r.cpu_shares as u64).to_string(),
        ));
    }
    if r.cpu_quota != 0 || r.cpu_period > 0 {
        let quota = if r.cpu_quota > 0 {
            r.cpu_quota.to_string()
        } else {
            "max".to_string()
        };
        let period = if r.cpu_period > 0 {
            r.cpu_period
        } else {
            100_000
        };
        writes.push((dir.join("cpu.max"), format!("{quota} {period}")));
    }
    if !r.cpuset_cpus.is_empty() {
        writes.push((dir.join("cpuset.cpus"), r.cpuset_cpus.clone()));
    }
    if !r.cpuset_mems.is_empty() {
        writes.push((dir.join("cpuset.mems"), r.cpuset_mems.clone()));
    }
    if r.memory_limit_in_bytes > 0 {
        writes.push((dir.join("memory.max"), r.memory_limit_in_bytes.to_string()));
    }
    for (key, value) in &r.unified {
        // Only plain file names: a key must not reach outside the container's cgroup.
        if !key.contains('/') && !key.starts_with('.') {
            writes.push((dir.join(key), value.clone()));
        }
    }
    writes
}

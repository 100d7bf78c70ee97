//! ContainerStats, ListContainerStats, PodSandboxStats and ListPodSandboxStats from the cgroups
//! of containers and pods and the size of each container's writable layer.

use capstan_proto::{
    ContainerAttributes, ContainerStats, ContainerStatsFilter, CpuUsage, FilesystemIdentifier,
    FilesystemUsage, LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage,
    PodSandboxAttributes, PodSandboxStats, PodSandboxStatsFilter, ProcessUsage, UInt64Value,
};

use super::PodManager;
use super::cgroup_stats::{self, CgroupUsage};
use super::container::find_container_in;
use super::error::Result;
use super::net_dev;
use super::record::{ContainerRecord, SandboxRecord, now_nanos};
use super::sandbox::{find_sandbox, sandbox_cgroup_parent};

fn value(v: Option<u64>) -> Option<UInt64Value> {
    v.map(|value| UInt64Value { value })
}

impl PodManager {
    /// ContainerStats.
    pub async fn container_stats(&self, id: &str) -> Result<ContainerStats> {
        let container = {
            let state = self.state.lock().await;
            find_container_in(&state, id)?.clone()
        };
        Ok(self.stats_of(&container))
    }

    /// ListContainerStats.
    pub async fn list_container_stats(
        &self,
        filter: Option<ContainerStatsFilter>,
    ) -> Vec<ContainerStats> {
        let filter = filter.unwrap_or_default();
        let containers: Vec<ContainerRecord> = {
            let state = self.state.lock().await;
            state
                .containers
                .values()
                .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
                .filter(|c| {
                    filter.pod_sandbox_id.is_empty()
                        || c.sandbox_id.starts_with(&filter.pod_sandbox_id)
                })
                .filter(|c| {
                    filter
                        .label_selector
                        .iter()
                        .all(|(k, v)| c.config.labels.get(k) == Some(v))
                })
                .cloned()
                .collect()
        };
        containers.iter().map(|c| self.stats_of(c)).collect()
    }

    /// PodSandboxStats.
    pub async fn sandbox_stats(&self, id: &str) -> Result<PodSandboxStats> {
        let (sandbox, containers) = {
            let state = self.state.lock().await;
            let sandbox = find_sandbox(&state.sandboxes, id)?.clone();
            let containers: Vec<ContainerRecord> = state
                .containers
                .values()
                .filter(|c| c.sandbox_id == sandbox.id)
                .cloned()
                .collect();
            (sandbox, containers)
        };
        Ok(self.sandbox_stats_of(&sandbox, &containers))
    }

    /// ListPodSandboxStats.
    pub async fn list_sandbox_stats(
        &self,
        filter: Option<PodSandboxStatsFilter>,
    ) -> Vec<PodSandboxStats> {
        let filter = filter.unwrap_or_default();
        let pods: Vec<(SandboxRecord, Vec<ContainerRecord>)> = {
            let state = self.state.lock().await;
            state
                .sandboxes
                .values()
                .filter(|s| filter.id.is_empty() || s.id.starts_with(&filter.id))
                .filter(|s| {
                    filter
                        .label_selector
                        .iter()
                        .all(|(k, v)| s.config.labels.get(k) == Some(v))
                })
                .map(|s| {
                    let containers = state
                        .containers
                        .values()
                        .filter(|c| c.sandbox_id == s.id)
                        .cloned()
                        .collect();
                    (s.clone(), containers)
                })
                .collect()
        };
        pods.iter()
            .map(|(s, c)| self.sandbox_stats_of(s, c))
            .collect()
    }

    fn stats_of(&self, container: &ContainerRecord) -> ContainerStats {
        let timestamp = now_nanos();
        let usage = if container.cgroups_path.is_empty() {
            CgroupUsage::default()
        } else {
            cgroup_stats::read(&container.cgroups_path)
        };
        let layer = crate::images::usage::measure(&container.state_dir.join("upper"));
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: container.id.clone(),
                metadata: container.config.metadata.clone(),
                labels: container.config.labels.clone(),
                annotations: container.config.annotations.clone(),
            }),
            cpu: Some(self.cpu(&container.id, timestamp, &usage)),
            memory: Some(memory(timestamp, &usage)),
            writable_layer: Some(FilesystemUsage {
                timestamp,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: container.state_dir.join("upper").display().to_string(),
                }),
                used_bytes: Some(UInt64Value { value: layer.bytes }),
                inodes_used: Some(UInt64Value {
                    value: layer.inodes,
                }),
            }),
            swap: None,
        }
    }

    fn sandbox_stats_of(
        &self,
        sandbox: &SandboxRecord,
        containers: &[ContainerRecord],
    ) -> PodSandboxStats {
        let timestamp = now_nanos();
        let cgroup = sandbox_cgroup_parent(&sandbox.config)
            .unwrap_or_else(|| self.default_pod_cgroup(&sandbox.id));
        let usage = cgroup_stats::read(&cgroup);
        PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: sandbox.id.clone(),
                metadata: sandbox.config.metadata.clone(),
                labels: sandbox.config.labels.clone(),
                annotations: sandbox.config.annotations.clone(),
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: Some(self.cpu(&sandbox.id, timestamp, &usage)),
                memory: Some(memory(timestamp, &usage)),
                network: network_usage(sandbox, timestamp),
                process: Some(ProcessUsage {
                    timestamp,
                    process_count: value(usage.processes),
                }),
                containers: containers.iter().map(|c| self.stats_of(c)).collect(),
            }),
            windows: None,
        }
    }
}

/// The pod's interfaces as the stats RPCs report them.
fn network_usage(sandbox: &SandboxRecord, timestamp: i64) -> Option<NetworkUsage> {
    let interfaces: Vec<NetworkInterfaceUsage> = net_dev::read(sandbox)?
        .into_iter()
        .map(|i| NetworkInterfaceUsage {
            name: i.name,
            rx_bytes: value(Some(i.rx_bytes)),
            rx_errors: value(Some(i.rx_errors)),
            tx_bytes: value(Some(i.tx_bytes)),
            tx_errors: value(Some(i.tx_errors)),
        })
        .collect();
    let default_interface = interfaces.iter().find(|i| i.name == "eth0").cloned();
    Some(NetworkUsage {
        timestamp,
        default_interface,
        interfaces,
    })
}

impl PodManager {
    /// CPU usage, with the rate (nanocores) since this object's previous sample when there was
    /// one: what `kubectl top` and the kubelet's summary show.
    fn cpu(&self, key: &str, timestamp: i64, usage: &CgroupUsage) -> CpuUsage {
        let rate = usage.cpu_nanos.and_then(|now| {
            let mut samples = self.cpu_samples.lock().ok()?;
            let previous = samples.insert(key.to_string(), (timestamp, now));
            let (then, before) = previous?;
            let elapsed = u64::try_from(timestamp - then).ok().filter(|e| *e > 0)?;
            Some(now.saturating_sub(before).saturating_mul(1_000_000_000) / elapsed)
        });
        CpuUsage {
            timestamp,
            usage_core_nano_seconds: value(usage.cpu_nanos),
            usage_nano_cores: value(rate),
        }
    }
}

fn memory(timestamp: i64, usage: &CgroupUsage) -> MemoryUsage {
    MemoryUsage {
        timestamp,
        working_set_bytes: value(usage.working_set_bytes),
        available_bytes: value(
            usage
                .limit_bytes
                .zip(usage.working_set_bytes)
                .map(|(l, w)| l.saturating_sub(w)),
        ),
        usage_bytes: value(usage.memory_bytes),
        rss_bytes: value(usage.rss_bytes),
        page_faults: None,
        major_page_faults: None,
    }
}

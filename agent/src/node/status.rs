//! The Node's status, as the kubelet's status setters build it: capacity and allocatable,
//! conditions, addresses, nodeInfo and daemon endpoints; and the loop that posts it when it
//! changed and at least every `nodeStatusReportFrequency`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};

use crate::config::AgentConfig;

/// The version the Node reports as its kubelet's.
pub const KUBELET_VERSION: &str = concat!("v1.33.0-capstan.", env!("CARGO_PKG_VERSION"));

/// What the status is computed from: the node's facts, read once per update.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    /// Capacity by resource name.
    pub capacity: BTreeMap<String, Quantity>,
    /// Allocatable by resource name.
    pub allocatable: BTreeMap<String, Quantity>,
    /// InternalIP and Hostname.
    pub addresses: Vec<NodeAddress>,
    /// Kernel, OS, runtime, kubelet.
    pub node_info: NodeSystemInfo,
    /// The port the kubelet endpoint listens on, for `daemonEndpoints`.
    pub kubelet_port: i32,
}

/// A CPU amount in millicores as a quantity (`2`, `1500m`).
pub fn cpu_quantity(millis: i64) -> Quantity {
    if millis % 1000 == 0 {
        Quantity((millis / 1000).to_string())
    } else {
        Quantity(format!("{millis}m"))
    }
}

/// A byte count as a quantity, in Ki when it divides, as the kubelet reports memory.
pub fn bytes_quantity(bytes: i64) -> Quantity {
    if bytes != 0 && bytes % 1024 == 0 {
        Quantity(format!("{}Ki", bytes / 1024))
    } else {
        Quantity(bytes.to_string())
    }
}

/// Huge pages by size (`hugepages-2Mi` → bytes in all), from /sys/kernel/mm/hugepages.
fn huge_pages() -> BTreeMap<String, i64> {
    let mut pages = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return pages;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(kb) = name
            .strip_prefix("hugepages-")
            .and_then(|n| n.strip_suffix("kB"))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let count = std::fs::read_to_string(entry.path().join("nr_hugepages"))
            .ok()
            .and_then(|n| n.trim().parse::<i64>().ok())
            .unwrap_or(0);
        let size = if kb % (1024 * 1024) == 0 {
            format!("{}Gi", kb / (1024 * 1024))
        } else if kb % 1024 == 0 {
            format!("{}Mi", kb / 1024)
        } else {
            format!("{kb}Ki")
        };
        pages.insert(format!("hugepages-{size}"), count * kb * 1024);
    }
    pages
}

/// The size in bytes of the filesystem holding `path` (the nodefs).
fn filesystem_size(path: &Path) -> i64 {
    let mut dir = path;
    // The root dir may not exist yet: measure its nearest existing ancestor.
    while !dir.exists() {
        match dir.parent() {
            Some(parent) => dir = parent,
            None => break,
        }
    }
    nix::sys::statvfs::statvfs(dir)
        .map(|s| (s.blocks() as i64).saturating_mul(s.fragment_size() as i64))
        .unwrap_or(0)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `PRETTY_NAME` of /etc/os-release (unquoted), or "Linux".
pub fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "Linux".into())
}

/// Reads the node's facts: capacity from the machine (CPUs, memory, the root dir's
/// filesystem, huge pages), allocatable after the configured reservations, its addresses and
/// system info. `runtime_version` is `<name>://<version>`.
pub fn gather(config: &AgentConfig, runtime_version: &str, kubelet_port: i32) -> NodeFacts {
    let (cpu_millis, memory) = super::capacity();
    let storage = filesystem_size(&config.root_dir);
    let pages = huge_pages();
    let huge_total: i64 = pages.values().sum();
    let mut capacity = BTreeMap::from([
        ("cpu".to_string(), cpu_quantity(cpu_millis)),
        ("memory".to_string(), bytes_quantity(memory)),
        ("ephemeral-storage".to_string(), bytes_quantity(storage)),
        ("pods".to_string(), Quantity(config.max_pods.to_string())),
    ]);
    let mut allocatable = BTreeMap::from([
        (
            "cpu".to_string(),
            cpu_quantity(config.allocatable_cpu_millis(cpu_millis)),
        ),
        (
            "memory".to_string(),
            bytes_quantity((config.allocatable_memory(memory) - huge_total).max(0)),
        ),
        ("pods".to_string(), Quantity(config.max_pods.to_string())),
    ]);
    let storage_reserved = config.system_reserved.ephemeral_storage
        + config.kube_reserved.ephemeral_storage
        + config
            .eviction_hard
            .nodefs_available
            .map_or(0, |t| t.amount(storage));
    allocatable.insert(
        "ephemeral-storage".to_string(),
        bytes_quantity((storage - storage_reserved).max(0)),
    );
    for (name, bytes) in pages {
        capacity.insert(name.clone(), bytes_quantity(bytes));
        allocatable.insert(name, bytes_quantity(bytes));
    }
    let mut addresses: Vec<NodeAddress> = super::host_ips()
        .into_iter()
        .take(1)
        .map(|ip| NodeAddress {
            type_: "InternalIP".into(),
            address: ip,
        })
        .collect();
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: config.node_name.clone(),
    });
    let uname = nix::sys::utsname::uname().ok();
    let node_info = NodeSystemInfo {
        architecture: super::register::go_arch().into(),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        container_runtime_version: runtime_version.to_string(),
        kernel_version: uname
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        kube_proxy_version: String::new(),
        kubelet_version: KUBELET_VERSION.into(),
        machine_id: read_trimmed("/etc/machine-id"),
        operating_system: std::env::consts::OS.into(),
        os_image: os_image(&std::fs::read_to_string("/etc/os-release").unwrap_or_default()),
        system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
        swap: None,
    };
    NodeFacts {
        capacity,
        allocatable,
        addresses,
        node_info,
        kubelet_port,
    }
}

/// The kubelet's four node conditions with its reasons and messages. The agent has no
/// eviction manager yet, so the pressures are all False; Ready is True while it runs.
/// A condition keeps its lastTransitionTime from `previous` while its status stays.
pub fn conditions(previous: Option<&NodeStatus>, now: &Time) -> Vec<NodeCondition> {
    let make = |kind: &str, status: &str, reason: &str, message: &str| {
        let transition = previous
            .and_then(|p| p.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == kind && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        NodeCondition {
            type_: kind.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(transition),
        }
    };
    vec![
        make(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        make(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        make(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        make(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ]
}

/// The status the agent posts: its facts and conditions (other writers' fields, such as the
/// images list, are left out of the patch).
pub fn node_status(facts: &NodeFacts, previous: Option<&NodeStatus>, now: &Time) -> NodeStatus {
    NodeStatus {
        capacity: Some(facts.capacity.clone()),
        allocatable: Some(facts.allocatable.clone()),
        addresses: Some(facts.addresses.clone()),
        conditions: Some(conditions(previous, now)),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: facts.kubelet_port,
            }),
        }),
        node_info: Some(facts.node_info.clone()),
        ..NodeStatus::default()
    }
}

/// Whether `new` differs from `old` in more than heartbeat times: a change worth posting at
/// once rather than at the next report.
pub fn changed(old: &NodeStatus, new: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    strip(old) != strip(new)
}

/// Posts the Node's status every `update_frequency` when it changed, and at least every
/// `report_frequency`, until the task is dropped. Failures are retried at the next update.
pub async fn run(
    client: kube::Client,
    config: AgentConfig,
    runtime_version: String,
    kubelet_port: i32,
    update_frequency: Duration,
    report_frequency: Duration,
) {
    let nodes: Api<Node> = Api::all(client);
    let mut posted: Option<(NodeStatus, Instant)> = None;
    loop {
        let facts = gather(&config, &runtime_version, kubelet_port);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let status = node_status(&facts, posted.as_ref().map(|(s, _)| s), &now);
        let due = match &posted {
            None => true,
            Some((old, at)) => changed(old, &status) || at.elapsed() >= report_frequency,
        };
        if due {
            let patch = serde_json::json!({ "status": status });
            match nodes
                .patch_status(
                    &config.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::debug!(node = %config.node_name, "node status posted");
                    posted = Some((status, Instant::now()));
                }
                Err(error) => {
                    tracing::warn!(node = %config.node_name, %error, "node status not posted; retrying");
                }
            }
        }
        tokio::time::sleep(update_frequency).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_the_kubelets() {
        assert_eq!(cpu_quantity(4000).0, "4");
        assert_eq!(cpu_quantity(1500).0, "1500m");
        assert_eq!(bytes_quantity(16 << 30).0, "16777216Ki");
        assert_eq!(bytes_quantity(1000).0, "1000");
        assert_eq!(
            os_image("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(os_image(""), "Linux");
    }

    #[test]
    fn heartbeats_alone_are_no_change_and_transitions_stay() {
        let config = AgentConfig::defaults("n1");
        let facts = gather(&config, "capstan://0.1.0", 10250);
        assert!(facts.capacity.contains_key("ephemeral-storage"));
        assert_eq!(facts.node_info.container_runtime_version, "capstan://0.1.0");
        let t1 = Time("2026-01-01T00:00:00Z".parse().expect("time"));
        let t2 = Time("2026-01-01T00:00:10Z".parse().expect("time"));
        let first = node_status(&facts, None, &t1);
        let second = node_status(&facts, Some(&first), &t2);
        assert!(!changed(&first, &second));
        let ready = second
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(ready.last_transition_time, Some(t1));
        assert_eq!(ready.last_heartbeat_time, Some(t2));
    }
}

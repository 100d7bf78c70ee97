//! `capstan node`'s agent half: node facts, the cgroup tree, the pod workers fed by the pod
//! sources, runtime events, and the read-only API; and, joined to an API server ([`join`]),
//! the Node's registration, status and Lease.

pub mod cert_rotation;
pub mod client_cert;
pub mod discovery;
pub mod events;
pub mod image_gc;
pub mod join;
pub mod lease;
pub mod mirror_pods;
pub mod overlay_peers;
pub mod pod_cgroups;
pub mod pod_cidr;
pub mod register;
pub mod status;
pub mod tls_bootstrap;

use std::sync::Arc;

use capstan_cgroups::Hierarchy;
use capstan_proto::VersionRequest;
use tokio::sync::{mpsc, watch};
use tonic::Request;

use crate::config::AgentConfig;
use crate::cri::Cri;
use crate::node::pod_cgroups::PodCgroups;
use crate::objects::ObjectLookup;
use crate::pods::admission::Allocatable;
use crate::pods::status_sync::DesiredSet;
use crate::pods::{NodeContext, NodeSettings, PodWorkers};
use crate::source::PodSetUpdate;

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The read-only address could not be bound.
    #[error("read-only address {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime did not answer.
    #[error("the container runtime does not answer Version: {0}")]
    Runtime(String),
    /// The cgroup tree could not be created.
    #[error(transparent)]
    Cgroups(#[from] capstan_cgroups::CgroupError),
}

/// The node's capacity: CPUs (millicores) and memory (bytes).
pub fn capacity() -> (i64, i64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as i64;
    let memory = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
        .unwrap_or(0)
        * 1024;
    (cpus * 1000, memory)
}

/// The node's IPv4 address: the one on the interface of the default route, else loopback.
pub fn host_ips() -> Vec<String> {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let interface = routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"00000000")).then(|| fields[0].to_string())
    });
    let address = interface.and_then(|name| {
        nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
            if ifa.interface_name != name {
                return None;
            }
            let ip = ifa.address?.as_sockaddr_in()?.ip();
            Some(ip.to_string())
        })
    });
    vec![address.unwrap_or_else(|| "127.0.0.1".into())]
}

/// The running agent: its context and workers, for the wiring and the tests.
pub struct Node {
    /// Pod workers.
    pub workers: Arc<PodWorkers>,
    /// The read-only API's bound address, if served.
    pub read_only: Option<std::net::SocketAddr>,
    /// The desired pods as last applied.
    pub desired: watch::Receiver<DesiredSet>,
    /// The runtime as the Node's nodeInfo names it: `<runtime name>://<version>`.
    pub runtime_version: String,
}

/// Starts the agent: cgroup tree, event follower, read-only API. Desired pod sets sent on
/// `desired` are applied as they come.
pub async fn start(
    config: &AgentConfig,
    cri: Cri,
    objects: Arc<dyn ObjectLookup>,
    mut desired: mpsc::Receiver<PodSetUpdate>,
) -> Result<Node, NodeError> {
    let version = cri
        .runtime
        .version(Request::new(VersionRequest::default()))
        .await
        .map_err(|e| NodeError::Runtime(e.message().to_string()))?
        .into_inner();
    // A standalone node's pod network comes from its configuration; a joined node's from its
    // Node object ([`pod_cidr::follow`]), which wins when both are set.
    if let Some(cidr) = &config.pod_cidr {
        pod_cidr::apply(&cri, &format!("{}/{}", cidr.addr, cidr.prefix_len)).await;
    }
    let hierarchy = Hierarchy::detect();
    let hierarchy_is_v2 = hierarchy.driver() == capstan_cgroups::Driver::V2;
    if config.memory_qos && !hierarchy_is_v2 {
        tracing::warn!(
            "MemoryQoS needs cgroup v2; this host has v1 controllers, so it is not applied"
        );
    }
    let cgroup_root = config
        .cgroup_root
        .clone()
        .unwrap_or_else(|| capstan_cgroups::own_path(hierarchy.driver()));
    let cgroups = PodCgroups::new(
        hierarchy,
        &cgroup_root,
        config.memory_qos,
        config.pod_pids_limit,
    );
    let (cpu, memory) = capacity();
    let allocatable = Allocatable {
        cpu_millis: config.allocatable_cpu_millis(cpu),
        memory: config.allocatable_memory(memory),
        pods: i64::from(config.max_pods),
    };
    cgroups.ensure_tree(allocatable.cpu_millis, allocatable.memory)?;
    tracing::info!(
        node = %config.node_name,
        runtime = %version.runtime_name,
        runtime_version = %version.runtime_version,
        kubepods = %cgroups.kubepods(),
        cpu_millis = allocatable.cpu_millis,
        memory = allocatable.memory,
        pods = allocatable.pods,
        "node agent starting"
    );
    let runtime_version = format!("{}://{}", version.runtime_name, version.runtime_version);
    let ctx = Arc::new(NodeContext {
        cri,
        runtime_name: version.runtime_name,
        cgroups,
        settings: NodeSettings {
            node_name: config.node_name.clone(),
            root_dir: config.root_dir.clone(),
            pod_logs_dir: config.pod_logs_dir.clone(),
            host_ips: host_ips(),
            node_memory: memory,
            allocatable_cpu_millis: allocatable.cpu_millis,
            allocatable_memory: allocatable.memory,
            resolv_conf: config.resolv_conf.clone(),
            cluster_domain: config.cluster_domain.clone(),
            resync: config.sync_frequency,
            memory_qos: (config.memory_qos && hierarchy_is_v2).then_some(
                crate::pods::resources::MemoryQos {
                    throttling_factor: config.memory_throttling_factor,
                    allocatable_memory: allocatable.memory,
                },
            ),
        },
        objects: Arc::clone(&objects),
        store: Default::default(),
        events: Default::default(),
        container_owners: Default::default(),
        metrics: Default::default(),
        probe_counters: Default::default(),
    });
    let read_only = match config.read_only_address {
        Some(address) => {
            let (listener, bound) = crate::endpoint::read_only::bind(&address.to_string())
                .await
                .map_err(|source| NodeError::Bind {
                    address: address.to_string(),
                    source,
                })?;
            tracing::info!(address = %bound, "read-only API listening");
            tokio::spawn(crate::endpoint::read_only::serve(
                listener,
                Arc::clone(&ctx),
            ));
            Some(bound)
        }
        None => None,
    };
    tokio::spawn(crate::node::image_gc::run(
        Arc::clone(&ctx),
        crate::node::image_gc::ImageGcPolicy {
            high_percent: config.image_gc_high_threshold_percent,
            low_percent: config.image_gc_low_threshold_percent,
            minimum_age: config.image_minimum_gc_age,
        },
    ));
    let workers = Arc::new(PodWorkers::new(ctx, allocatable));
    tokio::spawn(Arc::clone(&workers).follow_events());
    if let Some(mut changes) = objects.take_changes() {
        // A ConfigMap or Secret a pod refers to changed: its worker rewrites the volumes now
        // rather than at its next resync.
        let waker = Arc::clone(&workers);
        tokio::spawn(async move {
            while let Some(uid) = changes.recv().await {
                waker.wake_pod(&uid);
            }
        });
    }
    let applier = Arc::clone(&workers);
    let (applied, desired_set) = watch::channel(DesiredSet::default());
    tokio::spawn(async move {
        while let Some(set) = desired.recv().await {
            applier.apply(&set.pod_map(), set.sources_ready).await;
            applied.send_replace(Arc::clone(&set.pods));
        }
    });
    Ok(Node {
        workers,
        read_only,
        desired: desired_set,
        runtime_version,
    })
}

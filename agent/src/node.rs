//! `capstan node`'s agent half: node facts, the cgroup tree, the pod workers fed by the pod
//! sources, runtime events, and the read-only API.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use capstan_cgroups::Hierarchy;
use capstan_proto::VersionRequest;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;
use tonic::Request;

use crate::admission::Allocatable;
use crate::cri::Cri;
use crate::objects::ObjectLookup;
use crate::pod_cgroups::PodCgroups;
use crate::pods::{NodeContext, NodeSettings, PodWorkers};

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The node's name.
    pub node_name: String,
    /// Per-pod directories.
    pub root_dir: PathBuf,
    /// Container logs.
    pub pod_logs_dir: PathBuf,
    /// Address of the read-only API.
    pub read_only_address: String,
    /// Cgroup root for kubepods (absolute); None: the agent's own cgroup.
    pub cgroup_root: Option<String>,
    /// Maximum pods.
    pub max_pods: i64,
    /// cpu (millicores) and memory (bytes) held back for the system and Kubernetes daemons.
    pub reserved_cpu_millis: i64,
    /// Memory held back (system-reserved + kube-reserved + the hard eviction threshold).
    pub reserved_memory: i64,
    /// Memory QoS on cgroup v2.
    pub memory_qos: bool,
    /// The resolv.conf for dnsPolicy Default.
    pub resolv_conf: Option<PathBuf>,
    /// Resync period of pod workers without events.
    pub sync_frequency: Duration,
}

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
    /// The read-only API's bound address.
    pub read_only: std::net::SocketAddr,
}

/// Starts the agent: cgroup tree, event follower, read-only API. Desired pod sets sent on
/// `desired` are applied as they come.
pub async fn start(
    options: NodeOptions,
    cri: Cri,
    objects: Arc<dyn ObjectLookup>,
    mut desired: mpsc::Receiver<BTreeMap<String, Pod>>,
) -> Result<Node, NodeError> {
    let version = cri
        .runtime
        .version(Request::new(VersionRequest::default()))
        .await
        .map_err(|e| NodeError::Runtime(e.message().to_string()))?
        .into_inner();
    let hierarchy = Hierarchy::detect();
    let cgroup_root = options
        .cgroup_root
        .clone()
        .unwrap_or_else(|| capstan_cgroups::own_path(hierarchy.driver()));
    let cgroups = PodCgroups::new(hierarchy, &cgroup_root, options.memory_qos);
    let (cpu, memory) = capacity();
    let allocatable = Allocatable {
        cpu_millis: (cpu - options.reserved_cpu_millis).max(0),
        memory: (memory - options.reserved_memory).max(0),
        pods: options.max_pods,
    };
    cgroups.ensure_tree(allocatable.cpu_millis, allocatable.memory)?;
    tracing::info!(
        runtime = %version.runtime_name,
        runtime_version = %version.runtime_version,
        kubepods = %cgroups.kubepods(),
        cpu_millis = allocatable.cpu_millis,
        memory = allocatable.memory,
        pods = allocatable.pods,
        "node agent starting"
    );
    let ctx = Arc::new(NodeContext {
        cri,
        runtime_name: version.runtime_name,
        cgroups,
        settings: NodeSettings {
            node_name: options.node_name.clone(),
            root_dir: options.root_dir.clone(),
            pod_logs_dir: options.pod_logs_dir.clone(),
            host_ips: host_ips(),
            node_memory: memory,
            resolv_conf: options.resolv_conf.clone(),
            resync: options.sync_frequency,
        },
        objects,
        store: Default::default(),
        container_owners: Default::default(),
        metrics: Default::default(),
    });
    let (listener, read_only) = crate::read_only::bind(&options.read_only_address)
        .await
        .map_err(|source| NodeError::Bind {
            address: options.read_only_address.clone(),
            source,
        })?;
    tracing::info!(address = %read_only, "read-only API listening");
    tokio::spawn(crate::read_only::serve(listener, Arc::clone(&ctx)));
    let workers = Arc::new(PodWorkers::new(ctx, allocatable));
    tokio::spawn(Arc::clone(&workers).follow_events());
    let applier = Arc::clone(&workers);
    tokio::spawn(async move {
        while let Some(set) = desired.recv().await {
            applier.apply(&set).await;
        }
    });
    Ok(Node { workers, read_only })
}

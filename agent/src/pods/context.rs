//! What every pod worker shares: the runtime, the node's settings, the cgroup layout and the
//! status store.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::core::v1::{Pod, PodStatus};

use crate::cri::Cri;
use crate::node::pod_cgroups::PodCgroups;
use crate::objects::ObjectLookup;

/// Node facts and settings the workers need.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// The node's name.
    pub node_name: String,
    /// Per-pod directories (volumes, termination logs) go below `root_dir/pods/<uid>`.
    pub root_dir: PathBuf,
    /// Container logs go below `pod_logs_dir/<namespace>_<name>_<uid>/`.
    pub pod_logs_dir: PathBuf,
    /// The node's IPs.
    pub host_ips: Vec<String>,
    /// The node's memory in bytes (for OOM score adjustment).
    pub node_memory: i64,
    /// Allocatable cpu in millicores (resourceFieldRef fallback for unset limits).
    pub allocatable_cpu_millis: i64,
    /// Allocatable memory in bytes.
    pub allocatable_memory: i64,
    /// The resolv.conf pods with dnsPolicy Default get.
    pub resolv_conf: Option<PathBuf>,
    /// The cluster's DNS domain, for pods' /etc/hosts and search paths.
    pub cluster_domain: Option<String>,
    /// Memory QoS, when enabled and the host has cgroup v2.
    pub memory_qos: Option<crate::pods::resources::MemoryQos>,
    /// How often a worker resyncs without events.
    pub resync: std::time::Duration,
}

/// A pod and its latest status, as the read-only API shows them.
#[derive(Debug, Clone)]
pub struct PodRecord {
    /// The pod as the source gave it.
    pub pod: Pod,
    /// The status the worker computed last.
    pub status: PodStatus,
    /// When the pod became Running and Ready the first time (for the start latency metric).
    pub ready_after: Option<std::time::Duration>,
}

/// Statuses of every pod the agent knows, by UID.
#[derive(Debug, Default)]
pub struct PodStore {
    pods: RwLock<BTreeMap<String, PodRecord>>,
    changed: tokio::sync::Notify,
}

impl PodStore {
    /// Records `pod`'s status.
    pub fn set(&self, uid: &str, record: PodRecord) {
        if let Ok(mut pods) = self.pods.write() {
            pods.insert(uid.to_string(), record);
        }
        self.notify_changed();
    }

    /// Forgets the pod `uid`.
    pub fn remove(&self, uid: &str) {
        if let Ok(mut pods) = self.pods.write() {
            pods.remove(uid);
        }
        self.notify_changed();
    }

    /// One pod by UID.
    pub fn get(&self, uid: &str) -> Option<PodRecord> {
        self.pods.read().ok()?.get(uid).cloned()
    }

    /// Wakes the one waiter of [`PodStore::changed`] (or the next one to wait).
    pub fn notify_changed(&self) {
        self.changed.notify_one();
    }

    /// Waits until a status was recorded or removed, or a worker finished, since the last wait.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Every pod with its status, ordered by UID.
    pub fn list(&self) -> Vec<PodRecord> {
        self.pods
            .read()
            .map(|pods| pods.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One pod by namespace and name.
    pub fn find(&self, namespace: &str, name: &str) -> Option<PodRecord> {
        self.list().into_iter().find(|r| {
            r.pod.metadata.namespace.as_deref().unwrap_or("default") == namespace
                && r.pod.metadata.name.as_deref() == Some(name)
        })
    }
}

/// Everything a pod worker shares with the others.
pub struct NodeContext {
    /// The container runtime.
    pub cri: Cri,
    /// The runtime's name, for container IDs.
    pub runtime_name: String,
    /// The cgroup layout.
    pub cgroups: PodCgroups,
    /// Node settings.
    pub settings: NodeSettings,
    /// ConfigMaps and Secrets.
    pub objects: Arc<dyn ObjectLookup>,
    /// Pod statuses.
    pub store: PodStore,
    /// Events about pods, posted under an API server.
    pub events: crate::pods::events::Events,
    /// Which pod each container the workers have seen belongs to, for routing runtime events.
    pub container_owners: Mutex<HashMap<String, String>>,
    /// Counters for /metrics.
    pub metrics: crate::endpoint::metrics::Metrics,
    /// Probe results by kind, for /metrics.
    pub probe_counters: Arc<crate::probes::ProbeCounters>,
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl NodeContext {
    /// The per-pod directory of `uid`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.settings.root_dir.join("pods").join(uid)
    }
}

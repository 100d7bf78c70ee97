//! The node agent: kubelet semantics (pod sources, pod workers, probes, QoS, eviction, status)
//! and the service proxy.

pub mod admission;
pub mod commands;
pub mod config;
pub mod cri;
pub mod downward;
pub mod env;
pub mod hooks;
pub mod metrics;
pub mod names;
pub mod node;
pub mod objects;
pub mod pod_cgroups;
pub mod pods;
pub mod probes;
pub mod read_only;
pub mod resources;
pub mod source;
pub mod status;
pub mod summary;
pub mod volumes;

/// Where the agent looks for static pod manifests unless told otherwise.
pub const DEFAULT_POD_MANIFEST_PATH: &str = "/etc/kubernetes/manifests";

/// The read-only kubelet endpoint address unless told otherwise.
pub const DEFAULT_READ_ONLY_ADDRESS: &str = "127.0.0.1:10255";

/// Per-pod data (volumes) unless told otherwise.
pub const DEFAULT_ROOT_DIR: &str = "/var/lib/capstan/agent";

/// Container logs unless told otherwise, where log collectors expect them.
pub const DEFAULT_POD_LOGS_DIR: &str = "/var/log/pods";

//! The node agent: kubelet semantics, in parts that name what they do:
//! - [`config`]: the KubeletConfiguration file and flags;
//! - [`source`]: pod sources (the manifest directory, the API server) merged into one desired set;
//! - [`pods`]: a worker per pod driving it to its desired state, and what a worker computes
//!   (admission, environment, downward API, resources, hooks, status);
//! - [`probes`]: startup, liveness and readiness checks;
//! - [`volumes`]: the volumes a pod mounts, and [`objects`] the ConfigMaps, Secrets and service
//!   account tokens they read (from a directory, or watched in the API server);
//! - [`node`]: the node's own facts, its cgroup tree and image GC, the agent's assembly, and
//!   node mode (registration, Node status, Lease);
//! - [`endpoint`]: the kubelet's HTTP endpoints (read-only API, summary, metrics);
//! - [`cri`]: the runtime behind the CRI traits; [`commands`]: people's local commands.

pub mod commands;
pub mod config;
pub mod cri;
pub mod endpoint;
pub mod names;
pub mod node;
pub mod objects;
pub mod pods;
pub mod probes;
pub mod source;
pub mod volumes;

/// Where the agent looks for static pod manifests unless told otherwise.
pub const DEFAULT_POD_MANIFEST_PATH: &str = "/etc/kubernetes/manifests";

/// The read-only kubelet endpoint address unless told otherwise.
pub const DEFAULT_READ_ONLY_ADDRESS: &str = "127.0.0.1:10255";

/// Per-pod data (volumes) unless told otherwise.
pub const DEFAULT_ROOT_DIR: &str = "/var/lib/capstan/agent";

/// Container logs unless told otherwise, where log collectors expect them.
pub const DEFAULT_POD_LOGS_DIR: &str = "/var/log/pods";

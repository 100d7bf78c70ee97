//! The node agent: kubelet semantics (pod sources, pod workers, probes, QoS, eviction, status)
//! and the service proxy.

pub mod config;
pub mod cri;
pub mod names;
pub mod objects;
pub mod resources;
pub mod source;

/// Where the agent looks for static pod manifests unless told otherwise.
pub const DEFAULT_POD_MANIFEST_PATH: &str = "/etc/kubernetes/manifests";

/// The read-only kubelet endpoint address unless told otherwise.
pub const DEFAULT_READ_ONLY_ADDRESS: &str = "127.0.0.1:10255";

//! Command-line flags that override the configuration file, as the kubelet's flags do.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{AgentConfig, ConfigError};

/// Values given on the command line; each `Some` replaces the file's (or the default) value.
/// Map a flag here only when the user gave it, or its default would hide the file's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--pod-manifest-path`; an empty path turns the file source off.
    pub pod_manifest_path: Option<PathBuf>,
    /// `--hostname-override`; lowercased, as the kubelet does.
    pub node_name: Option<String>,
    /// `--read-only-address`; port 0 turns the endpoint off.
    pub read_only_address: Option<SocketAddr>,
    /// `--kubelet-address`; port 0 picks a free port.
    pub kubelet_address: Option<SocketAddr>,
    /// `--root-dir`.
    pub root_dir: Option<PathBuf>,
    /// `--pod-logs-dir`.
    pub pod_logs_dir: Option<PathBuf>,
    /// `--cgroup-root`; empty: the default placement.
    pub cgroup_root: Option<String>,
    /// `--object-manifest-path`; an empty path turns it off.
    pub object_manifest_path: Option<PathBuf>,
    /// `--max-pods`.
    pub max_pods: Option<u32>,
    /// `--container-runtime-endpoint`; empty: the in-process runtime.
    pub container_runtime_endpoint: Option<String>,
}

impl Overrides {
    /// Writes the given values over `config`.
    pub fn apply(&self, config: &mut AgentConfig) -> Result<(), ConfigError> {
        let non_empty = |p: &PathBuf| (!p.as_os_str().is_empty()).then(|| p.clone());
        if let Some(p) = &self.pod_manifest_path {
            config.static_pod_path = non_empty(p);
        }
        if let Some(dir) = &self.pod_logs_dir {
            config.pod_logs_dir = dir.clone();
        }
        if let Some(name) = &self.node_name {
            let name = name.trim().to_lowercase();
            if name.is_empty() {
                return Err(ConfigError::invalid(
                    "command line",
                    "--hostname-override",
                    "must not be empty",
                ));
            }
            config.node_name = name;
        }
        if let Some(addr) = self.read_only_address {
            config.read_only_address = (addr.port() != 0).then_some(addr);
        }
        if let Some(addr) = self.kubelet_address {
            config.kubelet_address = addr;
        }
        if let Some(dir) = &self.root_dir {
            config.root_dir = dir.clone();
        }
        if let Some(root) = &self.cgroup_root {
            if !root.is_empty() && !root.starts_with('/') {
                return Err(ConfigError::invalid(
                    "command line",
                    "--cgroup-root",
                    format!("{root:?} must be an absolute cgroup path (starting with /)"),
                ));
            }
            config.cgroup_root = (!root.is_empty()).then(|| root.clone());
        }
        if let Some(p) = &self.object_manifest_path {
            config.object_manifest_path = non_empty(p);
        }
        if let Some(n) = self.max_pods {
            config.max_pods = n;
        }
        if let Some(endpoint) = &self.container_runtime_endpoint {
            config.container_runtime_endpoint = (!endpoint.is_empty()).then(|| endpoint.clone());
        }
        Ok(())
    }
}

//! The agent's configuration: kubelet defaults, then an upstream KubeletConfiguration file,
//! then command-line flags, then validation. Whatever is wrong stops the start with the field
//! named; whatever is merely unused earns a warning.
//!
//! ```no_run
//! # use capstan_agent::config::{AgentConfig, Overrides};
//! let overrides = Overrides { max_pods: Some(50), ..Default::default() };
//! let config = AgentConfig::load(Some("/etc/capstan/kubelet.yaml".as_ref()), &overrides)?;
//! # Ok::<(), capstan_agent::config::ConfigError>(())
//! ```

pub mod configz;
mod convert;
pub mod duration;
pub mod file;
mod overrides;
pub mod quantity;
mod validate;
pub mod values;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

pub use overrides::Overrides;
pub use values::{Cidr, EvictionThresholds, Reserved, Threshold};

/// The read-only port the agent serves on unless told otherwise (the kubelet's 10255).
pub const DEFAULT_READ_ONLY_PORT: u16 = 10255;
/// The kubelet endpoint's port.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;

/// Why the configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("{file}: cannot read the configuration file: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is neither YAML nor JSON.
    #[error("{file}: not valid YAML or JSON: {reason}")]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A field has a value the agent cannot use.
    #[error("{origin}: {field}: {reason}")]
    Invalid {
        /// The file's path, or "command line", or "host" for values taken from the machine.
        origin: String,
        /// The field, as named in the file (or the flag).
        field: String,
        /// What is wrong with its value.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        origin: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            origin: origin.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Everything the agent needs to know before it starts. Field docs name the KubeletConfiguration
/// field each comes from and its default, which is the kubelet's unless said otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The node's name (flag `--hostname-override`); default: the host name, lowercased. Static
    /// pods get `-<node_name>` appended to their names.
    pub node_name: String,
    /// Per-pod state: volumes go under `root_dir/pods/<uid>/volumes/...`. Capstan's own
    /// (flag `--root-dir`); default [`crate::DEFAULT_ROOT_DIR`].
    pub root_dir: PathBuf,
    /// Where static pod manifests are read (`staticPodPath`, flag `--pod-manifest-path`);
    /// default [`crate::DEFAULT_POD_MANIFEST_PATH`] (the kubelet has none: Capstan standalone
    /// exists to run static pods). None: no file source.
    pub static_pod_path: Option<PathBuf>,
    /// Where ConfigMap and Secret manifests live for configMap/secret volumes and env
    /// (flag `--object-manifest-path`); Capstan's own, default none.
    pub object_manifest_path: Option<PathBuf>,
    /// The manifest directory's rescan interval behind inotify (`fileCheckFrequency`, 20s).
    pub file_check_frequency: Duration,
    /// Pod workers' periodic resync (`syncFrequency`, 1m).
    pub sync_frequency: Duration,
    /// The read-only HTTP endpoint (`address` + `readOnlyPort`, flag `--read-only-address`);
    /// default 127.0.0.1:10255 (the kubelet's default port is 0, off, on 0.0.0.0: Capstan serves
    /// it by default for `capstan pods`, on loopback only). None: `readOnlyPort: 0`, not served.
    pub read_only_address: Option<SocketAddr>,
    /// The kubelet endpoint, served when the node is joined (`address` + `port`, flag
    /// `--kubelet-address`; default 0.0.0.0:10250; port 0 picks a free one).
    pub kubelet_address: SocketAddr,
    /// Its serving certificate and key (`tlsCertFile`, `tlsPrivateKeyFile`); None: a
    /// self-signed pair under `root_dir/pki`.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// The CA of client certificates (`authentication.x509.clientCAFile`); None: the cluster
    /// CA of the node's kubeconfig.
    pub client_ca_file: Option<PathBuf>,
    /// Requests without credentials pass as `system:anonymous`
    /// (`authentication.anonymous.enabled`; false, as kubeadm writes it).
    pub anonymous_auth: bool,
    /// Bearer tokens are checked with TokenReview (`authentication.webhook.enabled`, true).
    pub webhook_authentication: bool,
    /// Every authenticated request is allowed (`authorization.mode: AlwaysAllow`); the
    /// default, `Webhook`, asks the API server with SubjectAccessReview.
    pub authorization_always_allow: bool,
    /// This node's pod network (`podCIDR`); default none.
    pub pod_cidr: Option<Cidr>,
    /// Whether the client certificate in the cert dir is renewed before it expires
    /// (`rotateCertificates`; the kubelet's default false, kubeadm writes true).
    pub rotate_certificates: bool,
    /// Most pods the node admits (`maxPods`, 110).
    pub max_pods: u32,
    /// Most processes in a pod (`podPidsLimit`, -1); None: unlimited.
    pub pod_pids_limit: Option<i64>,
    /// Cgroup below which `kubepods` is created (`cgroupRoot`, flag `--cgroup-root`); None: the
    /// agent's own cgroup where it lacks delegation of the root (see ARCHITECTURE.md).
    pub cgroup_root: Option<String>,
    /// Whether pods go into the QoS cgroup tree (`cgroupsPerQOS`, true). The driver is always
    /// cgroupfs: `cgroupDriver: systemd` is refused.
    pub cgroups_per_qos: bool,
    /// Held back for the system (`systemReserved`).
    pub system_reserved: Reserved,
    /// Held back for the agent and runtime (`kubeReserved`).
    pub kube_reserved: Reserved,
    /// Hard eviction thresholds (`evictionHard`): the kubelet's defaults when absent; when
    /// present, only what it names (as upstream), unless `mergeDefaultEvictionSettings: true`.
    pub eviction_hard: EvictionThresholds,
    /// How long a pressure condition holds after it cleared (`evictionPressureTransitionPeriod`, 5m).
    pub eviction_pressure_transition_period: Duration,
    /// Grace period for evicted pods in seconds (`evictionMaxPodGracePeriod`, 0: the pod's own).
    pub eviction_max_pod_grace_period: i64,
    /// Disk usage percent that starts image GC (`imageGCHighThresholdPercent`, 85; 100: never).
    pub image_gc_high_threshold_percent: u8,
    /// Disk usage percent image GC frees down to (`imageGCLowThresholdPercent`, 80).
    pub image_gc_low_threshold_percent: u8,
    /// Unused images younger than this are kept (`imageMinimumGCAge`, 2m).
    pub image_minimum_gc_age: Duration,
    /// Unused images older than this are removed (`imageMaximumGCAge`, 0: no limit).
    pub image_maximum_gc_age: Duration,
    /// One image pull at a time (`serializeImagePulls`, true).
    pub serialize_image_pulls: bool,
    /// Most parallel pulls when not serialized (`maxParallelImagePulls`); None: no limit.
    pub max_parallel_image_pulls: Option<u32>,
    /// A container log file is rotated beyond this many bytes (`containerLogMaxSize`, 10Mi).
    pub container_log_max_size: i64,
    /// Most log files kept per container (`containerLogMaxFiles`, 5).
    pub container_log_max_files: u32,
    /// DNS servers for pods with dnsPolicy ClusterFirst (`clusterDNS`); empty: none.
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain for pods' search paths (`clusterDomain`); None: none.
    pub cluster_domain: Option<String>,
    /// The resolver file pods with dnsPolicy Default inherit (`resolvConf`, /etc/resolv.conf);
    /// None: `resolvConf: ""`, pods get no host DNS settings.
    pub resolv_conf: Option<PathBuf>,
    /// Where container logs go, `<namespace>_<pod>_<uid>/<container>/<restart>.log`
    /// (`podLogsDirectory`, flag `--pod-logs-dir`, /var/log/pods).
    pub pod_logs_dir: PathBuf,
    /// Deadline of runtime calls other than pulls and exec (`runtimeRequestTimeout`, 2m).
    pub runtime_request_timeout: Duration,
    /// Node status computation interval (`nodeStatusUpdateFrequency`, 10s).
    pub node_status_update_frequency: Duration,
    /// Node status report interval when unchanged (`nodeStatusReportFrequency`, 5m).
    pub node_status_report_frequency: Duration,
    /// Every feature gate as given (`featureGates`).
    pub feature_gates: BTreeMap<String, bool>,
    /// Memory QoS (memory.min / memory.high) on cgroup v2 (feature gate `MemoryQoS`, false).
    pub memory_qos: bool,
    /// memory.high = limit × this factor under Memory QoS (`memoryThrottlingFactor`, 0.9).
    pub memory_throttling_factor: f64,
    /// Time the node gives its pods on shutdown (`shutdownGracePeriod`, 0: no graceful shutdown).
    pub shutdown_grace_period: Duration,
    /// The part of it reserved for critical pods (`shutdownGracePeriodCriticalPods`, 0).
    pub shutdown_grace_period_critical_pods: Duration,
    /// A remote CRI endpoint (`containerRuntimeEndpoint`); None: the in-process runtime.
    pub container_runtime_endpoint: Option<String>,
}

impl AgentConfig {
    /// The defaults for a node called `node_name`.
    pub fn defaults(node_name: impl Into<String>) -> Self {
        AgentConfig {
            node_name: node_name.into(),
            root_dir: PathBuf::from(crate::DEFAULT_ROOT_DIR),
            static_pod_path: Some(PathBuf::from(crate::DEFAULT_POD_MANIFEST_PATH)),
            object_manifest_path: None,
            file_check_frequency: Duration::from_secs(20),
            sync_frequency: Duration::from_secs(60),
            read_only_address: Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                DEFAULT_READ_ONLY_PORT,
            )),
            kubelet_address: SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                DEFAULT_KUBELET_PORT,
            ),
            tls_files: None,
            client_ca_file: None,
            anonymous_auth: false,
            webhook_authentication: true,
            authorization_always_allow: false,
            pod_cidr: None,
            rotate_certificates: false,
            max_pods: 110,
            pod_pids_limit: None,
            cgroup_root: None,
            cgroups_per_qos: true,
            system_reserved: Reserved::default(),
            kube_reserved: Reserved::default(),
            eviction_hard: EvictionThresholds::kubelet_defaults(),
            eviction_pressure_transition_period: Duration::from_secs(300),
            eviction_max_pod_grace_period: 0,
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            image_minimum_gc_age: Duration::from_secs(120),
            image_maximum_gc_age: Duration::ZERO,
            serialize_image_pulls: true,
            max_parallel_image_pulls: None,
            container_log_max_size: 10 << 20,
            container_log_max_files: 5,
            cluster_dns: Vec::new(),
            cluster_domain: None,
            resolv_conf: Some(PathBuf::from("/etc/resolv.conf")),
            pod_logs_dir: PathBuf::from(crate::DEFAULT_POD_LOGS_DIR),
            runtime_request_timeout: Duration::from_secs(120),
            node_status_update_frequency: Duration::from_secs(10),
            node_status_report_frequency: Duration::from_secs(300),
            feature_gates: BTreeMap::new(),
            memory_qos: false,
            memory_throttling_factor: 0.9,
            shutdown_grace_period: Duration::ZERO,
            shutdown_grace_period_critical_pods: Duration::ZERO,
            container_runtime_endpoint: None,
        }
    }

    /// Builds the configuration `capstan node` runs with: defaults, then `config_file` (a
    /// KubeletConfiguration, YAML or JSON) if given, then `overrides` from the command line,
    /// then validation. Fields that are not applied are logged as warnings.
    pub fn load(config_file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let node_name = match &overrides.node_name {
            Some(name) => name.clone(),
            None => host_node_name()?,
        };
        let mut config = AgentConfig::defaults(node_name);
        let origin = match config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    file: path.to_path_buf(),
                    source,
                })?;
                for warning in config.apply_kubelet_config(&text, path)? {
                    tracing::warn!(file = %path.display(), "{warning}");
                }
                path.display().to_string()
            }
            None => "configuration".to_string(),
        };
        overrides.apply(&mut config)?;
        validate::validate(&config, &origin)?;
        Ok(config)
    }

    /// Applies the fields of a KubeletConfiguration document (YAML or JSON) read from `file`,
    /// returning the warnings for fields that are not applied. Does not run the cross-field
    /// checks: [`AgentConfig::load`] does, after the flags.
    pub fn apply_kubelet_config(
        &mut self,
        text: &str,
        file: &Path,
    ) -> Result<Vec<file::Ignored>, ConfigError> {
        convert::apply(self, text, file)
    }

    /// Runs the checks that involve several fields, naming the first wrong one.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        validate::validate(self, origin)
    }

    /// CPU held back from pods, in millicores: system plus kube reservations.
    pub fn reserved_cpu_millis(&self) -> i64 {
        self.system_reserved.cpu_millis + self.kube_reserved.cpu_millis
    }

    /// Memory held back from pods, in bytes, on a node with `capacity`: system plus kube
    /// reservations plus the hard eviction threshold for memory.available, as the kubelet
    /// computes node allocatable.
    pub fn reserved_memory(&self, capacity: i64) -> i64 {
        let eviction = self
            .eviction_hard
            .memory_available
            .map_or(0, |t| t.amount(capacity));
        self.system_reserved.memory + self.kube_reserved.memory + eviction
    }

    /// CPU pods may use, in millicores: capacity minus the reservations.
    pub fn allocatable_cpu_millis(&self, capacity_millis: i64) -> i64 {
        (capacity_millis - self.reserved_cpu_millis()).max(0)
    }

    /// Memory pods may use, in bytes: capacity minus [`AgentConfig::reserved_memory`].
    pub fn allocatable_memory(&self, capacity: i64) -> i64 {
        (capacity - self.reserved_memory(capacity)).max(0)
    }

    /// Where a pod's directory lives: `root_dir/pods/<uid>`.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }
}

/// The host name, lowercased, as the kubelet derives the default node name.
pub fn host_node_name() -> Result<String, ConfigError> {
    let name = nix::unistd::gethostname().map_err(|e| {
        ConfigError::invalid(
            "host",
            "nodeName",
            format!("cannot read the host name: {e}"),
        )
    })?;
    let name = name.to_string_lossy().trim().to_lowercase();
    if name.is_empty() {
        return Err(ConfigError::invalid(
            "host",
            "nodeName",
            "the host name is empty: give --hostname-override",
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests;

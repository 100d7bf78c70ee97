//! The upstream KubeletConfiguration file (kubelet.config.k8s.io/v1beta1) as written, before
//! any value is interpreted: the fields Capstan applies, and the names of those it knows but
//! does not apply, so that neither kind of extra field stops a start but each is named.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The apiVersion a KubeletConfiguration file must carry.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
/// The kind a KubeletConfiguration file must carry.
pub const KIND: &str = "KubeletConfiguration";

/// The fields of a KubeletConfiguration that Capstan applies, as strings and numbers exactly as
/// the file has them; `config::convert` gives them meaning.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)] // each field is the upstream field of the same name
pub struct KubeletConfigFile {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub static_pod_path: Option<String>,
    pub file_check_frequency: Option<String>,
    pub sync_frequency: Option<String>,
    pub address: Option<String>,
    pub read_only_port: Option<i64>,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    pub max_pods: Option<i64>,
    pub pod_pids_limit: Option<i64>,
    pub cgroup_root: Option<String>,
    #[serde(rename = "cgroupsPerQOS")]
    pub cgroups_per_qos: Option<bool>,
    pub cgroup_driver: Option<String>,
    pub system_reserved: Option<BTreeMap<String, String>>,
    pub kube_reserved: Option<BTreeMap<String, String>>,
    pub eviction_hard: Option<BTreeMap<String, String>>,
    pub merge_default_eviction_settings: Option<bool>,
    pub eviction_pressure_transition_period: Option<String>,
    pub eviction_max_pod_grace_period: Option<i64>,
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: Option<i64>,
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: Option<i64>,
    #[serde(rename = "imageMinimumGCAge")]
    pub image_minimum_gc_age: Option<String>,
    #[serde(rename = "imageMaximumGCAge")]
    pub image_maximum_gc_age: Option<String>,
    pub serialize_image_pulls: Option<bool>,
    pub max_parallel_image_pulls: Option<i64>,
    pub container_log_max_size: Option<String>,
    pub container_log_max_files: Option<i64>,
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Option<Vec<String>>,
    pub cluster_domain: Option<String>,
    pub resolv_conf: Option<String>,
    pub pod_logs_directory: Option<String>,
    pub runtime_request_timeout: Option<String>,
    pub node_status_update_frequency: Option<String>,
    pub node_status_report_frequency: Option<String>,
    pub feature_gates: Option<BTreeMap<String, bool>>,
    pub memory_throttling_factor: Option<f64>,
    pub shutdown_grace_period: Option<String>,
    pub shutdown_grace_period_critical_pods: Option<String>,
    pub container_runtime_endpoint: Option<String>,
    pub rotate_certificates: Option<bool>,
    pub port: Option<i64>,
    pub tls_cert_file: Option<String>,
    pub tls_private_key_file: Option<String>,
    pub authentication: Option<AuthenticationFile>,
    pub authorization: Option<AuthorizationFile>,
}

/// `authentication`: how the kubelet endpoint knows its callers.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)] // each field is the upstream field of the same name
pub struct AuthenticationFile {
    pub x509: Option<X509File>,
    pub webhook: Option<Enabled>,
    pub anonymous: Option<Enabled>,
}

/// `authentication.x509`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[allow(missing_docs)] // the upstream field of the same name
pub struct X509File {
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: Option<String>,
}

/// `authentication.webhook` and `authentication.anonymous`: the part Capstan applies.
#[derive(Debug, Default, Deserialize, Serialize)]
#[allow(missing_docs)] // the upstream field of the same name
pub struct Enabled {
    pub enabled: Option<bool>,
}

/// `authorization`: `mode` Webhook or AlwaysAllow.
#[derive(Debug, Default, Deserialize, Serialize)]
#[allow(missing_docs)] // the upstream field of the same name
pub struct AuthorizationFile {
    pub mode: Option<String>,
}

/// The fields above, by their names in the file.
pub const APPLIED: &[&str] = &[
    "apiVersion",
    "kind",
    "staticPodPath",
    "fileCheckFrequency",
    "syncFrequency",
    "address",
    "readOnlyPort",
    "podCIDR",
    "maxPods",
    "podPidsLimit",
    "cgroupRoot",
    "cgroupsPerQOS",
    "cgroupDriver",
    "systemReserved",
    "kubeReserved",
    "evictionHard",
    "mergeDefaultEvictionSettings",
    "evictionPressureTransitionPeriod",
    "evictionMaxPodGracePeriod",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "imageMinimumGCAge",
    "imageMaximumGCAge",
    "serializeImagePulls",
    "maxParallelImagePulls",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "clusterDNS",
    "clusterDomain",
    "resolvConf",
    "podLogsDirectory",
    "runtimeRequestTimeout",
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "featureGates",
    "memoryThrottlingFactor",
    "shutdownGracePeriod",
    "shutdownGracePeriodCriticalPods",
    "containerRuntimeEndpoint",
    "rotateCertificates",
    "port",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "authentication",
    "authorization",
];

/// Upstream KubeletConfiguration fields that Capstan does not apply (yet, or at all: TLS
/// serving, API client tuning, CPU/memory/topology managers, iptables...). A file written for
/// a kubelet may carry them; they earn a warning that says so rather than "unknown".
pub const NOT_APPLIED: &[&str] = &[
    "enableServer",
    "staticPodURL",
    "staticPodURLHeader",
    "httpCheckFrequency",
    "tlsCipherSuites",
    "tlsMinVersion",
    "serverTLSBootstrap",
    "registryPullQPS",
    "registryBurst",
    "imagePullCredentialsVerificationPolicy",
    "preloadedImagesVerificationAllowlist",
    "eventRecordQPS",
    "eventBurst",
    "enableDebuggingHandlers",
    "enableContentionProfiling",
    "healthzPort",
    "healthzBindAddress",
    "oomScoreAdj",
    "streamingConnectionIdleTimeout",
    "nodeLeaseDurationSeconds",
    "volumeStatsAggPeriod",
    "kubeletCgroups",
    "systemCgroups",
    "cpuManagerPolicy",
    "cpuManagerPolicyOptions",
    "cpuManagerReconcilePeriod",
    "memoryManagerPolicy",
    "topologyManagerPolicy",
    "topologyManagerScope",
    "topologyManagerPolicyOptions",
    "qosReserved",
    "hairpinMode",
    "podsPerCore",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "nodeStatusMaxImages",
    "maxOpenFiles",
    "contentType",
    "kubeAPIQPS",
    "kubeAPIBurst",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionMinimumReclaim",
    "enableControllerAttachDetach",
    "protectKernelDefaults",
    "makeIPTablesUtilChains",
    "iptablesMasqueradeBit",
    "iptablesDropBit",
    "failSwapOn",
    "memorySwap",
    "containerLogMaxWorkers",
    "containerLogMonitorInterval",
    "configMapAndSecretChangeDetectionStrategy",
    "systemReservedCgroup",
    "kubeReservedCgroup",
    "enforceNodeAllocatable",
    "allowedUnsafeSysctls",
    "volumePluginDir",
    "providerID",
    "kernelMemcgNotification",
    "logging",
    "enableSystemLogHandler",
    "enableSystemLogQuery",
    "shutdownGracePeriodByPodPriority",
    "crashLoopBackOff",
    "reservedMemory",
    "enableProfilingHandler",
    "enableDebugFlagsHandler",
    "seccompDefault",
    "registerWithTaints",
    "registerNode",
    "tracing",
    "localStorageCapacityIsolation",
    "imageServiceEndpoint",
    "failCgroupV1",
    "userNamespaces",
    "singleProcessOOMKill",
    "podLogsDir",
];

/// A top-level field that is not applied, and why it earns a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// A KubeletConfiguration field Capstan does not apply.
    NotApplied(String),
    /// No KubeletConfiguration field has this name (a typo, or a newer kubelet's field).
    Unknown(String),
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ignored::NotApplied(name) => {
                write!(
                    f,
                    "{name}: a KubeletConfiguration field Capstan does not apply; ignored"
                )
            }
            Ignored::Unknown(name) => write!(f, "{name}: unknown field; ignored"),
        }
    }
}

/// The top-level fields of `document` that are not applied, sorted by name.
pub fn ignored_fields(document: &serde_json::Value) -> Vec<Ignored> {
    let Some(fields) = document.as_object() else {
        return Vec::new();
    };
    fields
        .keys()
        .filter(|name| !APPLIED.contains(&name.as_str()))
        .map(|name| {
            if NOT_APPLIED.contains(&name.as_str()) {
                Ignored::NotApplied(name.clone())
            } else {
                Ignored::Unknown(name.clone())
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_extra_fields() {
        let doc = serde_json::json!({"kind": "KubeletConfiguration", "tlsMinVersion": "VersionTLS12", "port": 10250, "stattcPodPath": "/x"});
        assert_eq!(
            ignored_fields(&doc),
            vec![
                Ignored::Unknown("stattcPodPath".into()),
                Ignored::NotApplied("tlsMinVersion".into())
            ]
        );
    }

    #[test]
    fn applied_list_matches_the_struct() {
        // A struct field missing from APPLIED would warn although applied; a name in APPLIED
        // missing from the struct would be dropped silently.
        let all = serde_json::to_value(KubeletConfigFile::default()).expect("serializes");
        let mut fields: Vec<&str> = all
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut applied = APPLIED.to_vec();
        fields.sort_unstable();
        applied.sort_unstable();
        assert_eq!(fields, applied);
        for name in APPLIED {
            assert!(!NOT_APPLIED.contains(name), "{name} is in both lists");
        }
    }
}

//! `/configz`: the configuration the agent runs with, written back as a KubeletConfiguration
//! (`{"kubeletconfig": {...}}`, as the kubelet answers), so that tools that read a node's
//! effective settings through `nodes/proxy/configz` find them under the upstream names.

use serde_json::{Map, Value, json};

use super::AgentConfig;
use super::duration::format_duration;
use super::values::{EvictionThresholds, Reserved, Threshold};

fn reserved(reserved: &Reserved) -> Value {
    let mut map = Map::new();
    if reserved.cpu_millis > 0 {
        map.insert("cpu".into(), json!(format!("{}m", reserved.cpu_millis)));
    }
    for (name, amount) in [
        ("memory", reserved.memory),
        ("ephemeral-storage", reserved.ephemeral_storage),
        ("pid", reserved.pids),
    ] {
        if amount > 0 {
            map.insert(name.into(), json!(amount.to_string()));
        }
    }
    Value::Object(map)
}

fn threshold(threshold: Threshold) -> String {
    match threshold {
        Threshold::Quantity(amount) => amount.to_string(),
        Threshold::Percent(percent) => format!("{percent}%"),
    }
}

fn eviction(thresholds: &EvictionThresholds) -> Value {
    let signals = [
        ("memory.available", thresholds.memory_available),
        ("nodefs.available", thresholds.nodefs_available),
        ("nodefs.inodesFree", thresholds.nodefs_inodes_free),
        ("imagefs.available", thresholds.imagefs_available),
        ("imagefs.inodesFree", thresholds.imagefs_inodes_free),
        ("pid.available", thresholds.pid_available),
    ];
    Value::Object(
        signals
            .into_iter()
            .filter_map(|(signal, t)| Some((signal.to_string(), json!(threshold(t?)))))
            .collect(),
    )
}

/// The `/configz` document of `config`.
pub fn configz(config: &AgentConfig) -> Value {
    let duration = |d| json!(format_duration(d));
    let mut kubelet = json!({
        "kind": super::file::KIND,
        "apiVersion": super::file::API_VERSION,
        "syncFrequency": duration(config.sync_frequency),
        "fileCheckFrequency": duration(config.file_check_frequency),
        "address": config.kubelet_address.ip().to_string(),
        "port": config.kubelet_address.port(),
        "readOnlyPort": config.read_only_address.map_or(0, |a| a.port()),
        "rotateCertificates": config.rotate_certificates,
        "authentication": {
            "x509": {"clientCAFile": config.client_ca_file.as_ref().map(|p| p.display().to_string())},
            "webhook": {"enabled": config.webhook_authentication, "cacheTTL": "2m0s"},
            "anonymous": {"enabled": config.anonymous_auth},
        },
        "authorization": {
            "mode": if config.authorization_always_allow { "AlwaysAllow" } else { "Webhook" },
            "webhook": {"cacheAuthorizedTTL": "5m0s", "cacheUnauthorizedTTL": "30s"},
        },
        "clusterDomain": config.cluster_domain,
        "clusterDNS": config.cluster_dns.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "nodeStatusUpdateFrequency": duration(config.node_status_update_frequency),
        "nodeStatusReportFrequency": duration(config.node_status_report_frequency),
        "imageMinimumGCAge": duration(config.image_minimum_gc_age),
        "imageMaximumGCAge": duration(config.image_maximum_gc_age),
        "imageGCHighThresholdPercent": config.image_gc_high_threshold_percent,
        "imageGCLowThresholdPercent": config.image_gc_low_threshold_percent,
        "cgroupsPerQOS": config.cgroups_per_qos,
        "cgroupDriver": "cgroupfs",
        "runtimeRequestTimeout": duration(config.runtime_request_timeout),
        "maxPods": config.max_pods,
        "podPidsLimit": config.pod_pids_limit.unwrap_or(-1),
        "resolvConf": config.resolv_conf.as_ref().map_or(String::new(), |p| p.display().to_string()),
        "serializeImagePulls": config.serialize_image_pulls,
        "evictionHard": eviction(&config.eviction_hard),
        "evictionPressureTransitionPeriod": duration(config.eviction_pressure_transition_period),
        "evictionMaxPodGracePeriod": config.eviction_max_pod_grace_period,
        "systemReserved": reserved(&config.system_reserved),
        "kubeReserved": reserved(&config.kube_reserved),
        "featureGates": config.feature_gates,
        "memoryThrottlingFactor": config.memory_throttling_factor,
        "containerLogMaxSize": config.container_log_max_size.to_string(),
        "containerLogMaxFiles": config.container_log_max_files,
        "podLogsDirectory": config.pod_logs_dir.display().to_string(),
        "shutdownGracePeriod": duration(config.shutdown_grace_period),
        "shutdownGracePeriodCriticalPods": duration(config.shutdown_grace_period_critical_pods),
    });
    let optional = [
        (
            "staticPodPath",
            config
                .static_pod_path
                .as_ref()
                .map(|p| json!(p.display().to_string())),
        ),
        ("podCIDR", config.pod_cidr.map(|c| json!(c.to_string()))),
        ("cgroupRoot", config.cgroup_root.as_ref().map(|r| json!(r))),
        (
            "maxParallelImagePulls",
            config.max_parallel_image_pulls.map(|n| json!(n)),
        ),
        (
            "tlsCertFile",
            config
                .tls_files
                .as_ref()
                .map(|(cert, _)| json!(cert.display().to_string())),
        ),
        (
            "tlsPrivateKeyFile",
            config
                .tls_files
                .as_ref()
                .map(|(_, key)| json!(key.display().to_string())),
        ),
        (
            "containerRuntimeEndpoint",
            config.container_runtime_endpoint.as_ref().map(|e| json!(e)),
        ),
    ];
    if let Some(map) = kubelet.as_object_mut() {
        for (name, value) in optional {
            if let Some(value) = value {
                map.insert(name.into(), value);
            }
        }
    }
    json!({ "kubeletconfig": kubelet })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configz_names_the_running_values_under_upstream_fields() {
        let mut config = AgentConfig::defaults("node-a");
        config.max_pods = 42;
        config.sync_frequency = std::time::Duration::from_secs(90);
        config.system_reserved.cpu_millis = 250;
        config.system_reserved.memory = 1 << 20;
        let document = configz(&config);
        let kubelet = &document["kubeletconfig"];
        assert_eq!(kubelet["kind"], "KubeletConfiguration");
        assert_eq!(kubelet["maxPods"], 42);
        assert_eq!(kubelet["syncFrequency"], "1m30s");
        assert_eq!(kubelet["systemReserved"]["cpu"], "250m");
        assert_eq!(kubelet["systemReserved"]["memory"], "1048576");
        assert_eq!(kubelet["evictionHard"]["memory.available"], "104857600");
        assert_eq!(kubelet["evictionHard"]["nodefs.available"], "10%");
        assert_eq!(kubelet["authorization"]["mode"], "Webhook");
        assert_eq!(kubelet["port"], 10250);
    }
}

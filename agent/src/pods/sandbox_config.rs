//! The CRI sandbox request for a pod: metadata, hostname, DNS, ports, namespaces, cgroup parent.

use std::path::Path;

use capstan_proto::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PortMapping, Protocol,
};
use k8s_openapi::api::core::v1::Pod;

use super::labels;

/// The directory of a pod's container logs, as the kubelet names it.
pub fn log_directory(pod_logs_root: &Path, pod: &Pod) -> std::path::PathBuf {
    let (namespace, name, uid) = labels::identity(pod);
    pod_logs_root.join(format!("{namespace}_{name}_{uid}"))
}

/// Builds the sandbox request for `pod` placed in cgroup `cgroup_parent`.
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    cgroup_parent: &str,
    pod_logs_root: &Path,
    host_resolv_conf: Option<&Path>,
) -> PodSandboxConfig {
    let (namespace, name, uid) = labels::identity(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let mode = |host: Option<bool>| {
        if host.unwrap_or(false) {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        }
    };
    let pid = if spec.host_pid.unwrap_or(false) {
        NamespaceMode::Node
    } else if spec.share_process_namespace.unwrap_or(false) {
        NamespaceMode::Pod
    } else {
        NamespaceMode::Container
    };
    let hostname = match (&spec.hostname, host_network) {
        (_, true) => String::new(),
        (Some(h), _) => h.clone(),
        (None, _) => name
            .chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches('-')
            .to_string(),
    };
    let port_mappings = if host_network {
        Vec::new()
    } else {
        spec.containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.unwrap_or(0) > 0)
            .map(|p| PortMapping {
                protocol: match p.protocol.as_deref() {
                    Some("UDP") => Protocol::Udp,
                    Some("SCTP") => Protocol::Sctp,
                    _ => Protocol::Tcp,
                } as i32,
                container_port: p.container_port,
                host_port: p.host_port.unwrap_or(0),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
            .collect()
    };
    let security = spec.security_context.clone().unwrap_or_default();
    let sysctls = security
        .sysctls
        .iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    let grace = spec.termination_grace_period_seconds.unwrap_or(30);
    let mut annotations: std::collections::HashMap<String, String> = pod
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    annotations.insert(labels::GRACE_PERIOD.into(), grace.to_string());
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: namespace.into(),
            attempt,
        }),
        hostname,
        log_directory: log_directory(pod_logs_root, pod).display().to_string(),
        dns_config: dns_config(pod, host_resolv_conf),
        port_mappings,
        labels: labels::sandbox_labels(pod),
        annotations,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: mode(spec.host_network) as i32,
                    pid: pid as i32,
                    ipc: mode(spec.host_ipc) as i32,
                    ..Default::default()
                }),
                supplemental_groups: security.supplemental_groups.clone().unwrap_or_default(),
                run_as_user: security
                    .run_as_user
                    .map(|value| capstan_proto::Int64Value { value }),
                run_as_group: security
                    .run_as_group
                    .map(|value| capstan_proto::Int64Value { value }),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// DNS for the pod: dnsPolicy Default (and ClusterFirst without a cluster DNS, which is what a
/// standalone node has) uses the host's resolv.conf; None uses only dnsConfig; dnsConfig adds
/// to either.
fn dns_config(pod: &Pod, host_resolv_conf: Option<&Path>) -> Option<DnsConfig> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network.unwrap_or(false)
        && spec.dns_policy.as_deref() != Some("ClusterFirstWithHostNet")
    {
        return None;
    }
    let mut config = DnsConfig::default();
    if spec.dns_policy.as_deref() != Some("None") {
        if let Some(text) = host_resolv_conf.and_then(|p| std::fs::read_to_string(p).ok()) {
            for line in text.lines() {
                let mut words = line.split_whitespace();
                match words.next() {
                    Some("nameserver") => config.servers.extend(words.map(String::from)),
                    Some("search") | Some("domain") => {
                        config.searches.extend(words.map(String::from))
                    }
                    Some("options") => config.options.extend(words.map(String::from)),
                    _ => {}
                }
            }
        }
    }
    if let Some(extra) = &spec.dns_config {
        config
            .servers
            .extend(extra.nameservers.iter().flatten().cloned());
        config
            .searches
            .extend(extra.searches.iter().flatten().cloned());
        for option in extra.options.iter().flatten() {
            let name = option.name.clone().unwrap_or_default();
            config.options.push(match &option.value {
                Some(value) => format!("{name}:{value}"),
                None => name,
            });
        }
    }
    if config.servers.is_empty() && config.searches.is_empty() && config.options.is_empty() {
        None
    } else {
        Some(config)
    }
}

//! Gives meaning to a KubeletConfiguration file's fields: parses quantities, durations,
//! addresses, and refuses values the agent cannot use, naming the field.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use super::duration::parse_duration;
use super::file::{self, API_VERSION, Ignored, KIND, KubeletConfigFile};
use super::quantity::Quantity;
use super::values::{Cidr, EvictionThresholds, Reserved, Threshold, UNSUPPORTED_SIGNALS};
use super::{AgentConfig, ConfigError};

/// Applies the document in `text` (read from `path`) onto `config`.
pub(super) fn apply(
    config: &mut AgentConfig,
    text: &str,
    path: &Path,
) -> Result<Vec<Ignored>, ConfigError> {
    let origin = path.display().to_string();
    let invalid = |field: &str, reason: String| ConfigError::invalid(origin.clone(), field, reason);
    // Two passes: first as a plain tree, to name the fields that are not applied and to check
    // the type header; then into the typed struct, whose errors carry the field's path.
    let document: serde_json::Value =
        serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if !document.is_object() {
        return Err(invalid(
            "kind",
            format!("Required value: expected a {KIND} object"),
        ));
    }
    let header = |name: &str, want: &str| match document.get(name).and_then(|v| v.as_str()) {
        Some(got) if got == want => Ok(()),
        Some(got) => Err(invalid(
            name,
            format!("Unsupported value: {got:?}: supported values: {want:?}"),
        )),
        None => Err(invalid(name, format!("Required value: must be {want:?}"))),
    };
    header("apiVersion", API_VERSION)?;
    header("kind", KIND)?;
    let ignored = file::ignored_fields(&document);
    let parsed: KubeletConfigFile = serde_path_to_error::deserialize(&document).map_err(|e| {
        let field = e.path().to_string();
        invalid(&field, e.into_inner().to_string())
    })?;
    let mut warnings = ignored;
    apply_fields(config, parsed, &origin, &mut warnings)?;
    Ok(warnings)
}

fn duration(origin: &str, field: &str, text: &str) -> Result<Duration, ConfigError> {
    parse_duration(text).map_err(|e| ConfigError::invalid(origin, field, e.to_string()))
}

fn non_negative_quantity(origin: &str, field: &str, text: &str) -> Result<Quantity, ConfigError> {
    let q =
        Quantity::parse(text).map_err(|e| ConfigError::invalid(origin, field, e.to_string()))?;
    if q.is_negative() {
        return Err(ConfigError::invalid(
            origin,
            field,
            format!("{text:?} must not be negative"),
        ));
    }
    Ok(q)
}

fn in_range<T: TryFrom<i64>>(
    origin: &str,
    field: &str,
    value: i64,
    low: i64,
    high: i64,
) -> Result<T, ConfigError> {
    if value < low || value > high {
        return Err(ConfigError::invalid(
            origin,
            field,
            format!("{value} must be between {low} and {high}"),
        ));
    }
    T::try_from(value)
        .map_err(|_| ConfigError::invalid(origin, field, format!("{value} is out of range")))
}

fn reserved(
    origin: &str,
    field: &str,
    entries: &BTreeMap<String, String>,
    warnings: &mut Vec<Ignored>,
) -> Result<Reserved, ConfigError> {
    let mut r = Reserved::default();
    for (name, value) in entries {
        let path = format!("{field}.{name}");
        let q = || non_negative_quantity(origin, &path, value);
        match name.as_str() {
            "cpu" => r.cpu_millis = q()?.milli_value(),
            "memory" => r.memory = q()?.value(),
            "ephemeral-storage" => r.ephemeral_storage = q()?.value(),
            "pid" => r.pids = q()?.value(),
            _ => warnings.push(Ignored::NotApplied(path)),
        }
    }
    Ok(r)
}

fn eviction(
    origin: &str,
    entries: &BTreeMap<String, String>,
    merge_defaults: bool,
    warnings: &mut Vec<Ignored>,
) -> Result<EvictionThresholds, ConfigError> {
    // As upstream: a given evictionHard replaces the defaults unless told to merge.
    let mut thresholds = if merge_defaults {
        EvictionThresholds::kubelet_defaults()
    } else {
        EvictionThresholds::default()
    };
    for (signal, value) in entries {
        let path = format!("evictionHard.{signal}");
        let parsed = Threshold::parse(value).map_err(|e| ConfigError::invalid(origin, &path, e))?;
        match thresholds.slot(signal) {
            Some(slot) => *slot = parsed,
            None if UNSUPPORTED_SIGNALS.contains(&signal.as_str()) => {
                warnings.push(Ignored::NotApplied(path))
            }
            None => {
                return Err(ConfigError::invalid(
                    origin,
                    path,
                    "unknown eviction signal (known: memory.available, nodefs.available, \
                     nodefs.inodesFree, imagefs.available, imagefs.inodesFree, pid.available)",
                ));
            }
        }
    }
    Ok(thresholds)
}

fn apply_fields(
    c: &mut AgentConfig,
    f: KubeletConfigFile,
    origin: &str,
    warnings: &mut Vec<Ignored>,
) -> Result<(), ConfigError> {
    let invalid = |field: &str, reason: String| ConfigError::invalid(origin, field, reason);
    // As upstream, relative paths in the file are relative to the file's directory.
    let base = Path::new(origin).parent().unwrap_or(Path::new(""));
    let resolve = |p: String| (!p.is_empty()).then(|| base.join(p));
    if let Some(path) = f.static_pod_path {
        c.static_pod_path = resolve(path);
    }
    if let Some(v) = f.file_check_frequency {
        c.file_check_frequency = duration(origin, "fileCheckFrequency", &v)?;
    }
    if let Some(v) = f.sync_frequency {
        c.sync_frequency = duration(origin, "syncFrequency", &v)?;
    }
    // address and readOnlyPort together make the read-only endpoint.
    let current = c.read_only_address;
    let ip = match f.address.as_deref() {
        Some(a) => a
            .parse::<IpAddr>()
            .map_err(|_| invalid("address", format!("{a:?} is not an IP address")))?,
        None => current.map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip()),
    };
    let port = match f.read_only_port {
        Some(p) => in_range::<u16>(origin, "readOnlyPort", p, 0, 65535)?,
        None => current.map_or(0, |a| a.port()),
    };
    c.read_only_address = (port != 0).then(|| SocketAddr::new(ip, port));
    if let Some(a) = f.address.as_deref() {
        c.kubelet_address.set_ip(
            a.parse::<IpAddr>()
                .map_err(|_| invalid("address", format!("{a:?} is not an IP address")))?,
        );
    }
    if let Some(p) = f.port {
        c.kubelet_address
            .set_port(in_range::<u16>(origin, "port", p, 1, 65535)?);
    }
    match (f.tls_cert_file, f.tls_private_key_file) {
        (None, None) => {}
        (Some(cert), Some(key)) if !cert.is_empty() && !key.is_empty() => {
            c.tls_files = resolve(cert).zip(resolve(key));
        }
        (Some(_), _) => {
            return Err(invalid(
                "tlsPrivateKeyFile",
                "Required value: tlsCertFile and tlsPrivateKeyFile go together".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "tlsCertFile",
                "Required value: tlsCertFile and tlsPrivateKeyFile go together".into(),
            ));
        }
    }
    if let Some(authn) = f.authentication {
        if let Some(v) = authn.x509.and_then(|x| x.client_ca_file) {
            c.client_ca_file = resolve(v);
        }
        if let Some(v) = authn.anonymous.and_then(|a| a.enabled) {
            c.anonymous_auth = v;
        }
        if let Some(v) = authn.webhook.and_then(|w| w.enabled) {
            c.webhook_authentication = v;
        }
    }
    if let Some(mode) = f.authorization.and_then(|a| a.mode) {
        c.authorization_always_allow = match mode.as_str() {
            "Webhook" => false,
            "AlwaysAllow" => true,
            other => {
                return Err(invalid(
                    "authorization.mode",
                    format!(
                        "Unsupported value: {other:?}: supported values: \"AlwaysAllow\", \"Webhook\""
                    ),
                ));
            }
        };
    }
    if let Some(v) = f.pod_cidr.filter(|v| !v.is_empty()) {
        c.pod_cidr = Some(v.parse::<Cidr>().map_err(|e| invalid("podCIDR", e))?);
    }
    if let Some(v) = f.rotate_certificates {
        c.rotate_certificates = v;
    }
    if let Some(v) = f.max_pods {
        c.max_pods = in_range(origin, "maxPods", v, 0, i64::from(u32::MAX))?;
    }
    if let Some(v) = f.pod_pids_limit {
        if v < -1 {
            return Err(invalid(
                "podPidsLimit",
                format!("{v} must be -1 (unlimited) or above"),
            ));
        }
        c.pod_pids_limit = (v > 0).then_some(v);
    }
    if let Some(v) = f.cgroup_root {
        if !v.is_empty() && !v.starts_with('/') {
            return Err(invalid(
                "cgroupRoot",
                format!("{v:?} must be an absolute cgroup path (starting with /)"),
            ));
        }
        c.cgroup_root = (!v.is_empty()).then_some(v);
    }
    if let Some(v) = f.cgroups_per_qos {
        c.cgroups_per_qos = v;
    }
    match f.cgroup_driver.as_deref() {
        None | Some("cgroupfs") => {}
        Some("systemd") => {
            return Err(invalid(
                "cgroupDriver",
                "\"systemd\" is not supported: Capstan manages its cgroups directly; \
                 use cgroupDriver: cgroupfs"
                    .into(),
            ));
        }
        Some(other) => {
            return Err(invalid(
                "cgroupDriver",
                format!("Unsupported value: {other:?}: supported values: \"cgroupfs\""),
            ));
        }
    }
    if let Some(v) = &f.system_reserved {
        c.system_reserved = reserved(origin, "systemReserved", v, warnings)?;
    }
    if let Some(v) = &f.kube_reserved {
        c.kube_reserved = reserved(origin, "kubeReserved", v, warnings)?;
    }
    if let Some(v) = &f.eviction_hard {
        let merge = f.merge_default_eviction_settings.unwrap_or(false);
        c.eviction_hard = eviction(origin, v, merge, warnings)?;
    }
    if let Some(v) = f.eviction_pressure_transition_period {
        c.eviction_pressure_transition_period =
            duration(origin, "evictionPressureTransitionPeriod", &v)?;
    }
    if let Some(v) = f.eviction_max_pod_grace_period {
        c.eviction_max_pod_grace_period = v;
    }
    if let Some(v) = f.image_gc_high_threshold_percent {
        c.image_gc_high_threshold_percent =
            in_range(origin, "imageGCHighThresholdPercent", v, 0, 100)?;
    }
    if let Some(v) = f.image_gc_low_threshold_percent {
        c.image_gc_low_threshold_percent =
            in_range(origin, "imageGCLowThresholdPercent", v, 0, 100)?;
    }
    if let Some(v) = f.image_minimum_gc_age {
        c.image_minimum_gc_age = duration(origin, "imageMinimumGCAge", &v)?;
    }
    if let Some(v) = f.image_maximum_gc_age {
        c.image_maximum_gc_age = duration(origin, "imageMaximumGCAge", &v)?;
    }
    if let Some(v) = f.serialize_image_pulls {
        c.serialize_image_pulls = v;
    }
    if let Some(v) = f.max_parallel_image_pulls {
        c.max_parallel_image_pulls = Some(in_range(
            origin,
            "maxParallelImagePulls",
            v,
            1,
            i64::from(u32::MAX),
        )?);
    }
    if let Some(v) = f.container_log_max_size {
        c.container_log_max_size =
            non_negative_quantity(origin, "containerLogMaxSize", &v)?.value();
    }
    if let Some(v) = f.container_log_max_files {
        c.container_log_max_files = in_range(origin, "containerLogMaxFiles", v, 0, 1_000_000)?;
    }
    if let Some(v) = f.cluster_dns {
        c.cluster_dns = v
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse::<IpAddr>().map_err(|_| {
                    invalid(
                        &format!("clusterDNS[{i}]"),
                        format!("{s:?} is not an IP address"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = f.cluster_domain {
        if !v.is_empty() {
            let bare = v.trim_end_matches('.');
            if let Some(reason) = crate::names::dns1123_subdomain_error(bare) {
                return Err(invalid(
                    "clusterDomain",
                    format!("Invalid value: {v:?}: {reason}"),
                ));
            }
        }
        c.cluster_domain = (!v.is_empty()).then_some(v);
    }
    if let Some(v) = f.resolv_conf {
        c.resolv_conf = resolve(v);
    }
    if let Some(v) = f.pod_logs_directory {
        c.pod_logs_dir = resolve(v).unwrap_or_else(|| PathBuf::from(crate::DEFAULT_POD_LOGS_DIR));
    }
    if let Some(v) = f.runtime_request_timeout {
        c.runtime_request_timeout = duration(origin, "runtimeRequestTimeout", &v)?;
    }
    if let Some(v) = f.node_status_update_frequency {
        c.node_status_update_frequency = duration(origin, "nodeStatusUpdateFrequency", &v)?;
    }
    if let Some(v) = f.node_status_report_frequency {
        c.node_status_report_frequency = duration(origin, "nodeStatusReportFrequency", &v)?;
    }
    if let Some(gates) = f.feature_gates {
        c.memory_qos = gates.get("MemoryQoS").copied().unwrap_or(c.memory_qos);
        c.feature_gates = gates;
    }
    if let Some(v) = f.memory_throttling_factor {
        c.memory_throttling_factor = v;
    }
    if let Some(v) = f.shutdown_grace_period {
        c.shutdown_grace_period = duration(origin, "shutdownGracePeriod", &v)?;
    }
    if let Some(v) = f.shutdown_grace_period_critical_pods {
        c.shutdown_grace_period_critical_pods =
            duration(origin, "shutdownGracePeriodCriticalPods", &v)?;
    }
    if let Some(v) = f.container_runtime_endpoint {
        c.container_runtime_endpoint = (!v.is_empty()).then_some(v);
    }
    Ok(())
}

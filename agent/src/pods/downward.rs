//! The downward API: values of a pod's own fields and of its containers' resources, as
//! environment variables (`valueFrom.fieldRef`, `valueFrom.resourceFieldRef`) and as files of
//! downwardAPI and projected volumes see them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::pods::resources::{milli_value, whole_value};

/// What the kubelet knows about a pod beyond its spec: its addresses once the sandbox has them,
/// and the node's allocatable resources, which stand in for a container limit that is unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRuntimeInfo {
    /// The pod's IPs, the primary first (empty before the sandbox has a network).
    pub pod_ips: Vec<IpAddr>,
    /// The node's IPs, the primary first.
    pub host_ips: Vec<IpAddr>,
    /// Node allocatable CPU in millicores.
    pub node_allocatable_cpu_millis: i64,
    /// Node allocatable memory in bytes.
    pub node_allocatable_memory_bytes: i64,
    /// Node allocatable ephemeral storage in bytes (0 when unknown).
    pub node_allocatable_ephemeral_storage_bytes: i64,
}

/// Why a downward API reference has no value. The caller adds the field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownwardError {
    /// The field path is not one the downward API exposes.
    #[error("unsupported fieldPath {0:?}")]
    UnsupportedField(String),
    /// The resource name is not one the downward API exposes.
    #[error("unsupported resource {0:?}")]
    UnsupportedResource(String),
    /// The referenced container is not in the pod.
    #[error("container {0:?} not found in the pod")]
    NoSuchContainer(String),
    /// The divisor is not a positive quantity.
    #[error("invalid divisor {0:?}")]
    InvalidDivisor(String),
}

fn joined(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(|ip| ip.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The value of `path` inside `metadata.labels['...']`-style subscripts: `Some(key)` for
/// `prefix['key']`.
fn subscript<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

/// Formats a label or annotation map as the kubelet does for whole-map references: one
/// `key="value"` line per entry, keys sorted, values quoted like Go's `%q`.
pub fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Quotes `s` the way Go's `strconv.Quote` does for printable text, so files match the
/// kubelet's byte for byte.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a pod field by its `fieldPath`, as `valueFrom.fieldRef` and downwardAPI volume
/// items read it.
pub fn field_value(pod: &Pod, info: &PodRuntimeInfo, path: &str) -> Result<String, DownwardError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    // Status addresses come from the runtime first: the sandbox knows them before the status
    // does; the pod's status is the fallback for an agent that adopted a running pod.
    let status = pod.status.as_ref();
    let pod_ips = if info.pod_ips.is_empty() {
        status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| {
                ips.iter()
                    .map(|i| i.ip.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    } else {
        joined(&info.pod_ips)
    };
    let host_ips = if info.host_ips.is_empty() {
        status
            .and_then(|s| s.host_ips.as_ref())
            .map(|ips| {
                ips.iter()
                    .map(|i| i.ip.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    } else {
        joined(&info.host_ips)
    };
    let first = |list: &str| list.split(',').next().unwrap_or_default().to_string();
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(labels),
        "metadata.annotations" => format_map(annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => first(&pod_ips),
        "status.podIPs" => pod_ips,
        "status.hostIP" => first(&host_ips),
        "status.hostIPs" => host_ips,
        other => {
            if let Some(key) = subscript(other, "metadata.labels") {
                labels.get(key).cloned().unwrap_or_default()
            } else if let Some(key) = subscript(other, "metadata.annotations") {
                annotations.get(key).cloned().unwrap_or_default()
            } else {
                return Err(DownwardError::UnsupportedField(other.to_string()));
            }
        }
    };
    Ok(value)
}

/// Finds a container of `pod` by name, among app, init and ephemeral containers.
pub fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// The API path of a container in its pod, such as `spec.containers[1]` or
/// `spec.initContainers[0]`, for error messages that name the field.
pub fn container_path(pod: &Pod, name: &str) -> String {
    let spec = pod.spec.as_ref();
    if let Some(i) = spec.and_then(|s| s.containers.iter().position(|c| c.name == name)) {
        return format!("spec.containers[{i}]");
    }
    if let Some(i) = spec
        .and_then(|s| s.init_containers.as_ref())
        .and_then(|v| v.iter().position(|c| c.name == name))
    {
        return format!("spec.initContainers[{i}]");
    }
    format!("container {name:?}")
}

fn quantity<'a>(map: Option<&'a BTreeMap<String, Quantity>>, name: &str) -> Option<&'a Quantity> {
    map.and_then(|m| m.get(name))
}

/// The value of `resource` (such as `limits.memory`) of `container` divided by `divisor`
/// (default 1), rounded up as the kubelet does. An unset limit of cpu, memory or
/// ephemeral-storage is the node's allocatable amount; an unset request is the limit the
/// container sets, else 0.
pub fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&Quantity>,
    info: &PodRuntimeInfo,
) -> Result<String, DownwardError> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| DownwardError::UnsupportedResource(resource.to_string()))?;
    let resources = container.resources.as_ref();
    let limits = resources.and_then(|r| r.limits.as_ref());
    let requests = resources.and_then(|r| r.requests.as_ref());
    let is_cpu = name == "cpu";
    let value = |text: &str| {
        if is_cpu {
            milli_value(text)
        } else {
            whole_value(text)
        }
    };
    let parse = |q: &Quantity| value(&q.0).unwrap_or(0) as i128;
    let allocatable = match name {
        "cpu" => Some(info.node_allocatable_cpu_millis),
        "memory" => Some(info.node_allocatable_memory_bytes),
        "ephemeral-storage" => Some(info.node_allocatable_ephemeral_storage_bytes),
        n if n.starts_with("hugepages-") => None,
        _ => return Err(DownwardError::UnsupportedResource(resource.to_string())),
    };
    let amount: i128 = match kind {
        "limits" => match quantity(limits, name) {
            Some(q) => parse(q),
            None => allocatable.unwrap_or(0) as i128,
        },
        "requests" => match quantity(requests, name).or(quantity(limits, name)) {
            Some(q) => parse(q),
            None => 0,
        },
        _ => return Err(DownwardError::UnsupportedResource(resource.to_string())),
    };
    let divisor_text = divisor.map(|d| d.0.as_str()).unwrap_or("");
    let divisor_value: i128 = if divisor_text.is_empty() {
        if is_cpu { 1000 } else { 1 }
    } else {
        match value(divisor_text) {
            Some(v) if v > 0 => v as i128,
            // A literal zero means "unset", as the API server defaults it.
            Some(_) if divisor_text.trim_start_matches('0').is_empty() => {
                if is_cpu {
                    1000
                } else {
                    1
                }
            }
            _ => return Err(DownwardError::InvalidDivisor(divisor_text.to_string())),
        }
    };
    // Integer ceiling: the kubelet rounds a fraction of the divisor up (math.Ceil).
    let value = (amount + divisor_value - 1).div_euclid(divisor_value);
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).expect("test pod parses")
    }

    fn info() -> PodRuntimeInfo {
        PodRuntimeInfo {
            pod_ips: vec!["10.1.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
            host_ips: vec!["192.168.1.2".parse().unwrap()],
            node_allocatable_cpu_millis: 2000,
            node_allocatable_memory_bytes: 4 << 30,
            node_allocatable_ephemeral_storage_bytes: 10 << 30,
        }
    }

    #[test]
    fn every_field_path() {
        let p = pod(r#"
metadata: {name: web, namespace: prod, uid: u-1, labels: {app: web, tier: "a\"b"}, annotations: {note: hi}}
spec: {nodeName: node1, serviceAccountName: sa, containers: [{name: a, image: x}]}
"#);
        let i = info();
        let v = |path: &str| field_value(&p, &i, path).unwrap();
        assert_eq!(v("metadata.name"), "web");
        assert_eq!(v("metadata.namespace"), "prod");
        assert_eq!(v("metadata.uid"), "u-1");
        assert_eq!(v("metadata.labels['app']"), "web");
        assert_eq!(v("metadata.labels['missing']"), "");
        assert_eq!(v("metadata.annotations['note']"), "hi");
        assert_eq!(v("metadata.labels"), "app=\"web\"\ntier=\"a\\\"b\"");
        assert_eq!(v("metadata.annotations"), "note=\"hi\"");
        assert_eq!(v("spec.nodeName"), "node1");
        assert_eq!(v("spec.serviceAccountName"), "sa");
        assert_eq!(v("status.podIP"), "10.1.0.5");
        assert_eq!(v("status.podIPs"), "10.1.0.5,fd00::5");
        assert_eq!(v("status.hostIP"), "192.168.1.2");
        assert_eq!(v("status.hostIPs"), "192.168.1.2");
        assert_eq!(
            field_value(&p, &i, "spec.hostname"),
            Err(DownwardError::UnsupportedField("spec.hostname".into()))
        );
    }

    #[test]
    fn resources_with_divisors_round_up() {
        let p = pod(r#"
spec:
  containers:
  - name: a
    image: x
    resources: {limits: {cpu: 1500m, memory: 100Mi}, requests: {cpu: 250m, memory: 10M}}
  - name: b
    image: x
"#);
        let i = info();
        let a = find_container(&p, "a").unwrap();
        let b = find_container(&p, "b").unwrap();
        let q = |s: &str| Quantity(s.to_string());
        let v = |c: &Container, r: &str, d: Option<&str>| {
            resource_value(c, r, d.map(q).as_ref(), &i).unwrap()
        };
        // cpu in cores rounds up: 1.5 → 2, 0.25 → 1.
        assert_eq!(v(a, "limits.cpu", None), "2");
        assert_eq!(v(a, "requests.cpu", None), "1");
        assert_eq!(v(a, "limits.cpu", Some("1m")), "1500");
        assert_eq!(v(a, "requests.cpu", Some("1m")), "250");
        assert_eq!(v(a, "limits.memory", None), (100u64 << 20).to_string());
        assert_eq!(v(a, "limits.memory", Some("1Mi")), "100");
        assert_eq!(v(a, "requests.memory", Some("1Mi")), "10"); // 9.54 → 10
        assert_eq!(v(a, "requests.memory", Some("1k")), "10000");
        // Unset limits are the node's allocatable amount; unset requests are 0.
        assert_eq!(v(b, "limits.cpu", Some("1m")), "2000");
        assert_eq!(v(b, "limits.memory", Some("1Gi")), "4");
        assert_eq!(v(b, "limits.ephemeral-storage", Some("1Gi")), "10");
        assert_eq!(v(b, "requests.cpu", None), "0");
        assert_eq!(v(b, "requests.memory", None), "0");
        assert!(matches!(
            resource_value(a, "limits.gpu", None, &i),
            Err(DownwardError::UnsupportedResource(_))
        ));
        assert!(matches!(
            resource_value(a, "limits.cpu", Some(&q("-1")), &i),
            Err(DownwardError::InvalidDivisor(_))
        ));
    }
}

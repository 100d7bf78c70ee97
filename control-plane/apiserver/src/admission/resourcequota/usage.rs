//! What an object charges to a quota (kube's quota evaluators): pods their count and their
//! requests and limits, services their count, node ports and load balancers, claims their
//! count and storage, every other kind `count/<resource>.<group>` (and the legacy names of
//! configmaps, secrets, replicationcontrollers and resourcequotas); and which pods a quota's
//! scopes select.

use serde_json::Value;

use crate::admission::resources::{self, ResourceList};
use crate::kinds::Kind;
use crate::quantity::Quantity;

/// kube's `count/<resource>` name of a kind: `count/pods`, `count/deployments.apps`.
pub fn count_name(kind: &Kind) -> String {
    if kind.group.is_empty() {
        format!("count/{}", kind.plural)
    } else {
        format!("count/{}.{}", kind.plural, kind.group)
    }
}

/// Core kinds whose plain resource name is also their count.
const LEGACY_COUNTS: &[&str] = &[
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
];

const COMPUTE: &[&str] = &["cpu", "memory", "ephemeral-storage"];

const STORAGE_CLASS: &str = ".storageclass.storage.k8s.io/";

fn is_pods(kind: &Kind) -> bool {
    kind.group.is_empty() && kind.plural == "pods"
}

/// Whether objects of `kind` are charged for `resource` (kube's `MatchingResources`).
pub fn tracks(kind: &Kind, resource: &str) -> bool {
    if resource == count_name(kind) {
        return true;
    }
    if !kind.group.is_empty() {
        return false;
    }
    if LEGACY_COUNTS.contains(&kind.plural) && resource == kind.plural {
        return true;
    }
    match kind.plural {
        "pods" => {
            COMPUTE.contains(&resource)
                || resource.starts_with("hugepages-")
                || resource.strip_prefix("requests.").is_some_and(|r| {
                    COMPUTE.contains(&r) || r.starts_with("hugepages-") || r.contains('/')
                })
                || resource
                    .strip_prefix("limits.")
                    .is_some_and(|r| COMPUTE.contains(&r))
        }
        "services" => matches!(resource, "services.nodeports" | "services.loadbalancers"),
        "persistentvolumeclaims" => {
            resource == "requests.storage"
                || resource.ends_with(&format!("{STORAGE_CLASS}requests.storage"))
                || resource.ends_with(&format!("{STORAGE_CLASS}persistentvolumeclaims"))
        }
        _ => false,
    }
}

fn one() -> Quantity {
    Quantity::from_units(1)
}

/// Whether updates of `kind` are charged too (what they add): services and claims.
pub fn charges_updates(kind: &Kind) -> bool {
    kind.group.is_empty() && matches!(kind.plural, "services" | "persistentvolumeclaims")
}

/// What `object` of `kind` charges, before masking to a quota's resources.
pub fn usage(kind: &Kind, object: &Value) -> ResourceList {
    let mut usage = ResourceList::new();
    if is_pods(kind) && is_terminal(object) {
        return usage;
    }
    usage.insert(count_name(kind), one());
    if !kind.group.is_empty() {
        return usage;
    }
    if LEGACY_COUNTS.contains(&kind.plural) {
        usage.insert(kind.plural.to_string(), one());
    }
    match kind.plural {
        "pods" => {
            let spec = object.get("spec").cloned().unwrap_or(Value::Null);
            let requests = resources::pod_resources(&spec, "requests");
            let limits = resources::pod_resources(&spec, "limits");
            usage.extend(compute_usage(&requests, &limits));
        }
        "services" => {
            let kind_of = object.pointer("/spec/type").and_then(Value::as_str);
            let ports = object
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len) as i64;
            let allocates = object
                .pointer("/spec/allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                != Some(false);
            let node_ports = match kind_of {
                Some("NodePort") => ports,
                Some("LoadBalancer") if allocates => ports,
                _ => 0,
            };
            usage.insert(
                "services.nodeports".into(),
                Quantity::from_units(node_ports),
            );
            let balancers = i64::from(kind_of == Some("LoadBalancer"));
            usage.insert(
                "services.loadbalancers".into(),
                Quantity::from_units(balancers),
            );
        }
        "persistentvolumeclaims" => {
            let requested = resources::resource_list(object.pointer("/spec/resources/requests"));
            let allocated = resources::resource_list(object.pointer("/status/allocatedResources"));
            let storage = match (requested.get("storage"), allocated.get("storage")) {
                (Some(r), Some(a)) => Some(Quantity::max(*r, *a)),
                (r, a) => r.or(a).copied(),
            };
            let class = object
                .pointer("/spec/storageClassName")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty());
            if let Some(class) = class {
                usage.insert(
                    format!("{class}{STORAGE_CLASS}persistentvolumeclaims"),
                    one(),
                );
            }
            if let Some(storage) = storage {
                usage.insert("requests.storage".into(), storage);
                if let Some(class) = class {
                    usage.insert(format!("{class}{STORAGE_CLASS}requests.storage"), storage);
                }
            }
        }
        _ => {}
    }
    usage
}

/// kube's `podComputeUsageHelper`: requests under their plain and `requests.` names, limits of
/// cpu, memory and ephemeral storage under `limits.`, hugepages and extended resources.
fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut usage = ResourceList::new();
    for (name, quantity) in requests {
        if COMPUTE.contains(&name.as_str()) || name.starts_with("hugepages-") {
            usage.insert(name.clone(), *quantity);
            usage.insert(format!("requests.{name}"), *quantity);
        } else if name.contains('/') && !name.starts_with("kubernetes.io/") {
            usage.insert(format!("requests.{name}"), *quantity);
        }
    }
    for (name, quantity) in limits {
        if COMPUTE.contains(&name.as_str()) {
            usage.insert(format!("limits.{name}"), *quantity);
        }
    }
    usage
}

/// Pods that finished no longer count.
fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// The compute resources whose per-container requests or limits a quota on them demands.
const MUST_SPECIFY: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// kube's pod `Constraints`: a quota on cpu or memory requests or limits needs every container
/// to state them. `Err` says what is missing where: `must specify limits.cpu for: c`.
pub fn constraints(kind: &Kind, object: &Value, quota_resources: &[String]) -> Result<(), String> {
    if !is_pods(kind) {
        return Ok(());
    }
    let required: Vec<&str> = MUST_SPECIFY
        .iter()
        .copied()
        .filter(|r| quota_resources.iter().any(|q| q == r))
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let mut missing: std::collections::BTreeMap<&str, std::collections::BTreeSet<String>> =
        Default::default();
    for list in ["containers", "initContainers"] {
        for container in resources::containers(&spec, list) {
            let has = compute_usage(
                &resources::container_resources(container, "requests"),
                &resources::container_resources(container, "limits"),
            );
            let name = container.get("name").and_then(Value::as_str).unwrap_or("");
            for resource in &required {
                if !has.contains_key(*resource) {
                    missing
                        .entry(resource)
                        .or_default()
                        .insert(name.to_string());
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(resource, names)| {
            format!(
                "{resource} for: {}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

/// Whether `quota`'s scopes (and scope selector) select `object`. Scoped quotas only ever
/// select pods, as kube's.
pub fn in_scope(quota: &Value, kind: &Kind, object: &Value) -> bool {
    let scopes: Vec<&str> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let selector: Vec<&Value> = quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if scopes.is_empty() && selector.is_empty() {
        return true;
    }
    if !is_pods(kind) {
        return false;
    }
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let scoped = scopes.iter().all(|s| pod_in_scope(&spec, s, "Exists", &[]));
    scoped
        && selector.iter().all(|expression| {
            let scope = expression
                .get("scopeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            let operator = expression
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or("");
            let values: Vec<&str> = expression
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            pod_in_scope(&spec, scope, operator, &values)
        })
}

fn pod_in_scope(spec: &Value, scope: &str, operator: &str, values: &[&str]) -> bool {
    let matched = match scope {
        "Terminating" => spec
            .get("activeDeadlineSeconds")
            .is_some_and(|v| !v.is_null()),
        "NotTerminating" => spec.get("activeDeadlineSeconds").is_none_or(Value::is_null),
        "BestEffort" => is_best_effort(spec),
        "NotBestEffort" => !is_best_effort(spec),
        "CrossNamespacePodAffinity" => cross_namespace_affinity(spec),
        "PriorityClass" => {
            let class = spec
                .get("priorityClassName")
                .and_then(Value::as_str)
                .unwrap_or("");
            return match operator {
                "In" => values.contains(&class),
                "NotIn" => !values.contains(&class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => false,
            };
        }
        _ => false,
    };
    match operator {
        "DoesNotExist" => !matched,
        _ => matched,
    }
}

/// Whether a pod (anti-)affinity term reaches other namespaces (`namespaces` or a
/// `namespaceSelector`), which kube's CrossNamespacePodAffinity scope selects.
fn cross_namespace_affinity(spec: &Value) -> bool {
    let crosses = |term: &Value| {
        term.get("namespaces")
            .and_then(Value::as_array)
            .is_some_and(|n| !n.is_empty())
            || term.get("namespaceSelector").is_some_and(|s| !s.is_null())
    };
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let Some(affinity) = spec.pointer(&format!("/affinity/{kind}")) else {
            return false;
        };
        let terms = |field: &str| {
            affinity
                .get(field)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        terms("requiredDuringSchedulingIgnoredDuringExecution")
            .iter()
            .any(crosses)
            || terms("preferredDuringSchedulingIgnoredDuringExecution")
                .iter()
                .filter_map(|w| w.get("podAffinityTerm"))
                .any(crosses)
    })
}

/// A pod is BestEffort when no container requests or limits cpu or memory.
fn is_best_effort(spec: &Value) -> bool {
    ["containers", "initContainers"].iter().all(|list| {
        resources::containers(spec, list).all(|c| {
            ["requests", "limits"].iter().all(|which| {
                let list = resources::container_resources(c, which);
                !list.contains_key("cpu") && !list.contains_key("memory")
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::KindTable;
    use serde_json::json;

    fn kind(plural: &str) -> Kind {
        let table = KindTable::default();
        match table.all().iter().find(|k| k.plural == plural) {
            Some(k) => k.clone(),
            None => panic!("no {plural}"),
        }
    }

    fn printed(list: &ResourceList) -> Vec<String> {
        list.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    #[test]
    fn pods_charge_count_requests_and_limits() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"requests": {"cpu": "200m", "example.com/gpu": "1"}}},
        ]}});
        assert_eq!(
            printed(&usage(&kind("pods"), &pod)),
            [
                "count/pods=1",
                "cpu=300m",
                "limits.cpu=1",
                "memory=1Gi",
                "pods=1",
                "requests.cpu=300m",
                "requests.example.com/gpu=1",
                "requests.memory=1Gi",
            ]
        );
        let done = json!({"spec": {}, "status": {"phase": "Succeeded"}});
        assert!(usage(&kind("pods"), &done).is_empty());
        assert!(tracks(&kind("pods"), "requests.cpu"));
        assert!(!tracks(&kind("pods"), "services"));
        assert!(tracks(&kind("deployments"), "count/deployments.apps"));
    }

    #[test]
    fn services_charge_node_ports_and_load_balancers() {
        let svc = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}});
        assert_eq!(
            printed(&usage(&kind("services"), &svc)),
            [
                "count/services=1",
                "services=1",
                "services.loadbalancers=1",
                "services.nodeports=2",
            ]
        );
        let claim = json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}});
        let charged = usage(&kind("persistentvolumeclaims"), &claim);
        assert_eq!(
            charged
                .get("requests.storage")
                .map(ToString::to_string)
                .as_deref(),
            Some("1Gi")
        );
        assert!(charged.contains_key("fast.storageclass.storage.k8s.io/requests.storage"));
    }

    #[test]
    fn quotas_on_compute_need_every_container_to_state_it() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "1"}}},
            {"name": "b"},
        ]}});
        let hard = vec![
            "limits.cpu".to_string(),
            "requests.cpu".to_string(),
            "pods".to_string(),
        ];
        assert_eq!(
            constraints(&kind("pods"), &pod, &hard),
            Err("must specify limits.cpu for: a,b; requests.cpu for: b".into())
        );
    }

    #[test]
    fn scopes_select_pods() {
        let quota = json!({"spec": {"scopes": ["BestEffort", "NotTerminating"]}});
        let best_effort = json!({"spec": {"containers": [{"name": "a"}]}});
        let burstable = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}});
        assert!(in_scope(&quota, &kind("pods"), &best_effort));
        assert!(!in_scope(&quota, &kind("pods"), &burstable));
        assert!(!in_scope(&quota, &kind("configmaps"), &json!({})));
        let by_class = json!({"spec": {"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        let high = json!({"spec": {"priorityClassName": "high"}});
        assert!(in_scope(&by_class, &kind("pods"), &high));
        assert!(!in_scope(&by_class, &kind("pods"), &best_effort));
        let cross = json!({"spec": {"scopes": ["CrossNamespacePodAffinity"]}});
        let reaching = json!({"spec": {"affinity": {"podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "podAffinityTerm": {"namespaceSelector": {}, "topologyKey": "x"}}]}}}});
        assert!(in_scope(&cross, &kind("pods"), &reaching));
        assert!(!in_scope(&cross, &kind("pods"), &best_effort));
    }
}

//! LimitRanger: the namespace's LimitRanges default the requests and limits of new pods'
//! containers (mutating), and bound containers, pods and PersistentVolumeClaims with their
//! `min`, `max` and `maxLimitRequestRatio` (validating), with kube's messages. LimitRanges
//! themselves get kube's defaults for `Container` items when written.

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use super::resources::{self, ResourceList};
use super::{Attributes, Operation, Plugin};
use crate::quantity::Quantity;
use crate::status::{ApiError, ApiResult, Cause};

/// The annotation that lists what the plugin set on a pod.
const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// The LimitRanger plugin.
pub struct LimitRanger;

impl Plugin for LimitRanger {
    fn name(&self) -> &'static str {
        "LimitRanger"
    }

    fn mutate<'a>(
        &'a self,
        attributes: &'a Attributes<'a>,
        object: Option<&'a mut Value>,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let (Some(object), Some(namespace)) = (object, attributes.namespace) else {
                return Ok(());
            };
            if attributes.subresource.is_none() {
                super::quantities::check(attributes.kind, object)?;
            }
            if attributes.is("", "limitranges") && attributes.operation != Operation::Delete {
                default_limit_range(object);
                return Ok(());
            }
            // Pods' containers cannot change after create: only creates are defaulted.
            if !attributes.is("", "pods") || attributes.operation != Operation::Create {
                return Ok(());
            }
            default_requests_to_limits(object);
            let ranges =
                resources::list_in(attributes.server, "", "limitranges", namespace).await?;
            for range in &ranges {
                apply_defaults(range, object);
            }
            Ok(())
        })
    }

    fn validate<'a>(
        &'a self,
        attributes: &'a Attributes<'a>,
        object: Option<&'a Value>,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let (Some(object), Some(namespace)) = (object, attributes.namespace) else {
                return Ok(());
            };
            if attributes.is("", "limitranges") && attributes.operation != Operation::Delete {
                let causes = range_causes(object);
                if !causes.is_empty() {
                    return Err(ApiError::invalid("", "LimitRange", attributes.name, causes));
                }
                return Ok(());
            }
            let check: fn(&Value, &Value) -> Vec<String> =
                if attributes.is("", "pods") && attributes.operation == Operation::Create {
                    pod_errors
                } else if attributes.is("", "persistentvolumeclaims")
                    && attributes.operation != Operation::Delete
                {
                    claim_errors
                } else {
                    return Ok(());
                };
            let ranges =
                resources::list_in(attributes.server, "", "limitranges", namespace).await?;
            for range in &ranges {
                let errors = check(range, object);
                if !errors.is_empty() {
                    let kind = attributes.kind;
                    return Err(ApiError::forbidden(
                        kind.group,
                        kind.plural,
                        attributes.name,
                        &aggregate(errors),
                    ));
                }
            }
            Ok(())
        })
    }
}

/// kube's error aggregate: one message alone, several in brackets, duplicates once.
pub(crate) fn aggregate(mut errors: Vec<String>) -> String {
    let mut seen = Vec::new();
    errors.retain(|e| {
        let new = !seen.contains(e);
        if new {
            seen.push(e.clone());
        }
        new
    });
    match errors.len() {
        1 => errors.remove(0),
        _ => format!("[{}]", errors.join(", ")),
    }
}

fn items(range: &Value) -> impl Iterator<Item = &Value> {
    range
        .pointer("/spec/limits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn item_type(item: &Value) -> &str {
    item.get("type").and_then(Value::as_str).unwrap_or("")
}

/// kube's `SetDefaults_LimitRangeItem`: a Container item's default limit falls back to its
/// max, its default request to the default limit, then to its min.
fn default_limit_range(range: &mut Value) {
    let Some(limits) = range
        .pointer_mut("/spec/limits")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for item in limits.iter_mut().filter_map(Value::as_object_mut) {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let list = |item: &Map<String, Value>, field: &str| {
            item.get(field)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let max = list(item, "max");
        let min = list(item, "min");
        let mut default = list(item, "default");
        for (name, value) in &max {
            default.entry(name.clone()).or_insert_with(|| value.clone());
        }
        let mut default_request = list(item, "defaultRequest");
        for (name, value) in default.iter().chain(&min) {
            default_request
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
        item.insert("default".into(), Value::Object(default));
        item.insert("defaultRequest".into(), Value::Object(default_request));
    }
}

/// kube's `SetDefaults_Pod` rule that a container's limit is its request when it gives no
/// request. kube applies it when decoding, before admission, so it is applied here first.
fn default_requests_to_limits(pod: &mut Value) {
    let Some(spec) = pod.get_mut("spec") else {
        return;
    };
    for list in ["containers", "initContainers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut() {
            let Some(limits) = container
                .pointer("/resources/limits")
                .and_then(Value::as_object)
                .cloned()
            else {
                continue;
            };
            let Some(resources) = container
                .get_mut("resources")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            let requests = resources.entry("requests").or_insert_with(|| json!({}));
            if let Some(requests) = requests.as_object_mut() {
                for (name, value) in limits {
                    requests.entry(name).or_insert(value);
                }
            }
        }
    }
}

/// Merges the defaults of `range`'s Container items into every container of `pod` that lacks
/// them, and records what it set in the `kubernetes.io/limit-ranger` annotation.
fn apply_defaults(range: &Value, pod: &mut Value) {
    let mut defaults = Map::new();
    let mut default_requests = Map::new();
    for item in items(range).filter(|i| item_type(i) == "Container") {
        for (field, into) in [
            ("default", &mut defaults),
            ("defaultRequest", &mut default_requests),
        ] {
            if let Some(list) = item.get(field).and_then(Value::as_object) {
                into.extend(list.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
    }
    if defaults.is_empty() && default_requests.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    let Some(spec) = pod.get_mut("spec") else {
        return;
    };
    for (list, what) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let name = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let resources = container.entry("resources").or_insert_with(|| json!({}));
            let Some(resources) = resources.as_object_mut() else {
                continue;
            };
            let mut merge = |field: &str, from: &Map<String, Value>| {
                let slot = resources.entry(field).or_insert_with(|| json!({}));
                if !slot.is_object() {
                    *slot = json!({});
                }
                let mut set = Vec::new();
                if let Some(into) = slot.as_object_mut() {
                    for (resource, value) in from {
                        if !into.contains_key(resource) {
                            into.insert(resource.clone(), value.clone());
                            set.push(resource.clone());
                        }
                    }
                }
                set.sort();
                set
            };
            let set_requests = merge("requests", &default_requests);
            let set_limits = merge("limits", &defaults);
            if !set_requests.is_empty() {
                notes.push(format!(
                    "{} request for {what} {name}",
                    set_requests.join(", ")
                ));
            }
            if !set_limits.is_empty() {
                notes.push(format!("{} limit for {what} {name}", set_limits.join(", ")));
            }
        }
    }
    if notes.is_empty() {
        return;
    }
    let meta = crate::strategy::metadata_mut(pod);
    let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
    if !annotations.is_object() {
        *annotations = json!({});
    }
    annotations[ANNOTATION] = json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
}

/// kube's `ValidateLimitRange` bounds: per item and resource, min <= default request <=
/// default <= max, and a ratio of at least 1 that max/min allows.
fn range_causes(range: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (index, item) in items(range).enumerate() {
        let list = |field: &str| resources::resource_list(item.get(field));
        let (min, max, default, request, ratio) = (
            list("min"),
            list("max"),
            list("default"),
            list("defaultRequest"),
            list("maxLimitRequestRatio"),
        );
        let mut names: Vec<&String> = min
            .keys()
            .chain(max.keys())
            .chain(default.keys())
            .chain(request.keys())
            .chain(ratio.keys())
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let field = |f: &str| format!("spec.limits[{index}].{f}[{name}]");
            let mut invalid = |f: &str, value: &Quantity, why: String| {
                causes.push(Cause::invalid(&field(f), &value.to_string(), &why));
            };
            let (lo, hi) = (min.get(name), max.get(name));
            let (def, req) = (default.get(name), request.get(name));
            if let (Some(lo), Some(hi)) = (lo, hi) {
                if lo > hi {
                    invalid(
                        "min",
                        lo,
                        format!("min value {lo} is greater than max value {hi}"),
                    );
                }
            }
            if let (Some(req), Some(lo)) = (req, lo) {
                if lo > req {
                    let why = format!("min value {lo} is greater than default request value {req}");
                    invalid("defaultRequest", req, why);
                }
            }
            if let (Some(req), Some(hi)) = (req, hi) {
                if req > hi {
                    let why = format!("default request value {req} is greater than max value {hi}");
                    invalid("defaultRequest", req, why);
                }
            }
            if let (Some(req), Some(def)) = (req, def) {
                if req > def {
                    let why = format!(
                        "default request value {req} is greater than default limit value {def}"
                    );
                    invalid("defaultRequest", req, why);
                }
            }
            if let (Some(def), Some(lo)) = (def, lo) {
                if lo > def {
                    invalid(
                        "default",
                        lo,
                        format!("min value {lo} is greater than default value {def}"),
                    );
                }
            }
            if let (Some(def), Some(hi)) = (def, hi) {
                if def > hi {
                    invalid(
                        "default",
                        hi,
                        format!("default value {def} is greater than max value {hi}"),
                    );
                }
            }
            if let Some(r) = ratio.get(name) {
                if *r < Quantity::from_units(1) {
                    invalid(
                        "maxLimitRequestRatio",
                        r,
                        format!("ratio {r} is less than 1"),
                    );
                }
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    let allowed = hi.milli_value() as f64 / lo.milli_value() as f64;
                    if r.milli_value() as f64 / 1000.0 > allowed {
                        let why = format!("ratio {r} is greater than max/min = {allowed:.6}");
                        invalid("maxLimitRequestRatio", r, why);
                    }
                }
            }
        }
    }
    causes
}

/// kube compares in thousandths (its int64 milli values; exact here at any size).
fn minimum(
    kind: &str,
    resource: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let Some(request) = requests.get(resource) else {
        return Some(format!(
            "minimum {resource} usage per {kind} is {enforced}.  No request is specified"
        ));
    };
    if request.milli_value() < enforced.milli_value() {
        return Some(format!(
            "minimum {resource} usage per {kind} is {enforced}, but request is {request}"
        ));
    }
    match limits.get(resource) {
        Some(limit) if limit.milli_value() < enforced.milli_value() => Some(format!(
            "minimum {resource} usage per {kind} is {enforced}, but limit is {limit}"
        )),
        _ => None,
    }
}

fn maximum(
    kind: &str,
    resource: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let Some(limit) = limits.get(resource) else {
        return Some(format!(
            "maximum {resource} usage per {kind} is {enforced}.  No limit is specified"
        ));
    };
    if limit.milli_value() > enforced.milli_value() {
        return Some(format!(
            "maximum {resource} usage per {kind} is {enforced}, but limit is {limit}"
        ));
    }
    match requests.get(resource) {
        Some(request) if request.milli_value() > enforced.milli_value() => Some(format!(
            "maximum {resource} usage per {kind} is {enforced}, but request is {request}"
        )),
        _ => None,
    }
}

fn ratio(
    kind: &str,
    resource: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let request = requests.get(resource).map_or(0, Quantity::milli_value);
    if request == 0 {
        return Some(format!(
            "{resource} max limit to request ratio per {kind} is {enforced}, but no request is specified or request is 0"
        ));
    }
    let limit = limits.get(resource).map_or(0, Quantity::milli_value);
    if limit == 0 {
        return Some(format!(
            "{resource} max limit to request ratio per {kind} is {enforced}, but no limit is specified or limit is 0"
        ));
    }
    let observed = limit as f64 / request as f64;
    if observed * 1000.0 > enforced.milli_value() as f64 {
        return Some(format!(
            "{resource} max limit to request ratio per {kind} is {enforced}, but provided ratio is {observed:.6}"
        ));
    }
    None
}

/// The violations of one item's bounds by one set of requests and limits, in kube's order
/// (min, max, ratio), each by resource name.
fn bounds(kind: &str, item: &Value, requests: &ResourceList, limits: &ResourceList) -> Vec<String> {
    let mut errors = Vec::new();
    type Check = fn(&str, &str, &Quantity, &ResourceList, &ResourceList) -> Option<String>;
    for (field, check) in [
        ("min", minimum as Check),
        ("max", maximum),
        ("maxLimitRequestRatio", ratio),
    ] {
        for (resource, enforced) in resources::resource_list(item.get(field)) {
            errors.extend(check(kind, &resource, &enforced, requests, limits));
        }
    }
    errors
}

/// What `range` refuses of `pod`: its Container items per container and init container, its
/// Pod items on the pod's effective requests and limits.
fn pod_errors(range: &Value, pod: &Value) -> Vec<String> {
    let spec = pod.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut errors = Vec::new();
    for item in items(range) {
        match item_type(item) {
            "Container" => {
                for list in ["containers", "initContainers"] {
                    for container in resources::containers(&spec, list) {
                        let requests = resources::container_resources(container, "requests");
                        let limits = resources::container_resources(container, "limits");
                        errors.extend(bounds("Container", item, &requests, &limits));
                    }
                }
            }
            "Pod" => {
                let requests = resources::pod_resources(&spec, "requests");
                let limits = resources::pod_resources(&spec, "limits");
                errors.extend(bounds("Pod", item, &requests, &limits));
            }
            _ => {}
        }
    }
    errors
}

/// What `range` refuses of a claim: its storage requests against min, and (as limits, which is
/// how kube words it) against max.
fn claim_errors(range: &Value, claim: &Value) -> Vec<String> {
    let requests = resources::resource_list(claim.pointer("/spec/resources/requests"));
    let none = ResourceList::new();
    let mut errors = Vec::new();
    for item in items(range).filter(|i| item_type(i) == "PersistentVolumeClaim") {
        for (resource, enforced) in resources::resource_list(item.get("min")) {
            errors.extend(minimum(
                "PersistentVolumeClaim",
                &resource,
                &enforced,
                &requests,
                &none,
            ));
        }
        for (resource, enforced) in resources::resource_list(item.get("max")) {
            errors.extend(maximum(
                "PersistentVolumeClaim",
                &resource,
                &enforced,
                &none,
                &requests,
            ));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Value {
        json!({"spec": {"limits": [
            {"type": "Container", "max": {"cpu": "500m"}, "min": {"memory": "10Mi"},
             "defaultRequest": {"cpu": "100m"}},
            {"type": "Pod", "max": {"memory": "1Gi"}},
        ]}})
    }

    #[test]
    fn container_items_are_defaulted_from_max_and_min() {
        let mut r = range();
        default_limit_range(&mut r);
        assert_eq!(r["spec"]["limits"][0]["default"], json!({"cpu": "500m"}));
        assert_eq!(
            r["spec"]["limits"][0]["defaultRequest"],
            json!({"cpu": "100m", "memory": "10Mi"})
        );
        assert!(r["spec"]["limits"][1].get("default").is_none());
    }

    #[test]
    fn defaults_fill_what_containers_leave_out_and_are_annotated() {
        let mut r = range();
        default_limit_range(&mut r);
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "200m"}}},
            {"name": "b"},
        ]}});
        default_requests_to_limits(&mut pod);
        apply_defaults(&r, &mut pod);
        let a = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(a["requests"], json!({"cpu": "200m", "memory": "10Mi"}));
        let b = &pod["spec"]["containers"][1]["resources"];
        assert_eq!(b["limits"], json!({"cpu": "500m"}));
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: memory request for container a; cpu, memory request for container b; cpu limit for container b"
        );
    }

    #[test]
    fn bounds_are_refused_with_kube_messages() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "2Gi"}, "requests": {"cpu": "1", "memory": "5Mi"}}},
        ]}});
        assert_eq!(
            pod_errors(&range(), &pod),
            [
                "minimum memory usage per Container is 10Mi, but request is 5Mi",
                "maximum cpu usage per Container is 500m, but limit is 1",
                "maximum memory usage per Pod is 1Gi, but limit is 2Gi",
            ]
        );
        let ratio_range = json!({"spec": {"limits": [{"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}}]}});
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "300m"}}},
        ]}});
        assert_eq!(
            pod_errors(&ratio_range, &pod),
            ["cpu max limit to request ratio per Container is 2, but provided ratio is 3.333333"]
        );
        assert_eq!(aggregate(vec!["x".into(), "x".into()]), "x");
        assert_eq!(aggregate(vec!["x".into(), "y".into()]), "[x, y]");
    }

    #[test]
    fn inconsistent_ranges_are_invalid() {
        let r = json!({"spec": {"limits": [{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"},
            "maxLimitRequestRatio": {"memory": "500m"}}]}});
        let messages: Vec<String> = range_causes(&r)
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            messages,
            [
                "spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1",
                "spec.limits[0].maxLimitRequestRatio[memory]: Invalid value: \"500m\": ratio 500m is less than 1",
            ]
        );
    }

    #[test]
    fn claims_are_bounded_by_their_storage_request() {
        let r = json!({"spec": {"limits": [{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}]}});
        let small = json!({"spec": {"resources": {"requests": {"storage": "500Mi"}}}});
        assert_eq!(
            claim_errors(&r, &small),
            ["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
        );
        let big = json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}});
        assert_eq!(
            claim_errors(&r, &big),
            ["maximum storage usage per PersistentVolumeClaim is 2Gi, but limit is 5Gi"]
        );
    }
}

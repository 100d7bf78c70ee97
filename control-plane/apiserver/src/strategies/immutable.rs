//! What workload updates may not change, as upstream's ValidateDeploymentUpdate,
//! ValidateReplicaSetUpdate, ValidateDaemonSetUpdate, ValidateStatefulSetUpdate and
//! ValidateJobUpdate (apps/v1 and batch/v1).

use serde_json::{Value, json};

use super::workloads::go_map;
use crate::status::Cause;

/// A label selector as Go's `%#v` prints the `metav1.LabelSelector` upstream's message shows.
fn go_selector(selector: Option<&Value>) -> String {
    let labels = selector.and_then(|s| s.get("matchLabels"));
    let expressions = selector
        .and_then(|s| s.get("matchExpressions"))
        .and_then(Value::as_array);
    let expressions = match expressions {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(list) => {
            let shown: Vec<String> = list
                .iter()
                .map(|e| {
                    let values = match e.get("values").and_then(Value::as_array) {
                        None => "[]string(nil)".to_string(),
                        Some(values) => {
                            let v: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                            format!("[]string{{{}}}", v.join(", "))
                        }
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{values}}}",
                        json!(e.get("key").and_then(Value::as_str).unwrap_or("")),
                        json!(e.get("operator").and_then(Value::as_str).unwrap_or("")),
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", shown.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{expressions}}}",
        go_map(labels)
    )
}

fn immutable(field: &str, shown: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {shown}: field is immutable"),
        field: field.into(),
    }
}

fn forbidden(field: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueForbidden".into(),
        message: format!("Forbidden: {detail}"),
        field: field.into(),
    }
}

fn spec_field<'a>(object: &'a Value, key: &str) -> Option<&'a Value> {
    object
        .pointer(&format!("/spec/{key}"))
        .filter(|v| !v.is_null())
}

fn check_selector(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let (a, b) = (spec_field(new, "selector"), spec_field(old, "selector"));
    if a != b {
        causes.push(immutable("spec.selector", &go_selector(a)));
    }
}

/// Upstream's ValidateStatefulSetUpdate: the spec with the updatable fields taken back to the
/// old values must equal the old spec.
fn check_statefulset(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let mut munged = new.get("spec").cloned().unwrap_or_else(|| json!({}));
    let old_spec = old.get("spec").cloned().unwrap_or_else(|| json!({}));
    for key in [
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
    ] {
        if let Some(map) = munged.as_object_mut() {
            match old_spec.get(key) {
                Some(value) => map.insert(key.into(), value.clone()),
                None => map.remove(key),
            };
        }
    }
    if munged != old_spec {
        causes.push(forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ));
    }
}

/// Upstream's ValidateJobSpecUpdate (1.33): the selector, completion mode and pod failure
/// policy never change; completions only with parallelism in an Indexed Job; the template only
/// while a never-started Job is suspended, and then only its scheduling directives.
fn check_job(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    check_selector(new, old, causes);
    let shown = |v: Option<&Value>| v.map_or("null".to_string(), Value::to_string);
    for key in ["completionMode", "podFailurePolicy", "backoffLimitPerIndex"] {
        let (a, b) = (spec_field(new, key), spec_field(old, key));
        if a != b {
            causes.push(immutable(&format!("spec.{key}"), &shown(a)));
        }
    }
    let (completions, old_completions) = (
        spec_field(new, "completions"),
        spec_field(old, "completions"),
    );
    if completions != old_completions {
        // Elastic Indexed Jobs: completions may follow parallelism.
        let indexed = spec_field(new, "completionMode").and_then(Value::as_str) == Some("Indexed");
        let follows = completions.is_some() && completions == spec_field(new, "parallelism");
        if !(indexed && follows && old_completions.is_some()) {
            causes.push(immutable("spec.completions", &shown(completions)));
        }
    }
    let template = |o: &Value| spec_field(o, "template").cloned();
    let (mut a, b) = (template(new), template(old));
    if a == b {
        return;
    }
    let suspended = spec_field(old, "suspend").and_then(Value::as_bool) == Some(true);
    let never_started = old.pointer("/status/startTime").is_none_or(Value::is_null);
    if suspended && never_started {
        // The scheduling directives a queue controller sets on a suspended Job may change.
        if let (Some(a), Some(b)) = (a.as_mut(), b.as_ref()) {
            for pointer in [
                "/spec/nodeSelector",
                "/spec/affinity",
                "/spec/tolerations",
                "/spec/schedulingGates",
                "/metadata/labels",
                "/metadata/annotations",
            ] {
                let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
                let old_value = b.pointer(pointer).cloned();
                if let Some(map) = a.pointer_mut(parent).and_then(Value::as_object_mut) {
                    match old_value {
                        Some(value) => map.insert(key.into(), value),
                        None => map.remove(key),
                    };
                }
            }
        }
        if a == b {
            return;
        }
    }
    // Upstream shows the whole core.PodTemplateSpec as a Go value here; that text has no
    // practical JSON equivalent, so the value is left out.
    causes.push(Cause {
        reason: "FieldValueInvalid".into(),
        message: "Invalid value: field is immutable".into(),
        field: "spec.template".into(),
    });
}

/// What is wrong with an update of the workload `kind` from `old` to `new` (both defaulted).
pub fn check_update(kind: &str, new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" => check_selector(new, old, &mut causes),
        "StatefulSet" => check_statefulset(new, old, &mut causes),
        "Job" => check_job(new, old, &mut causes),
        _ => {}
    }
    causes
}

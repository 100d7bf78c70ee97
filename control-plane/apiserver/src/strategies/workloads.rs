//! Workloads (Deployments, ReplicaSets, StatefulSets, DaemonSets, ReplicationControllers, Jobs
//! and CronJobs): upstream's defaults, the selector that must match the template's labels,
//! the restart policy the controller allows, and Jobs' generated selector and labels.

use serde_json::{Map, Value, json};

use super::cron;
use crate::selectors::LabelSelector;
use crate::status::Cause;
use crate::subresources::selector_string;
use crate::validation;

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.into(), value);
    }
}

fn spec_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    if !object["spec"].is_object() {
        object["spec"] = json!({});
    }
    object.get_mut("spec").and_then(Value::as_object_mut)
}

/// Upstream's SetDefaults of the kind (apps/v1, core/v1 RC, batch/v1).
pub fn defaults(kind: &str, object: &mut Value) {
    template_defaults(kind, object);
    if kind == "PodTemplate" {
        return;
    }
    let Some(spec) = spec_mut(object) else {
        return;
    };
    match kind {
        "Deployment" => {
            set_default(spec, "replicas", json!(1));
            set_default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
        }
        "ReplicaSet" => set_default(spec, "replicas", json!(1)),
        "StatefulSet" => {
            set_default(spec, "replicas", json!(1));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
            );
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            if let Some(claims) = spec
                .get_mut("volumeClaimTemplates")
                .and_then(Value::as_array_mut)
            {
                for claim in claims.iter_mut() {
                    super::storage::defaults("PersistentVolumeClaim", claim);
                }
            }
        }
        "DaemonSet" => {
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            set_default(spec, "revisionHistoryLimit", json!(10));
        }
        "ReplicationController" => {
            set_default(spec, "replicas", json!(1));
            // An RC without a selector selects its template's labels.
            let empty = spec
                .get("selector")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty);
            if empty {
                let labels = spec
                    .get("template")
                    .and_then(|t| t.pointer("/metadata/labels"))
                    .cloned();
                if let Some(labels) = labels {
                    spec.insert("selector".into(), labels);
                }
            }
        }
        "Job" => job_defaults(spec),
        "CronJob" => {
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(job) = spec
                .get_mut("jobTemplate")
                .and_then(|t| t.get_mut("spec"))
                .and_then(Value::as_object_mut)
            {
                job_defaults(job);
            }
        }
        _ => {}
    }
}

/// The pod template's defaults, the same a Pod gets (upstream defaults every embedded
/// PodTemplateSpec with SetDefaults_PodSpec).
fn template_defaults(kind: &str, object: &mut Value) {
    let pointer = match kind {
        "PodTemplate" => "/template/spec",
        "CronJob" => "/spec/jobTemplate/spec/template/spec",
        _ => "/spec/template/spec",
    };
    if let Some(spec) = object.pointer_mut(pointer).and_then(Value::as_object_mut) {
        crate::strategy::default_pod_spec(spec);
    }
}

fn job_defaults(spec: &mut Map<String, Value>) {
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    let per_index = spec
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null());
    set_default(
        spec,
        "backoffLimit",
        json!(if per_index { i32::MAX } else { 6 }),
    );
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "manualSelector", json!(false));
    let replacement = if spec.get("podFailurePolicy").is_some_and(|v| !v.is_null()) {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    set_default(spec, "podReplacementPolicy", json!(replacement));
}

/// A Job's generated selector and template labels (unless `manualSelector`), from its uid and
/// name; its own labels default to the template's, as upstream.
pub fn prepare_job(object: &mut Value) {
    let uid = object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let has_labels = object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .is_some_and(|l| !l.is_empty());
    if !has_labels {
        if let Some(labels) = object.pointer("/spec/template/metadata/labels").cloned() {
            object["metadata"]["labels"] = labels;
        }
    }
    let manual = object.pointer("/spec/manualSelector") == Some(&json!(true));
    if manual {
        return;
    }
    let Some(spec) = spec_mut(object) else {
        return;
    };
    if spec.get("selector").is_none_or(Value::is_null) {
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
        );
    }
    if !spec["template"].is_object() {
        spec.insert("template".into(), json!({}));
    }
    let template = &mut spec["template"];
    if !template["metadata"].is_object() {
        template["metadata"] = json!({});
    }
    if !template["metadata"]["labels"].is_object() {
        template["metadata"]["labels"] = json!({});
    }
    if let Some(labels) = template["metadata"]["labels"].as_object_mut() {
        for (key, value) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels.insert(key.into(), json!(value));
        }
    }
}

/// A label map as Go's `%#v` prints it in upstream's messages.
pub(super) fn go_map(labels: Option<&Value>) -> String {
    let Some(map) = labels.and_then(Value::as_object) else {
        return "map[string]string(nil)".into();
    };
    let mut pairs: Vec<(&String, &Value)> = map.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", json!(k), json!(v.as_str().unwrap_or(""))))
        .collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

fn invalid(field: &str, shown: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {shown}: {detail}"),
        field: field.into(),
    }
}

fn unsupported(field: &str, value: &str, supported: &[&str]) -> Cause {
    let listed: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
    Cause {
        reason: "FieldValueNotSupported".into(),
        message: format!(
            "Unsupported value: {}: supported values: {}",
            json!(value),
            listed.join(", ")
        ),
        field: field.into(),
    }
}

/// The selector at `selector_path` against the template at `template_path` (JSON pointers
/// under the object; the field paths are the same with dots).
fn check_selector(
    object: &Value,
    base: &str,
    kind: &str,
    map_selector: bool,
    causes: &mut Vec<Cause>,
) {
    let field = |p: &str| format!("{}{p}", base.trim_start_matches('/').replace('/', "."));
    let selector = object.pointer(&format!("{base}/selector"));
    let labels = object.pointer(&format!("{base}/template/metadata/labels"));
    let empty = selector.is_none_or(|s| {
        s.is_null()
            || (s.as_object().is_some_and(|m| {
                m.is_empty()
                    || (!map_selector
                        && m.get("matchLabels")
                            .and_then(Value::as_object)
                            .is_none_or(Map::is_empty)
                        && m.get("matchExpressions")
                            .and_then(Value::as_array)
                            .is_none_or(Vec::is_empty))
            }))
    });
    match selector {
        None | Some(Value::Null) if !map_selector => {
            causes.push(Cause::required(&field(".selector")));
            return;
        }
        _ if empty && !map_selector => {
            causes.push(invalid(
                &field(".selector"),
                "v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}",
                &format!("empty selector is invalid for {}", kind.to_lowercase()),
            ));
            return;
        }
        _ if empty => {
            causes.push(Cause::required(&field(".selector")));
            return;
        }
        _ => {}
    }
    let text = selector.map(selector_string).unwrap_or_default();
    let matches = match LabelSelector::parse(&text) {
        Ok(parsed) => {
            parsed.matches(&json!({"metadata": {"labels": labels.cloned().unwrap_or(Value::Null)}}))
        }
        Err(error) => {
            causes.push(invalid(
                &field(".selector"),
                &json!(text).to_string(),
                &error.message,
            ));
            return;
        }
    };
    if !matches {
        causes.push(invalid(
            &field(".template.metadata.labels"),
            &go_map(labels),
            "`selector` does not match template `labels`",
        ));
    }
}

fn check_template(object: &Value, base: &str, policies: &[&str], causes: &mut Vec<Cause>) {
    let path = format!(
        "{}.template.spec",
        base.trim_start_matches('/').replace('/', ".")
    );
    let spec = object.pointer(&format!("{base}/template/spec"));
    causes.extend(validation::check_pod_spec(spec, &path));
    let policy = spec
        .and_then(|s| s.get("restartPolicy"))
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if !policies.contains(&policy) {
        causes.push(unsupported(
            &format!("{path}.restartPolicy"),
            policy,
            policies,
        ));
    }
}

fn check_replicas(object: &Value, base: &str, causes: &mut Vec<Cause>) {
    for field in ["replicas", "parallelism", "completions", "backoffLimit"] {
        let Some(value) = object
            .pointer(&format!("{base}/{field}"))
            .and_then(Value::as_i64)
        else {
            continue;
        };
        if value < 0 {
            let path = format!("{}.{field}", base.trim_start_matches('/').replace('/', "."));
            causes.push(invalid(
                &path,
                &value.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// The kind's checks.
pub fn check(kind: &str, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => {
            check_replicas(object, "/spec", &mut causes);
            check_selector(object, "/spec", kind, false, &mut causes);
            check_template(object, "/spec", &["Always"], &mut causes);
        }
        "ReplicationController" => {
            check_replicas(object, "/spec", &mut causes);
            check_selector(object, "/spec", kind, true, &mut causes);
            check_template(object, "/spec", &["Always"], &mut causes);
        }
        "Job" => check_job(object, "/spec", &mut causes),
        "CronJob" => {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if name.len() > 52 {
                causes.push(Cause::invalid(
                    "metadata.name",
                    name,
                    "must be no more than 52 characters",
                ));
            }
            match object.pointer("/spec/schedule").and_then(Value::as_str) {
                None | Some("") => causes.push(Cause::required("spec.schedule")),
                Some(schedule) => {
                    if let Err(why) = cron::parse(schedule) {
                        causes.push(Cause::invalid("spec.schedule", schedule, &why));
                    }
                }
            }
            let policy = object
                .pointer("/spec/concurrencyPolicy")
                .and_then(Value::as_str)
                .unwrap_or("Allow");
            const POLICIES: &[&str] = &["Allow", "Forbid", "Replace"];
            if !POLICIES.contains(&policy) {
                causes.push(unsupported("spec.concurrencyPolicy", policy, POLICIES));
            }
            check_template(
                object,
                "/spec/jobTemplate/spec",
                &["OnFailure", "Never"],
                &mut causes,
            );
        }
        _ => {}
    }
    causes
}

fn check_job(object: &Value, base: &str, causes: &mut Vec<Cause>) {
    check_replicas(object, base, causes);
    let manual = object.pointer(&format!("{base}/manualSelector")) == Some(&json!(true));
    if manual || object.pointer(&format!("{base}/selector")).is_some() {
        check_selector(object, base, "Job", false, causes);
    }
    check_template(object, base, &["OnFailure", "Never"], causes);
    let mode = object
        .pointer(&format!("{base}/completionMode"))
        .and_then(Value::as_str)
        .unwrap_or("NonIndexed");
    const MODES: &[&str] = &["NonIndexed", "Indexed"];
    if !MODES.contains(&mode) {
        causes.push(unsupported("spec.completionMode", mode, MODES));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(selector: Value, labels: Value) -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"selector": selector, "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    }

    #[test]
    fn selectors_must_match_template_labels() {
        let ok = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "web"}),
        );
        assert!(check("Deployment", &ok).is_empty());
        let bad = deployment(
            json!({"matchLabels": {"app": "web"}}),
            json!({"app": "db", "x": "y"}),
        );
        let causes = check("Deployment", &bad);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
        assert_eq!(
            causes[0].message,
            "Invalid value: map[string]string{\"app\":\"db\", \"x\":\"y\"}: `selector` does not match template `labels`"
        );
        let none =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert_eq!(
            check("ReplicaSet", &none)[0],
            Cause::required("spec.selector")
        );
    }

    #[test]
    fn jobs_get_upstream_defaults_and_a_generated_selector() {
        let mut job = json!({"metadata": {"name": "pi", "uid": "u1"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}});
        defaults("Job", &mut job);
        prepare_job(&mut job);
        let spec = &job["spec"];
        assert_eq!(
            (
                &spec["completions"],
                &spec["parallelism"],
                &spec["backoffLimit"]
            ),
            (&json!(1), &json!(1), &json!(6))
        );
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(
            spec["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u1"
        );
        assert_eq!(
            spec["template"]["metadata"]["labels"]["batch.kubernetes.io/job-name"],
            "pi"
        );
        assert!(check("Job", &job).is_empty(), "{:?}", check("Job", &job));
        job["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        assert_eq!(
            check("Job", &job)[0].message,
            "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        );
    }
}

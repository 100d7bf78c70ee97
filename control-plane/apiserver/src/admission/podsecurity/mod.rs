//! PodSecurity admission: the Pod Security Standards a namespace's
//! `pod-security.kubernetes.io/<mode>[-version]` labels ask for. `enforce` refuses violating
//! pods, `warn` answers with warnings (so do pod controllers' templates, which are never
//! refused), `audit` is read but there is no audit log to write to. Changing a namespace's
//! enforce level warns about its existing pods that violate the new one. No exemptions are
//! configured, as upstream by default.

pub mod checks;
pub mod policy;

use futures::future::BoxFuture;
use serde_json::Value;

use self::checks::Pod;
use self::policy::{Level, Policy};
use super::resources;
use super::{Attributes, Operation, Plugin, warnings};
use crate::status::{ApiError, ApiResult};

/// At most this many existing pods are checked when a namespace's enforce level changes.
const MAX_PODS_CHECKED: usize = 3000;

/// The PodSecurity plugin.
pub struct PodSecurity;

impl Plugin for PodSecurity {
    fn name(&self) -> &'static str {
        "PodSecurity"
    }

    fn validate<'a>(
        &'a self,
        attributes: &'a Attributes<'a>,
        object: Option<&'a Value>,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let Some(object) = object else {
                return Ok(());
            };
            if attributes.subresource.is_some() || attributes.operation == Operation::Delete {
                return Ok(());
            }
            if attributes.is("", "namespaces") {
                return namespace(attributes, object).await;
            }
            let Some(namespace) = attributes.namespace else {
                return Ok(());
            };
            if attributes.is("", "pods") {
                if attributes.operation == Operation::Update
                    && !significant_update(object, attributes.old)
                {
                    return Ok(());
                }
                return pod(attributes, namespace, object).await;
            }
            if let Some((meta, spec)) = template(attributes, object) {
                return controller(attributes, namespace, meta, spec).await;
            }
            Ok(())
        })
    }
}

async fn policy_of(attributes: &Attributes<'_>, namespace: &str) -> ApiResult<Policy> {
    let labels = resources::namespace_labels(attributes.server, namespace).await?;
    Ok(policy::from_labels(&labels).0)
}

fn pod_view(object: &Value) -> (Value, Value) {
    (
        object.get("metadata").cloned().unwrap_or(Value::Null),
        object.get("spec").cloned().unwrap_or(Value::Null),
    )
}

/// Enforce, then warn, as upstream's `EvaluatePod`.
async fn pod(attributes: &Attributes<'_>, namespace: &str, object: &Value) -> ApiResult<()> {
    let policy = policy_of(attributes, namespace).await?;
    if policy.fully_privileged() {
        return Ok(());
    }
    let (meta, spec) = pod_view(object);
    let view = Pod {
        meta: &meta,
        spec: &spec,
    };
    let violations = checks::evaluate(policy.enforce, &view);
    if !violations.is_empty() {
        return Err(ApiError::forbidden(
            "",
            "pods",
            attributes.name,
            &format!(
                "violates PodSecurity \"{}\": {}",
                policy.enforce,
                checks::describe(&violations)
            ),
        ));
    }
    warn(policy, &view);
    Ok(())
}

fn warn(policy: Policy, pod: &Pod<'_>) {
    let violations = checks::evaluate(policy.warn, pod);
    if !violations.is_empty() {
        warnings::add(format!(
            "would violate PodSecurity \"{}\": {}",
            policy.warn,
            checks::describe(&violations)
        ));
    }
}

/// Upstream re-checks a pod update only when an image changed (nothing else a pod update may
/// change matters to the checks).
fn significant_update(new: &Value, old: Option<&Value>) -> bool {
    let Some(old) = old else {
        return true;
    };
    let images = |pod: &Value, list: &str| -> Vec<Value> {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| c.get("image").cloned().unwrap_or(Value::Null))
                    .collect()
            })
            .unwrap_or_default()
    };
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .any(|list| images(new, list) != images(old, list))
}

/// The pod template of a pod controller (or a CronJob's job's), as upstream's
/// `PodSpecExtractor` finds them.
fn template<'a>(attributes: &Attributes<'_>, object: &'a Value) -> Option<(&'a Value, &'a Value)> {
    let kind = attributes.kind;
    let template = match (kind.group, kind.plural) {
        ("", "podtemplates") => object.get("template")?,
        ("", "replicationcontrollers")
        | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => object.pointer("/spec/template")?,
        ("batch", "cronjobs") => object.pointer("/spec/jobTemplate/spec/template")?,
        _ => return None,
    };
    Some((
        template.get("metadata").unwrap_or(&Value::Null),
        template.get("spec").unwrap_or(&Value::Null),
    ))
}

/// Pod controllers are warned about, never refused: their pods are checked when made.
async fn controller(
    attributes: &Attributes<'_>,
    namespace: &str,
    meta: &Value,
    spec: &Value,
) -> ApiResult<()> {
    let policy = policy_of(attributes, namespace).await?;
    if policy.warn.level == Level::Privileged && policy.audit.level == Level::Privileged {
        return Ok(());
    }
    warn(policy, &Pod { meta, spec });
    Ok(())
}

fn labels_of(object: &Value) -> std::collections::BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Namespaces: invalid labels are refused; a stricter enforce level warns about the pods
/// already there that violate it.
async fn namespace(attributes: &Attributes<'_>, object: &Value) -> ApiResult<()> {
    let (new, causes) = policy::from_labels(&labels_of(object));
    let name = attributes.name;
    let old = attributes.old.map(|o| policy::from_labels(&labels_of(o)));
    let refuse = match &old {
        None => !causes.is_empty(),
        Some((_, old_causes)) => {
            !causes.is_empty() && (old_causes.is_empty() || *old_causes != causes)
        }
    };
    if refuse {
        return Err(ApiError::invalid("", "Namespace", name, causes));
    }
    let Some((old, _)) = old else {
        return Ok(());
    };
    let stricter = new.enforce != old.enforce
        && new.enforce.level != Level::Privileged
        && !(new.enforce.version == old.enforce.version && new.enforce.level <= old.enforce.level);
    if !stricter {
        return Ok(());
    }
    let pods = resources::list_in(attributes.server, "", "pods", name).await?;
    for warning in existing_pod_warnings(name, new, &pods) {
        warnings::add(warning);
    }
    Ok(())
}

/// Upstream's `EvaluatePodsInNamespace`: one warning per distinct set of reasons, naming the
/// first pod (by name) with it and how many others share it.
fn existing_pod_warnings(namespace: &str, policy: Policy, pods: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let checked = &pods[..pods.len().min(MAX_PODS_CHECKED)];
    if checked.len() < pods.len() {
        out.push(format!(
            "new PodSecurity enforce level only checked against the first {} of {} existing pods",
            checked.len(),
            pods.len()
        ));
    }
    let mut by_reason: std::collections::BTreeMap<String, (String, usize)> = Default::default();
    for pod in checked {
        let (meta, spec) = pod_view(pod);
        let violations = checks::evaluate(
            policy.enforce,
            &Pod {
                meta: &meta,
                spec: &spec,
            },
        );
        if violations.is_empty() {
            continue;
        }
        let pod_name = crate::strategy::meta_str(pod, "name")
            .unwrap_or("")
            .to_string();
        let entry = by_reason
            .entry(checks::reasons(&violations))
            .or_insert_with(|| (pod_name.clone(), 0));
        if pod_name < entry.0 {
            entry.0 = pod_name;
        }
        entry.1 += 1;
    }
    if by_reason.is_empty() {
        return out;
    }
    out.push(format!(
        "existing pods in namespace \"{namespace}\" violate the new PodSecurity enforce level \"{}\"",
        policy.enforce
    ));
    let mut decorated: Vec<String> = by_reason
        .into_iter()
        .map(|(reason, (first, count))| match count {
            1 => format!("{first}: {reason}"),
            2 => format!("{first} (and 1 other pod): {reason}"),
            n => format!("{first} (and {} other pods): {reason}", n - 1),
        })
        .collect();
    decorated.sort();
    out.extend(decorated);
    out
}

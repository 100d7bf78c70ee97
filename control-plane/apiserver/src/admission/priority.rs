//! Priority admission: a pod's `priority` and `preemptionPolicy` come from its
//! `priorityClassName`, else from the cluster's `globalDefault` class, else 0; users cannot set
//! the number themselves. PriorityClasses are checked as kube-apiserver does: only the two
//! system classes may have the `system-` prefix or a value above 1e9, at most one class is the
//! global default, and the system classes (made at start) cannot be deleted.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::forbid::forbidden;
use super::{Attributes, Operation, Plugin};
use crate::server::{ApiServer, RequestUser};
use crate::status::{ApiError, ApiResult, Cause};
use crate::{rest, strategy};

/// The highest value a user-defined class may have.
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;
/// The prefix reserved to the system classes.
pub const SYSTEM_PREFIX: &str = "system-";
/// The system classes: name, value, description.
pub const SYSTEM_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];
const GROUP: &str = "scheduling.k8s.io";
const DEFAULT_POLICY: &str = "PreemptLowerPriority";

/// The Priority plugin.
pub struct Priority;

impl Plugin for Priority {
    fn name(&self) -> &'static str {
        "Priority"
    }

    fn mutate<'a>(
        &'a self,
        attributes: &'a Attributes<'a>,
        object: Option<&'a mut Value>,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let Some(object) = object else {
                return Ok(());
            };
            if attributes.is("", "pods") {
                return match attributes.operation {
                    Operation::Create => admit_new_pod(attributes, object).await,
                    Operation::Update => {
                        keep_priority(object, attributes.old);
                        Ok(())
                    }
                    Operation::Delete => Ok(()),
                };
            }
            if attributes.is(GROUP, "priorityclasses") && object.get("preemptionPolicy").is_none() {
                object["preemptionPolicy"] = json!(DEFAULT_POLICY);
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
            if !attributes.is(GROUP, "priorityclasses") {
                return Ok(());
            }
            match (attributes.operation, object) {
                (Operation::Delete, _) => {
                    if SYSTEM_CLASSES.iter().any(|(n, ..)| *n == attributes.name) {
                        return Err(ApiError::forbidden(
                            GROUP,
                            "priorityclasses",
                            attributes.name,
                            "this is a system priority class and cannot be deleted",
                        ));
                    }
                    Ok(())
                }
                (_, Some(class)) => validate_class(attributes, class).await,
                (_, None) => Ok(()),
            }
        })
    }
}

/// On update the priority set at create stays (the spec may not change it anyway).
fn keep_priority(pod: &mut Value, old: Option<&Value>) {
    let Some(old_spec) = old.and_then(|o| o.get("spec")) else {
        return;
    };
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for field in ["priority", "preemptionPolicy"] {
        if spec.get(field).is_none_or(Value::is_null) {
            if let Some(kept) = old_spec.get(field) {
                spec.insert(field.into(), kept.clone());
            }
        }
    }
}

async fn admit_new_pod(attributes: &Attributes<'_>, pod: &mut Value) -> ApiResult<()> {
    let named = json!({"metadata": pod.get("metadata").cloned().unwrap_or(Value::Null)});
    let refuse = |why: &str| forbidden(attributes, Some(&named), why);
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let class_name = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let (priority, policy) = if class_name.is_empty() {
        match default_class(attributes.server).await? {
            Some(class) => {
                let name = strategy::meta_str(&class, "name").unwrap_or("").to_string();
                spec.insert("priorityClassName".into(), json!(name));
                (value_of(&class), policy_of(&class))
            }
            None => (0, Some(DEFAULT_POLICY.to_string())),
        }
    } else {
        match get_class(attributes.server, &class_name).await? {
            Some(class) => (value_of(&class), policy_of(&class)),
            None => {
                return Err(refuse(&format!(
                    "no PriorityClass with name {class_name} was found"
                )));
            }
        }
    };
    if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
        if given != priority {
            return Err(refuse(&format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
            )));
        }
    }
    spec.insert("priority".into(), json!(priority));
    if let Some(policy) = policy {
        if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str) {
            if given != policy {
                return Err(refuse(&format!(
                    "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
                )));
            }
        }
        spec.insert("preemptionPolicy".into(), json!(policy));
    }
    Ok(())
}

fn value_of(class: &Value) -> i64 {
    class.get("value").and_then(Value::as_i64).unwrap_or(0)
}

fn policy_of(class: &Value) -> Option<String> {
    class
        .get("preemptionPolicy")
        .and_then(Value::as_str)
        .map(str::to_string)
}

async fn get_class(server: &ApiServer, name: &str) -> ApiResult<Option<Value>> {
    let Some(kind) = server.kinds.find(GROUP, "v1", "priorityclasses") else {
        return Ok(None);
    };
    match rest::get_object(server, kind, None, name).await {
        Ok((class, _)) => Ok(Some(class)),
        Err(e) if e.reason == "NotFound" => Ok(None),
        Err(e) => Err(e),
    }
}

/// The `globalDefault` class; with several (two API servers raced), the lowest, as upstream.
async fn default_class(server: &ApiServer) -> ApiResult<Option<Value>> {
    let Some(kind) = server.kinds.find(GROUP, "v1", "priorityclasses") else {
        return Ok(None);
    };
    let listed = server
        .store
        .list(&kind.prefix(), capstan_store::ListOptions::default())
        .await
        .map_err(|e| rest::store_error(e, kind, ""))?;
    let mut best: Option<Value> = None;
    for kv in &listed.items {
        let class = rest::decode(kv)?;
        if class.get("globalDefault").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        if best.as_ref().is_none_or(|b| value_of(&class) < value_of(b)) {
            best = Some(class);
        }
    }
    Ok(best)
}

async fn validate_class(attributes: &Attributes<'_>, class: &Value) -> ApiResult<()> {
    let name = strategy::meta_str(class, "name").unwrap_or("");
    let value = value_of(class);
    let global_default = class.get("globalDefault").and_then(Value::as_bool) == Some(true);
    let mut causes = Vec::new();
    if name.starts_with(SYSTEM_PREFIX) {
        let known = match SYSTEM_CLASSES.iter().find(|(n, ..)| *n == name) {
            None => Err(format!("{name} is not a known system priority class")),
            Some((n, v, _)) if *v != value => {
                Err(format!("value of {n} PriorityClass must be {v}"))
            }
            Some((n, ..)) if global_default => {
                Err(format!("globalDefault of {n} PriorityClass must be false"))
            }
            Some(_) => Ok(()),
        };
        if let Err(why) = known {
            causes.push(forbidden_cause(
                "metadata.name",
                &format!(
                    "priority class names with '{SYSTEM_PREFIX}' prefix are reserved for system use only. error: {why}"
                ),
            ));
        }
    } else if value > HIGHEST_USER_DEFINABLE_PRIORITY {
        causes.push(forbidden_cause(
            "value",
            &format!(
                "maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"
            ),
        ));
    }
    if let Some(policy) = class.get("preemptionPolicy").and_then(Value::as_str) {
        if !matches!(policy, "Never" | "PreemptLowerPriority") {
            causes.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "Unsupported value: {}: supported values: \"Never\", \"PreemptLowerPriority\"",
                    json!(policy)
                ),
                field: "preemptionPolicy".into(),
            });
        }
    }
    if let Some(old) = attributes
        .old
        .filter(|_| attributes.operation == Operation::Update)
    {
        if value_of(old) != value {
            causes.push(forbidden_cause("value", "may not be changed in an update."));
        }
        if policy_of(old) != policy_of(class) {
            causes.push(Cause::immutable("preemptionPolicy"));
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(GROUP, "PriorityClass", name, causes));
    }
    if global_default {
        if let Some(existing) = default_class(attributes.server).await? {
            let existing_name = strategy::meta_str(&existing, "name").unwrap_or("");
            if attributes.operation == Operation::Create || existing_name != name {
                return Err(forbidden(
                    attributes,
                    Some(class),
                    &format!(
                        "PriorityClass {existing_name} is already marked as default. Only one default can exist"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn forbidden_cause(field: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueForbidden".into(),
        message: format!("Forbidden: {detail}"),
        field: field.into(),
    }
}

/// Makes the system classes that are missing, as kube-apiserver's post-start hook does.
pub async fn ensure_system_classes(server: &ApiServer) -> ApiResult<()> {
    let Some(kind) = server.kinds.find(GROUP, "v1", "priorityclasses").cloned() else {
        return Ok(());
    };
    let admin = RequestUser::admin();
    for (name, value, description) in SYSTEM_CLASSES {
        if get_class(server, name).await?.is_some() {
            continue;
        }
        let class = json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "description": description,
        });
        match rest::create_object(server, &kind, None, class, &admin, false).await {
            Ok(_) => tracing::info!(class = name, "created system priority class"),
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

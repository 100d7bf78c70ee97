//! Pods' `binding` (the scheduler's write of `spec.nodeName`), `eviction` (a delete that
//! honours PodDisruptionBudgets) and `ephemeralcontainers` (the only way to change
//! `spec.ephemeralContainers`), as kube-apiserver's pod registry serves them.

use capstan_store::ListOptions;
use http::{Method, Response};
use serde_json::{Value, json};

use super::{Change, modify, pinned, selector_string, success};
use crate::admission::Operation;
use crate::body::{self, ApiBody};
use crate::patch::{self, PatchType};
use crate::rest::{self, Call};
use crate::route::Target;
use crate::selectors::LabelSelector;
use crate::status::{ApiError, ApiResult, Cause};
use crate::strategy::{self, meta_str};

fn decoded(call: &Call<'_>) -> ApiResult<Value> {
    body::decode_object(call.content_type.as_deref(), &call.body)
}

fn check_body_name(object: &Value, name: &str, what: &str) -> ApiResult<()> {
    match meta_str(object, "name") {
        Some(body_name) if body_name != name => Err(ApiError::bad_request(format!(
            "name in URL does not match name in {what} object"
        ))),
        _ => Ok(()),
    }
}

/// POST pods/binding: binds an unbound pod to a node.
pub async fn binding(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let name = target.name.as_deref().unwrap_or("");
    let binding = decoded(call)?;
    check_body_name(&binding, name, "Binding")?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let mut causes = Vec::new();
    match binding.pointer("/target/kind").and_then(Value::as_str) {
        None | Some("" | "Node") => {}
        Some(other) => causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: {}: supported values: \"Node\", \"<empty>\"",
                json!(other)
            ),
            field: "target.kind".into(),
        }),
    }
    if node.is_empty() {
        causes.push(Cause::required("target.name"));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "Binding", name, causes));
    }
    let annotations = binding
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned();
    let uid = binding
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty());
    let conflict = |why: String| ApiError::conflict("", "pods/binding", name, &why);
    let how = Change {
        subresource: "binding",
        operation: Operation::Create,
        pinned: pinned(&binding)?,
    };
    modify(call, target, how, |pod| {
        if let Some(uid) = uid {
            let current = meta_str(pod, "uid").unwrap_or("");
            if uid != current {
                return Err(conflict(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {current}"
                )));
            }
        }
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(conflict(format!(
                "pod {name} is being deleted, cannot be assigned to a host"
            )));
        }
        let bound = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !bound.is_empty() {
            return Err(conflict(format!(
                "pod {name} is already assigned to node {}",
                json!(bound)
            )));
        }
        let mut new = pod.clone();
        new["spec"]["nodeName"] = json!(node);
        if let Some(extra) = &annotations {
            let meta = strategy::metadata_mut(&mut new);
            let slot = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(map) = slot.as_object_mut() {
                map.extend(extra.clone());
            }
        }
        set_scheduled(&mut new);
        Ok(new)
    })
    .await?;
    Ok(body::object_response(201, &success(201), call.yaml))
}

/// Sets the pod's `PodScheduled` condition true.
fn set_scheduled(pod: &mut Value) {
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    let condition = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": strategy::now()});
    let conditions = &mut pod["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    if let Some(list) = conditions.as_array_mut() {
        match list
            .iter_mut()
            .find(|c| c.get("type") == Some(&json!("PodScheduled")))
        {
            Some(existing) if existing.get("status") == Some(&json!("True")) => {}
            Some(existing) => *existing = condition,
            None => list.push(condition),
        }
    }
}

/// POST pods/eviction: deletes the pod unless a PodDisruptionBudget forbids it (429).
pub async fn eviction(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let name = target.name.as_deref().unwrap_or("");
    let namespace = target.namespace.as_deref().unwrap_or("");
    let eviction = decoded(call)?;
    check_body_name(&eviction, name, "Eviction")?;
    let (pod, _) = rest::get_object(call.server, target.kind, Some(namespace), name).await?;
    crate::admission::node_restriction::check_eviction(call.user, name, &pod)?;
    let finished = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed" | "Pending")
    );
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
    let mut options = eviction
        .get("deleteOptions")
        .cloned()
        .unwrap_or_else(|| json!({}));
    // Terminal, pending and terminating pods bypass budgets (`canIgnorePDB`).
    if !finished && !deleting && check_budgets(call, namespace, &pod).await? == Taken::Unhealthy {
        // The unhealthy pod was let go without a disruption: the delete must hit the pod as
        // it was judged, so a pod that became Ready meanwhile is judged again.
        pin_resource_version(&mut options, &pod);
    }
    delete_pod(call, target, options).await?;
    Ok(body::object_response(201, &success(201), call.yaml))
}

/// Deletes the evicted pod through the ordinary DELETE, with the eviction's options.
async fn delete_pod(call: &Call<'_>, target: &Target<'_>, options: Value) -> ApiResult<()> {
    let delete = Call {
        server: call.server,
        user: call.user,
        query: call
            .query
            .iter()
            .filter(|(k, _)| k.as_str() == "dryRun")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        content_type: Some("application/json".into()),
        user_agent: call.user_agent.clone(),
        yaml: false,
        table: false,
        body: options.to_string().into(),
    };
    let pod_target = Target {
        kind: target.kind,
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        subresource: None,
    };
    crate::delete::object(&delete, &pod_target)
        .await
        .map(|_| ())
}

/// How an eviction passed the budgets.
#[derive(Debug, PartialEq, Eq)]
enum Taken {
    /// No budget covers the pod, or one disruption was taken from it.
    Disruption,
    /// The pod is not Ready and its budget lets unhealthy pods go without a disruption.
    Unhealthy,
}

/// Sets `preconditions.resourceVersion` to the pod's unless the client set one.
fn pin_resource_version(options: &mut Value, pod: &Value) {
    let Some(revision) = meta_str(pod, "resourceVersion") else {
        return;
    };
    if !options.is_object() {
        *options = json!({});
    }
    let preconditions = &mut options["preconditions"];
    if !preconditions.is_object() {
        *preconditions = json!({});
    }
    let unset = preconditions
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if unset {
        preconditions["resourceVersion"] = json!(revision);
    }
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Whether a budget lets the not-Ready pod go without taking a disruption: always under
/// `unhealthyPodEvictionPolicy: AlwaysAllow`, otherwise (`IfHealthyBudget`, the default)
/// while the budget has the healthy pods it wants.
fn lets_unhealthy_go(pdb: &Value) -> bool {
    if pdb.pointer("/spec/unhealthyPodEvictionPolicy") == Some(&json!("AlwaysAllow")) {
        return true;
    }
    let status_of = |field: &str| {
        pdb.pointer(&format!("/status/{field}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let desired = status_of("desiredHealthy");
    status_of("currentHealthy") >= desired && desired > 0
}

/// Upstream's `MaxDisruptedPodSize`: more unconfirmed evictions than this are refused.
const MAX_DISRUPTED_PODS: usize = 2000;

/// Finds the budget covering `pod` and takes one disruption from it, lets an unhealthy pod
/// go as its policy says, or refuses.
async fn check_budgets(call: &Call<'_>, namespace: &str, pod: &Value) -> ApiResult<Taken> {
    let Some(pdbs) = call
        .server
        .kinds
        .find("policy", "v1", "poddisruptionbudgets")
    else {
        return Ok(Taken::Disruption);
    };
    let listed = call
        .server
        .store
        .list(
            &pdbs.namespace_prefix(Some(namespace)),
            ListOptions::default(),
        )
        .await
        .map_err(|e| rest::store_error(e, pdbs, ""))?;
    let mut matching = Vec::new();
    for kv in &listed.items {
        let pdb = rest::decode(kv)?;
        // A budget without a selector selects nothing; an empty one selects every pod.
        let Some(selector) = pdb.pointer("/spec/selector") else {
            continue;
        };
        let selector = LabelSelector::parse(&selector_string(selector))?;
        if selector.matches(pod) {
            matching.push(pdb);
        }
    }
    let pdb = match matching.len() {
        0 => return Ok(Taken::Disruption),
        1 => matching.remove(0),
        _ => {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
    };
    let pdb_name = meta_str(&pdb, "name").unwrap_or("").to_string();
    if !pod_ready(pod) && lets_unhealthy_go(&pdb) {
        return Ok(Taken::Unhealthy);
    }
    let status_of = |field: &str| {
        pdb.pointer(&format!("/status/{field}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let generation = pdb
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if status_of("observedGeneration") < generation {
        return Err(too_many_requests(&format!(
            "The disruption budget {pdb_name} is still being processed by the server."
        )));
    }
    let allowed = status_of("disruptionsAllowed");
    if allowed < 0 {
        return Err(ApiError::forbidden(
            "policy",
            "poddisruptionbudget",
            &pdb_name,
            "pdb disruptions allowed is negative",
        ));
    }
    let disrupted = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, serde_json::Map::len);
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(ApiError::forbidden(
            "policy",
            "poddisruptionbudget",
            &pdb_name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(too_many_requests(&format!(
            "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
            status_of("desiredHealthy"),
            status_of("currentHealthy")
        )));
    }
    if call.dry_run() {
        return Ok(Taken::Disruption);
    }
    let pod_name = meta_str(pod, "name").unwrap_or("").to_string();
    let pdb_target = Target {
        kind: pdbs,
        namespace: Some(namespace.to_string()),
        name: Some(pdb_name.clone()),
        subresource: Some("status".into()),
    };
    let how = Change {
        subresource: "status",
        operation: Operation::Update,
        pinned: meta_str(&pdb, "resourceVersion")
            .map(rest::parse_revision)
            .transpose()?,
    };
    modify(call, &pdb_target, how, |current| {
        let mut new = current.clone();
        let left = current
            .pointer("/status/disruptionsAllowed")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        new["status"]["disruptionsAllowed"] = json!(left - 1);
        let disrupted = &mut new["status"]["disruptedPods"];
        if !disrupted.is_object() {
            *disrupted = json!({});
        }
        disrupted[pod_name.as_str()] = json!(strategy::now());
        Ok(new)
    })
    .await
    // Another eviction took a disruption meanwhile: the client retries, as upstream's.
    .map_err(|e| {
        if e.code == 409 {
            too_many_requests(&format!(
                "The disruption budget {pdb_name} was changed while checking it; retry"
            ))
        } else {
            e
        }
    })?;
    Ok(Taken::Disruption)
}

/// The 429 an eviction a budget forbids answers with.
fn too_many_requests(cause: &str) -> ApiError {
    let mut error = ApiError::new(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    );
    error.details.causes.push(Cause {
        reason: "DisruptionBudget".into(),
        message: cause.into(),
        field: String::new(),
    });
    error
}

/// GET, PUT or PATCH pods/ephemeralcontainers: only `spec.ephemeralContainers` changes.
pub async fn ephemeral_containers(
    call: &Call<'_>,
    target: &Target<'_>,
    method: &Method,
) -> ApiResult<Response<ApiBody>> {
    let kind = target.kind;
    let name = target.name.as_deref().unwrap_or("");
    if *method == Method::GET {
        let (pod, _) =
            rest::get_object(call.server, kind, target.namespace.as_deref(), name).await?;
        return Ok(call.object(200, kind, &pod));
    }
    let requested = if *method == Method::PUT {
        Some(decoded(call)?)
    } else {
        None
    };
    let patch_type = if *method == Method::PATCH {
        let content_type = call.content_type.as_deref().unwrap_or("");
        Some(
            PatchType::from_content_type(content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type))?,
        )
    } else {
        None
    };
    let pin = match &requested {
        Some(pod) => pinned(pod)?,
        None => None,
    };
    let how = Change {
        subresource: "ephemeralcontainers",
        operation: Operation::Update,
        pinned: pin,
    };
    let stored = modify(call, target, how, |current| {
        let new_pod = match (&requested, patch_type) {
            (Some(pod), _) => pod.clone(),
            (None, Some(patch_type)) => patch::apply(current, patch_type, &call.body)?,
            (None, None) => return Err(ApiError::method_not_allowed(method.as_str())),
        };
        let wanted = new_pod
            .pointer("/spec/ephemeralContainers")
            .cloned()
            .unwrap_or(Value::Null);
        let causes = check_ephemeral(current, &wanted);
        if !causes.is_empty() {
            return Err(ApiError::invalid("", "Pod", name, causes));
        }
        let mut new = current.clone();
        match wanted {
            Value::Null => {
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("ephemeralContainers");
                }
            }
            list => new["spec"]["ephemeralContainers"] = list,
        }
        Ok(new)
    })
    .await?;
    Ok(call.object(200, kind, &stored))
}

/// What upstream's ValidatePodEphemeralContainersUpdate checks that matters most: names and
/// images present and unique across the pod, and existing ones neither removed nor changed.
fn check_ephemeral(pod: &Value, wanted: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let path = "spec.ephemeralContainers";
    let empty = Vec::new();
    let list = match wanted {
        Value::Null => &empty,
        Value::Array(list) => list,
        _ => {
            causes.push(Cause {
                reason: "FieldValueInvalid".into(),
                message: "Invalid value: must be a list".into(),
                field: path.into(),
            });
            return causes;
        }
    };
    let mut names: Vec<String> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    for (i, container) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let container_name = container.get("name").and_then(Value::as_str).unwrap_or("");
        if container_name.is_empty() {
            causes.push(Cause::required(&format!("{at}.name")));
        } else if names.iter().any(|n| n == container_name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate".into(),
                message: format!("Duplicate value: {}", json!(container_name)),
                field: format!("{at}.name"),
            });
        } else {
            names.push(container_name.to_string());
        }
        if container
            .get("image")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            causes.push(Cause::required(&format!("{at}.image")));
        }
    }
    let existing = pod
        .pointer("/spec/ephemeralContainers")
        .and_then(Value::as_array);
    for old in existing.into_iter().flatten() {
        let old_name = old.get("name").and_then(Value::as_str).unwrap_or("");
        match list
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(old_name))
        {
            None => causes.push(Cause {
                reason: "FieldValueForbidden".into(),
                message: format!(
                    "Forbidden: existing ephemeral containers {} may not be removed",
                    json!(old_name)
                ),
                field: path.into(),
            }),
            Some(new) if new != old => causes.push(Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: pod updates may not change fields other than `spec.ephemeralContainers`; existing ephemeral containers may not be changed".into(),
                field: path.into(),
            }),
            Some(_) => {}
        }
    }
    causes
}

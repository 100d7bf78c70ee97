//! DELETE of one object or a collection: preconditions, finalizers (deletionTimestamp set
//! instead of removal), the garbage collector's `orphan` / `foregroundDeletion` finalizers
//! from the propagation policy, graceful deletion of pods on nodes, and namespaces, which
//! terminate.

use http::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::body::{self, ApiBody};
use crate::kinds::Kind;
use crate::rest::{self, Call};
use crate::route::Target;
use crate::status::{ApiError, ApiResult, Cause};
use crate::strategy::{self, meta_str};
use crate::{admission, list, namespaces};

/// The parts of `DeleteOptions` honoured.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    grace_period_seconds: Option<i64>,
    preconditions: Option<Preconditions>,
    propagation_policy: Option<String>,
    orphan_dependents: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Preconditions {
    uid: Option<String>,
    resource_version: Option<String>,
}

fn options(call: &Call<'_>) -> ApiResult<DeleteOptions> {
    let mut options: DeleteOptions = if call.body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        serde_json::from_slice(&call.body)
            .map_err(|e| ApiError::bad_request(format!("error decoding DeleteOptions: {e}")))?
    };
    if let Some(grace) = call.param("gracePeriodSeconds") {
        let grace = grace
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {grace:?}")))?;
        options.grace_period_seconds = Some(grace);
    }
    if let Some(policy) = call.param("propagationPolicy") {
        options.propagation_policy = Some(policy.to_string());
    }
    if let Some(orphan) = call.param("orphanDependents") {
        let orphan = orphan
            .parse::<bool>()
            .map_err(|_| ApiError::bad_request(format!("invalid orphanDependents: {orphan:?}")))?;
        options.orphan_dependents = Some(orphan);
    }
    validate(&options)?;
    Ok(options)
}

/// Upstream's ValidateDeleteOptions for the propagation fields.
fn validate(options: &DeleteOptions) -> ApiResult<()> {
    let mut causes = Vec::new();
    if let Some(policy) = options.propagation_policy.as_deref() {
        if options.orphan_dependents.is_some() {
            causes.push(Cause::invalid(
                "propagationPolicy",
                policy,
                "orphanDependents and deletionPropagation cannot be both set",
            ));
        }
        if !matches!(policy, "Foreground" | "Background" | "Orphan") {
            causes.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "Unsupported value: {}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\"",
                    json!(policy)
                ),
                field: "propagationPolicy".into(),
            });
        }
    }
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        "meta.k8s.io",
        "DeleteOptions",
        "",
        causes,
    ))
}

/// The kind's default when a delete names no policy (upstream's DefaultGarbageCollectionPolicy
/// per registry strategy, v1.33): ReplicationControllers and batch/v1 Jobs orphan for
/// backwards compatibility, events take no garbage-collection finalizers, the rest cascade in
/// the background.
fn default_orphans(kind: &Kind) -> Option<bool> {
    match (kind.group, kind.kind) {
        ("", "Event") | ("events.k8s.io", "Event") => None,
        ("", "ReplicationController") | ("batch", "Job") => Some(true),
        _ => Some(false),
    }
}

/// The object's finalizers after a delete with `options`, as upstream's
/// deletionFinalizersForGarbageCollection: `orphan` or `foregroundDeletion` from the options,
/// else from the finalizers already there, else the kind's default.
fn gc_finalizers(kind: &Kind, current: &Value, options: &DeleteOptions) -> Vec<String> {
    let existing: Vec<String> = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let Some(default_orphan) = default_orphans(kind) else {
        return existing;
    };
    let has = |f: &str| existing.iter().any(|x| x == f);
    let explicit = match (
        options.orphan_dependents,
        options.propagation_policy.as_deref(),
    ) {
        (Some(true), _) => Some((true, false)),
        (Some(false), _) => Some((false, false)),
        (None, Some("Orphan")) => Some((true, false)),
        (None, Some("Foreground")) => Some((false, true)),
        (None, Some(_)) => Some((false, false)),
        (None, None) => None,
    };
    let (orphan, foreground) = explicit.unwrap_or_else(|| {
        if has(ORPHAN) {
            (true, false)
        } else if has(FOREGROUND) {
            (false, true)
        } else {
            (default_orphan, false)
        }
    });
    let mut finalizers: Vec<String> = existing
        .iter()
        .filter(|f| *f != ORPHAN && *f != FOREGROUND)
        .cloned()
        .collect();
    if orphan {
        finalizers.push(ORPHAN.into());
    }
    if foreground {
        finalizers.push(FOREGROUND.into());
    }
    if finalizers.len() == existing.len() && finalizers.iter().all(|f| has(f)) {
        return existing;
    }
    finalizers
}

/// The finalizer of orphaning deletion.
const ORPHAN: &str = "orphan";
/// The finalizer of foreground deletion.
const FOREGROUND: &str = "foregroundDeletion";

/// DELETE of one object.
pub async fn object(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let options = options(call)?;
    let name = target.name.as_deref().unwrap_or("");
    let (code, result) = delete_one(
        call,
        target.kind,
        target.namespace.as_deref(),
        name,
        &options,
    )
    .await?;
    Ok(body::object_response(code, &result, call.yaml))
}

async fn delete_one(
    call: &Call<'_>,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
    options: &DeleteOptions,
) -> ApiResult<(u16, Value)> {
    let server = call.server;
    let (current, revision) = rest::get_object(server, kind, namespace, name).await?;
    if let Some(pre) = &options.preconditions {
        check_preconditions(kind, name, pre, &current, revision)?;
    }
    let already_deleting = current.pointer("/metadata/deletionTimestamp").is_some();
    let finalizers = gc_finalizers(kind, &current, options);
    let has_finalizers = !finalizers.is_empty();
    let grace = graceful_seconds(kind, &current, options);
    let attributes = admission::Attributes {
        server,
        kind,
        namespace,
        name,
        subresource: None,
        operation: admission::Operation::Delete,
        user: call.user,
        old: Some(&current),
        dry_run: call.dry_run(),
    };
    admission::validate(&server.admission, &attributes, None).await?;
    if kind.kind == "Namespace" && kind.group.is_empty() {
        return namespaces::terminate(
            server,
            kind,
            current,
            revision,
            call.dry_run(),
            Some(finalizers),
        )
        .await;
    }
    let finalizers_changed = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
        != finalizers.len()
        || !finalizers.iter().all(|f| {
            current
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|list| list.iter().any(|x| x == f.as_str()))
        });
    let accepted = if options.orphan_dependents == Some(false) {
        202
    } else {
        200
    };
    if already_deleting && (has_finalizers || grace > 0) && !finalizers_changed {
        // Already on its way out: kube answers with the object as it is.
        return Ok((accepted, current));
    }
    if has_finalizers || grace > 0 || (already_deleting && finalizers_changed) {
        let mut marked = current.clone();
        let meta = strategy::metadata_mut(&mut marked);
        if has_finalizers {
            meta.insert("finalizers".into(), json!(finalizers));
        } else {
            meta.remove("finalizers");
        }
        if !already_deleting {
            meta.insert("deletionTimestamp".into(), json!(strategy::now_plus(grace)));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        if !has_finalizers && grace == 0 {
            // Its last finalizer went with this delete: it goes now.
            if !call.dry_run() {
                let key = kind.key(namespace, name);
                server
                    .store
                    .delete(&key, Some(revision))
                    .await
                    .map_err(|e| rest::store_error(e, kind, name))?;
                crate::strategies::after_delete(server, kind, &current).await;
            }
            return Ok((200, marked));
        }
        if call.dry_run() {
            return Ok((200, marked));
        }
        let key = kind.key(namespace, name);
        let stored = server
            .store
            .update(&key, rest::encode(&marked), revision)
            .await
            .map_err(|e| rest::store_error(e, kind, name))?;
        return Ok((accepted, rest::decode(&stored)?));
    }
    if !call.dry_run() {
        let key = kind.key(namespace, name);
        server
            .store
            .delete(&key, Some(revision))
            .await
            .map_err(|e| rest::store_error(e, kind, name))?;
        tracing::debug!(%key, "deleted");
        crate::strategies::after_delete(server, kind, &current).await;
    }
    if kind.delete_returns_object {
        return Ok((200, current));
    }
    Ok((200, success(kind, name, meta_str(&current, "uid"))))
}

/// The Status a delete answers with for kinds that do not return the object; `details.kind`
/// holds the resource, as upstream.
fn success(kind: &Kind, name: &str, uid: Option<&str>) -> Value {
    let mut details = json!({"name": name, "kind": kind.plural});
    if !kind.group.is_empty() {
        details["group"] = json!(kind.group);
    }
    if let Some(uid) = uid {
        details["uid"] = json!(uid);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

fn check_preconditions(
    kind: &Kind,
    name: &str,
    pre: &Preconditions,
    current: &Value,
    revision: i64,
) -> ApiResult<()> {
    let uid = meta_str(current, "uid").unwrap_or("");
    if let Some(wanted) = pre.uid.as_deref().filter(|u| *u != uid) {
        return Err(ApiError::conflict(
            kind.group,
            kind.plural,
            name,
            &format!(
                "Precondition failed: UID in precondition: {wanted}, UID in object meta: {uid}"
            ),
        ));
    }
    if let Some(wanted) = pre
        .resource_version
        .as_deref()
        .filter(|rv| *rv != revision.to_string())
    {
        return Err(ApiError::conflict(
            kind.group,
            kind.plural,
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {wanted}, ResourceVersion in object meta: {revision}"
            ),
        ));
    }
    Ok(())
}

/// The grace period of a delete: only pods bound to a node that have not finished get one
/// (kube deletes unscheduled and finished pods at once), from the options or the pod spec.
fn graceful_seconds(kind: &Kind, current: &Value, options: &DeleteOptions) -> i64 {
    if kind.kind != "Pod" || !kind.group.is_empty() {
        return 0;
    }
    let bound = current
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        current.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return 0;
    }
    options
        .grace_period_seconds
        .or_else(|| {
            current
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}

/// DELETE of a collection: every object the selectors pick, answered with the list of them.
pub async fn collection(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let options = options(call)?;
    let kind = target.kind;
    let (items, revision) = list::read_all(call, target).await?;
    let mut deleted = Vec::new();
    for item in items {
        let Some(name) = meta_str(&item, "name").map(str::to_string) else {
            continue;
        };
        let namespace = meta_str(&item, "namespace").map(str::to_string);
        match delete_one(call, kind, namespace.as_deref(), &name, &options).await {
            Ok((_, object)) => deleted.push(object),
            // Gone meanwhile: what was asked for happened.
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({
        "kind": kind.list_kind(),
        "apiVersion": kind.api_version(),
        "metadata": {"resourceVersion": revision.to_string()},
        "items": deleted,
    });
    Ok(body::object_response(200, &list, call.yaml))
}

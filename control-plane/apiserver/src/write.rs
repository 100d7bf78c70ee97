//! The writing verbs: create (POST), update (PUT) and patch (PATCH), of the main resource or its
//! status subresource, with optimistic concurrency on the store revision.

use http::Response;
use serde_json::Value;

use crate::admission;
use crate::apply;
use crate::body::{self, ApiBody};
use crate::kinds::Kind;
use crate::patch::{self, PatchType};
use crate::patch_validation;
use crate::protobuf::strict;
use crate::rest::{self, Call};
use crate::route::Target;
use crate::server::{ApiServer, RequestUser};
use crate::status::{ApiError, ApiResult};
use crate::strategy::{self, meta_str};

/// How many times a patch is re-applied when the object changed under it.
const PATCH_ATTEMPTS: usize = 5;

/// POST: creates the object in the body.
pub async fn create(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let kind = target.kind;
    let mut object = body::decode_object(call.content_type.as_deref(), &call.body)?;
    strategy::check_type(kind, &mut object)?;
    strict::check(kind, &object, call.param("fieldValidation"))?;
    let warnings = crate::crd::warnings(kind, &object, call.param("fieldValidation"));
    if let (Some(url), Some(body)) = (target.namespace.as_deref(), meta_str(&object, "namespace")) {
        if !body.is_empty() && body != url {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    let manager = apply::options::manager(call, apply::options::Options::Create)?;
    let created = create_object_as(
        call.server,
        kind,
        target.namespace.as_deref(),
        object,
        call.user,
        call.dry_run(),
        Some(&manager),
    )
    .await?;
    Ok(crate::crd::with_warnings(
        call.object(201, kind, &created),
        &warnings,
    ))
}

/// Creates `object` of `kind` in `namespace` for `user`: mutating admission, the create
/// strategy, validation, validating admission, then the store (unless `dry_run`). Returns the
/// object as stored.
pub async fn create_object(
    server: &ApiServer,
    kind: &Kind,
    namespace: Option<&str>,
    object: Value,
    user: &RequestUser,
    dry_run: bool,
) -> ApiResult<Value> {
    create_object_as(server, kind, namespace, object, user, dry_run, None).await
}

/// [`create_object`], recording `manager` (when given) in the managed fields.
pub async fn create_object_as(
    server: &ApiServer,
    kind: &Kind,
    namespace: Option<&str>,
    mut object: Value,
    user: &RequestUser,
    dry_run: bool,
    manager: Option<&str>,
) -> ApiResult<Value> {
    let requested_name = meta_str(&object, "name").unwrap_or("").to_string();
    let attributes = admission::Attributes {
        server,
        kind,
        namespace,
        name: &requested_name,
        subresource: None,
        operation: admission::Operation::Create,
        user,
        old: None,
        dry_run,
    };
    admission::mutate(&server.admission, &attributes, Some(&mut object)).await?;
    strategy::prepare_create(kind, &mut object, namespace);
    crate::strategies::prepare_create(kind, &mut object, user);
    if let Some(manager) = manager {
        apply::record_update(kind, None, &mut object, manager, None);
    }
    let name = meta_str(&object, "name").unwrap_or("").to_string();
    strategy::validate(kind, &object)?;
    crate::crd::prepare(kind, &mut object, None)?;
    let attributes = admission::Attributes {
        name: &name,
        ..attributes
    };
    admission::validate(&server.admission, &attributes, Some(&object)).await?;
    let allocated = crate::strategies::allocate(server, kind, &mut object, None).await?;
    if dry_run {
        crate::strategies::release(server, allocated).await;
        crate::crd::read(kind, &mut object);
        return Ok(object);
    }
    let key = kind.key(namespace, &name);
    let stored = match server.store.create(&key, rest::encode(&object)).await {
        Ok(stored) => stored,
        Err(error) => {
            crate::strategies::release(server, allocated).await;
            return Err(rest::store_error(error, kind, &name));
        }
    };
    tracing::debug!(%key, revision = stored.mod_revision, "created");
    if kind.group.is_empty() && kind.plural == "namespaces" {
        if let Err(error) = crate::default_serviceaccount::ensure(server, &name).await {
            tracing::warn!(namespace = %name, %error, "could not create the default service account");
        }
    }
    crate::crd::stored(server, kind, &stored).await
}

/// PUT: replaces the object (or its status) in full.
pub async fn update(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let kind = target.kind;
    let name = target.name.as_deref().unwrap_or("");
    let mut object = body::decode_object(call.content_type.as_deref(), &call.body)?;
    strategy::check_type(kind, &mut object)?;
    strict::check(kind, &object, call.param("fieldValidation"))?;
    apply::options::manager(call, apply::options::Options::Update)?;
    let warnings = crate::crd::warnings(kind, &object, call.param("fieldValidation"));
    match meta_str(&object, "name") {
        Some(body_name) if !body_name.is_empty() && body_name != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        _ => {
            strategy::metadata_mut(&mut object).insert("name".into(), Value::from(name));
        }
    }
    if let (Some(url), Some(body)) = (target.namespace.as_deref(), meta_str(&object, "namespace")) {
        if !body.is_empty() && body != url {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    let expected = meta_str(&object, "resourceVersion")
        .filter(|rv| !rv.is_empty())
        .map(rest::parse_revision)
        .transpose()?;
    let (current, revision) =
        rest::get_object(call.server, kind, target.namespace.as_deref(), name).await?;
    if expected.is_some_and(|rv| rv != revision) {
        return Err(ApiError::modified(kind.group, kind.plural, name));
    }
    let stored = store_update(call, target, object, &current, revision).await?;
    Ok(crate::crd::with_warnings(
        call.object(200, kind, &stored),
        &warnings,
    ))
}

/// PATCH: applies the patch to the current object and stores the result, re-reading and
/// re-applying when the object changed meanwhile (unless the patch pins a resourceVersion).
pub async fn patch(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let kind = target.kind;
    let name = target.name.as_deref().unwrap_or("");
    let content_type = call.content_type.as_deref().unwrap_or("");
    let patch_type = PatchType::from_content_type(content_type)
        .filter(|_| !content_type.starts_with("application/apply-patch+cbor"))
        .ok_or_else(|| patch_validation::unsupported_patch_type(content_type))?;
    if patch_type == PatchType::Apply {
        return apply::verb::serve(call, target).await;
    }
    apply::options::manager(call, apply::options::Options::Patch)?;
    let mut last_error = None;
    for _ in 0..PATCH_ATTEMPTS {
        let (current, revision) =
            rest::get_object(call.server, kind, target.namespace.as_deref(), name).await?;
        let mut patched = patch::apply(&current, patch_type, &call.body)?;
        if !patched.is_object() {
            return Err(ApiError::bad_request("the patch must leave an object"));
        }
        strategy::check_type(kind, &mut patched)?;
        let warnings = patch_validation::check(
            kind,
            patch_type,
            &call.body,
            &current,
            &patched,
            call.param("fieldValidation"),
        )?;
        crate::crd::strict(kind, &patched, call.param("fieldValidation"))?;
        let mut warnings = warnings;
        warnings.extend(crate::crd::warnings(
            kind,
            &patched,
            call.param("fieldValidation"),
        ));
        if meta_str(&patched, "name") != Some(name) {
            return Err(ApiError::bad_request(
                "metadata.name: the name of an object cannot be changed by a patch",
            ));
        }
        // Only a resourceVersion the patch itself sets pins the write (the object read here
        // carries its own, which must not turn a conflict into a refusal).
        let pinned = match patch_pins(patch_type, &call.body) {
            true => meta_str(&patched, "resourceVersion")
                .filter(|rv| !rv.is_empty())
                .map(rest::parse_revision)
                .transpose()?,
            false => None,
        };
        if pinned.is_some_and(|rv| rv != revision) {
            return Err(ApiError::modified(kind.group, kind.plural, name));
        }
        match store_update(call, target, patched, &current, revision).await {
            Ok(stored) => return Ok(with_warnings(call.object(200, kind, &stored), &warnings)),
            Err(error) if error.reason == "Conflict" && pinned.is_none() => {
                last_error = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| ApiError::modified(kind.group, kind.plural, name)))
}

/// Whether the patch `body` sets `metadata.resourceVersion`, making the write conditional on it.
fn patch_pins(patch_type: PatchType, body: &[u8]) -> bool {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    match patch_type {
        PatchType::Json => body.as_array().is_some_and(|ops| {
            ops.iter().any(|op| {
                op.get("path").and_then(Value::as_str) == Some("/metadata/resourceVersion")
                    && matches!(
                        op.get("op").and_then(Value::as_str),
                        Some("add" | "replace" | "test")
                    )
            })
        }),
        _ => body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|rv| !rv.is_empty()),
    }
}

/// `response`, its request's warnings joined by `warnings` (the server writes them all as
/// `Warning` headers, once each).
fn with_warnings(response: Response<ApiBody>, warnings: &[String]) -> Response<ApiBody> {
    crate::crd::with_warnings(response, warnings)
}

/// Stores `new` over `current` (read at `revision`) through the update strategy of the main
/// resource or the status subresource, the request's field manager taking what it changed.
/// A no-op change is not written. An object being deleted whose last finalizer went is
/// deleted.
async fn store_update(
    call: &Call<'_>,
    target: &Target<'_>,
    new: Value,
    current: &Value,
    revision: i64,
) -> ApiResult<Value> {
    let manager = apply::options::manager(call, apply::options::Options::Update)?;
    store_update_as(call, target, new, current, revision, Some(&manager)).await
}

/// [`store_update`], recording `manager` in the managed fields when given (an apply brings
/// them computed).
pub(crate) async fn store_update_as(
    call: &Call<'_>,
    target: &Target<'_>,
    new: Value,
    current: &Value,
    revision: i64,
    manager: Option<&str>,
) -> ApiResult<Value> {
    let kind = target.kind;
    let name = target.name.as_deref().unwrap_or("");
    let attributes = admission::Attributes {
        server: call.server,
        kind,
        namespace: target.namespace.as_deref(),
        name,
        subresource: target.subresource.as_deref(),
        operation: admission::Operation::Update,
        user: call.user,
        old: Some(current),
        dry_run: call.dry_run(),
    };
    let mut new = new;
    admission::mutate(&call.server.admission, &attributes, Some(&mut new)).await?;
    let mut new = if target.subresource.as_deref() == Some("status") {
        let mut status_only = strategy::prepare_status_update(kind, &new, current);
        if manager.is_none() {
            // An apply to status brings the managed fields it computed.
            apply::carry_managed_fields(&new, &mut status_only);
        }
        status_only
    } else {
        strategy::prepare_update(kind, &mut new, current);
        crate::strategies::prepare_update(kind, &mut new, current)?;
        new
    };
    if let Some(manager) = manager {
        apply::record_update(
            kind,
            Some(current),
            &mut new,
            manager,
            target.subresource.as_deref(),
        );
    }
    strategy::validate(kind, &new)?;
    crate::crd::prepare(kind, &mut new, Some(current))?;
    admission::validate(&call.server.admission, &attributes, Some(&new)).await?;
    let allocated = if target.subresource.is_none() {
        crate::strategies::allocate(call.server, kind, &mut new, Some(current)).await?
    } else {
        crate::strategies::Allocated::default()
    };
    let mut unchanged = current.clone();
    if let Some(meta) = unchanged.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    if new == unchanged || call.dry_run() {
        crate::strategies::release(call.server, allocated).await;
        if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::from(revision.to_string()));
        }
        crate::crd::read(kind, &mut new);
        return Ok(new);
    }
    let key = kind.key(target.namespace.as_deref(), name);
    let finalized = new.pointer("/metadata/deletionTimestamp").is_some()
        && new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty())
        // A namespace is also held by its spec.finalizers.
        && !(kind.group.is_empty()
            && kind.plural == "namespaces"
            && !crate::namespaces::unheld(&new));
    if finalized {
        let (_, deleted_at) = call
            .server
            .store
            .delete(&key, Some(revision))
            .await
            .map_err(|e| rest::store_error(e, kind, name))?;
        tracing::debug!(%key, "deleted: its last finalizer was removed");
        crate::strategies::release(call.server, allocated).await;
        crate::strategies::after_delete(call.server, kind, current).await;
        if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert(
                "resourceVersion".into(),
                Value::from(deleted_at.to_string()),
            );
        }
        crate::crd::read(kind, &mut new);
        return Ok(new);
    }
    let stored = match call
        .server
        .store
        .update(&key, rest::encode(&new), revision)
        .await
    {
        Ok(stored) => stored,
        Err(error) => {
            crate::strategies::release(call.server, allocated).await;
            return Err(rest::store_error(error, kind, name));
        }
    };
    crate::strategies::after_update(call.server, kind, current, &new).await;
    crate::crd::stored(call.server, kind, &stored).await
}

//! PATCH with `application/apply-patch+yaml`: server-side apply of the main resource or its
//! status, creating the object when it is missing, with dry run and optimistic retries.

use http::Response;
use serde_json::Value;

use super::fieldset::{self, Element};
use super::{options, schema, walk};
use crate::body::ApiBody;
use crate::kinds::Kind;
use crate::protobuf::strict;
use crate::rest::{self, Call};
use crate::route::Target;
use crate::status::{ApiError, ApiResult};
use crate::strategy::{self, meta_str};
use crate::write;

/// How many times an apply is redone when the object changed under it.
const ATTEMPTS: usize = 5;

/// Decodes the applied configuration (YAML, of which JSON is a subset) and checks it names
/// this kind and object, and no unknown fields.
fn configuration(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Value> {
    let kind = target.kind;
    let name = target.name.as_deref().unwrap_or("");
    let mut config: Value = serde_yaml_ng::from_slice(&call.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the applied configuration must be an object",
        ));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    let version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if version != kind.api_version() {
        return Err(ApiError::bad_request(format!(
            "Incorrect version specified in apply patch. Specified patch version: {version}, expected: {}",
            kind.api_version()
        )));
    }
    strategy::check_type(kind, &mut config)?;
    match meta_str(&config, "name") {
        Some(body_name) if !body_name.is_empty() && body_name != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        _ => {
            strategy::metadata_mut(&mut config).insert("name".into(), Value::from(name));
        }
    }
    let namespace = target.namespace.as_deref().filter(|_| kind.namespaced);
    if let (Some(url), Some(body)) = (namespace, meta_str(&config, "namespace")) {
        if !body.is_empty() && body != url {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    if let Some(ns) = namespace {
        strategy::metadata_mut(&mut config).insert("namespace".into(), Value::from(ns));
    }
    // Structured merge types every applied field, whatever fieldValidation says; the 500 is
    // upstream's.
    if let Some(unknown) = strict::unknown_fields(&kind.api_version(), kind.kind, &config) {
        if let Some(first) = unknown.first().map(|f| typed_path(kind, &config, f)) {
            let why = format!("{first}: field not declared in schema");
            return Err(typed_patch_error(kind, namespace, name, &why));
        }
    }
    if let Some(why) = walk::missing_key(schema::for_kind(kind).as_ref(), &config) {
        return Err(typed_patch_error(kind, namespace, name, &why));
    }
    Ok(config)
}

/// Upstream's 500 when the configuration does not fit the kind's schema.
fn typed_patch_error(kind: &Kind, namespace: Option<&str>, name: &str, why: &str) -> ApiError {
    let gvk = format!("{}/{}, Kind={}", kind.group, kind.version, kind.kind);
    ApiError::new(
        500,
        "",
        format!(
            "failed to create typed patch object ({}/{name}; {gvk}): {why}",
            namespace.unwrap_or("")
        ),
    )
}

/// A JSON path with list indices (`spec.containers[0].foo`) as structured merge prints it,
/// items named by key: `.spec.containers[name="c"].foo`.
fn typed_path(kind: &Kind, config: &Value, dotted: &str) -> String {
    let schema = schema::for_kind(kind);
    let schema = schema.as_ref();
    let mut names: Vec<&str> = Vec::new();
    let mut shown: Vec<Element> = Vec::new();
    let mut at = Some(config);
    for segment in dotted.split('.') {
        let mut parts = segment.split('[');
        let name = parts.next().unwrap_or("");
        names.push(name);
        shown.push(Element::Field(name.to_string()));
        at = at.and_then(|v| v.get(name));
        for index in parts {
            let index: usize = index.trim_end_matches(']').parse().unwrap_or(0);
            let item = at.and_then(|v| v.get(index));
            let list_type = schema.list_type(&names);
            shown.push(match item {
                Some(item) => walk::item_element(schema, &names, &list_type, item, index),
                None => Element::Index(index),
            });
            at = item;
        }
    }
    fieldset::display(&shown)
}

/// Serves an apply PATCH.
pub async fn serve(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let kind = target.kind;
    let name = target.name.as_deref().unwrap_or("");
    let subresource = target.subresource.as_deref();
    let manager = options::apply_manager(call)?;
    let force = call.flag("force");
    let config = configuration(call, target)?;
    let pinned = meta_str(&config, "resourceVersion")
        .filter(|rv| !rv.is_empty())
        .map(rest::parse_revision)
        .transpose()?;
    let namespace = target.namespace.as_deref();
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        let outcome = match rest::get_object(call.server, kind, namespace, name).await {
            Err(error) if error.code == 404 && subresource.is_none() && pinned.is_none() => {
                let object = super::apply(kind, None, &config, &manager, force, None)?;
                write::create_object_as(
                    call.server,
                    kind,
                    namespace,
                    object,
                    call.user,
                    call.dry_run(),
                    None,
                )
                .await
                .map(|created| (201, created))
            }
            Err(error) => return Err(error),
            Ok((current, revision)) => {
                if pinned.is_some_and(|rv| rv != revision) {
                    return Err(ApiError::modified(kind.group, kind.plural, name));
                }
                let merged =
                    super::apply(kind, Some(&current), &config, &manager, force, subresource)?;
                write::store_update_as(call, target, merged, &current, revision, None)
                    .await
                    .map(|stored| (200, stored))
            }
        };
        match outcome {
            Ok((code, object)) => return Ok(call.object(code, kind, &object)),
            // Someone else wrote (or created) first: apply again to what they left.
            Err(error)
                if pinned.is_none()
                    && (error.reason == "Conflict" || error.reason == "AlreadyExists") =>
            {
                last_error = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| ApiError::modified(kind.group, kind.plural, name)))
}

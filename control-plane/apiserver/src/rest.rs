//! The generic REST handler: one for every kind in the table. It dispatches a resource request
//! by verb and holds the helpers the verbs share (stored bytes to objects, store errors to
//! Status errors).

use std::collections::HashMap;

use bytes::Bytes;
use capstan_store::{KeyValue, StoreError};
use http::{Method, Response};
use serde_json::{Value, json};

use crate::body::{self, ApiBody};
use crate::kinds::Kind;
use crate::route::{self, Target};
use crate::server::{ApiServer, RequestUser};
use crate::status::{ApiError, ApiResult};
use crate::{delete, list, subresources, table, watch, write};

pub use crate::write::create_object;

/// What a verb needs of the request besides the target.
pub struct Call<'a> {
    /// The server.
    pub server: &'a ApiServer,
    /// The user making the request.
    pub user: &'a RequestUser,
    /// The request's query parameters.
    pub query: HashMap<String, String>,
    /// The request's `Content-Type`.
    pub content_type: Option<String>,
    /// The request's `User-Agent`: the default field manager.
    pub user_agent: Option<String>,
    /// Whether the client wants YAML back.
    pub yaml: bool,
    /// Whether the client asked for a `meta.k8s.io` Table (kubectl get).
    pub table: bool,
    /// The body.
    pub body: Bytes,
}

impl Call<'_> {
    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// Whether a boolean query parameter is set (`true` or `1`).
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true" | "1"))
    }

    /// Whether `dryRun=All` was asked: everything but the write happens.
    pub fn dry_run(&self) -> bool {
        self.param("dryRun").is_some_and(|v| v == "All")
    }

    /// A response with one object, in the form the client asked for.
    pub fn object(&self, code: u16, kind: &Kind, object: &Value) -> Response<ApiBody> {
        let converted;
        let object = if crate::events::is_view(kind) {
            converted = crate::events::to_view(kind, object.clone());
            &converted
        } else {
            object
        };
        if self.table {
            return body::json_response(
                code,
                &table::of_objects(kind, std::slice::from_ref(object), None),
            );
        }
        body::object_response(code, object, self.yaml)
    }
}

/// Serves a request on a resource path.
pub async fn serve(
    server: &ApiServer,
    parts: &http::request::Parts,
    target: Target<'_>,
    body: Bytes,
    user: &RequestUser,
) -> ApiResult<Response<ApiBody>> {
    let header = |name: http::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let accept = header(http::header::ACCEPT);
    // A client that takes protobuf only (no JSON) is told so rather than sent JSON it
    // cannot read.
    if !body::acceptable(accept.as_deref()) {
        return Err(ApiError::not_acceptable());
    }
    let call = Call {
        server,
        user,
        query: route::query(&parts.uri),
        content_type: header(http::header::CONTENT_TYPE),
        user_agent: header(http::header::USER_AGENT),
        yaml: body::wants_yaml(accept.as_deref()),
        table: table::wanted(accept.as_deref()),
        body,
    };
    if crate::node_proxy::proxies(&target) {
        return crate::node_proxy::serve(server, parts, &target, call.body.clone()).await;
    }
    let kind = target.kind;
    if kind.create_only {
        return crate::reviews::serve(&call, &parts.method, &target).await;
    }
    let answer = match (
        &parts.method,
        target.name.as_deref(),
        target.subresource.as_deref(),
    ) {
        (&Method::GET, None, _) if call.flag("watch") => watch::serve(&call, &target).await,
        (&Method::GET, None, _) => list::serve(&call, &target).await,
        (&Method::POST, None, _) => {
            if kind.namespaced && target.namespace.is_none() {
                return Err(ApiError::method_not_allowed("create"));
            }
            write::create(&call, &target).await
        }
        (&Method::DELETE, None, _) => delete::collection(&call, &target).await,
        (method, Some(_), Some("token"))
            if kind.group.is_empty() && kind.plural == "serviceaccounts" =>
        {
            if method != Method::POST {
                return Err(ApiError::method_not_allowed(method.as_str()));
            }
            crate::tokens::request::create(&call, &target).await
        }
        (_, Some(_), Some("scale")) if kind.custom.as_ref().is_some_and(|c| c.scale.is_some()) => {
            crate::crd::scale::serve(&call, &target, &parts.method).await
        }
        (method, Some(_), Some(sub)) if sub != "status" => {
            subresources::serve(&call, &target, method).await
        }
        (_, Some(_), Some(_)) if !kind.status_subresource => Err(ApiError::path_not_found()),
        (&Method::GET, Some(name), _) => {
            let (object, _) = get_object(server, kind, target.namespace.as_deref(), name).await?;
            Ok(call.object(200, kind, &object))
        }
        (&Method::PUT, Some(_), _) => write::update(&call, &target).await,
        (&Method::PATCH, Some(_), _) => write::patch(&call, &target).await,
        (&Method::DELETE, Some(_), None) => delete::object(&call, &target).await,
        (method, _, _) => Err(ApiError::method_not_allowed(method.as_str())),
    };
    answer.map(|response| crate::warnings::add(kind, &parts.method, response))
}

/// Reads one object, with its resourceVersion, and the revision it was last changed at.
pub async fn get_object(
    server: &ApiServer,
    kind: &Kind,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<(Value, i64)> {
    let key = kind.key(namespace, name);
    let stored = server
        .store
        .get(&key)
        .await
        .map_err(|e| store_error(e, kind, name))?
        .ok_or_else(|| ApiError::not_found(kind.group, kind.plural, name))?;
    let mut object = crate::events::to_view(kind, decode(&stored)?);
    crate::crd::read(kind, &mut object);
    Ok((object, stored.mod_revision))
}

/// The object stored in `kv`, with `metadata.resourceVersion` set to the revision that last
/// changed it.
pub fn decode(kv: &KeyValue) -> ApiResult<Value> {
    decode_at(kv, kv.mod_revision)
}

/// The object stored in `kv`, with `metadata.resourceVersion` set to `revision`.
pub fn decode_at(kv: &KeyValue, revision: i64) -> ApiResult<Value> {
    let mut object: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        tracing::error!(key = %kv.key, error = %e, "stored object is not JSON");
        ApiError::internal(format!("stored object {} could not be decoded", kv.key))
    })?;
    if !object.is_object() {
        tracing::error!(key = %kv.key, "stored object is not a JSON object");
        return Err(ApiError::internal(format!(
            "stored object {} could not be decoded",
            kv.key
        )));
    }
    crate::strategy::metadata_mut(&mut object)
        .insert("resourceVersion".into(), json!(revision.to_string()));
    Ok(object)
}

/// The bytes stored for an object: without resourceVersion, which is the store's revision.
pub fn encode(object: &Value) -> Vec<u8> {
    let mut stored = crate::events::to_storage(object).unwrap_or_else(|| object.clone());
    if let Some(meta) = stored.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    stored.to_string().into_bytes()
}

/// The Status error of a store error about `name` of `kind`.
pub fn store_error(error: StoreError, kind: &Kind, name: &str) -> ApiError {
    match error {
        StoreError::NotFound(_) => ApiError::not_found(kind.group, kind.plural, name),
        StoreError::AlreadyExists(_) => ApiError::already_exists(kind.group, kind.plural, name),
        StoreError::Conflict { .. } => ApiError::modified(kind.group, kind.plural, name),
        StoreError::Compacted {
            requested,
            compacted,
        } => ApiError::expired(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        StoreError::FutureRevision { requested, current } => {
            let mut e = ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            );
            e.details.retry_after = Some(1);
            e
        }
        StoreError::TooLarge { .. } => ApiError::too_large(),
        StoreError::Unavailable(why) => {
            tracing::warn!(%why, "store unavailable");
            ApiError::unavailable("storage is unavailable, please retry")
        }
        StoreError::Internal(why) => {
            tracing::error!(%why, "store failed");
            ApiError::internal("an error on the server prevented the request from succeeding")
        }
    }
}

/// Parses a resourceVersion parameter or field: a non-negative revision.
pub fn parse_revision(text: &str) -> ApiResult<i64> {
    text.parse::<i64>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {text:?}")))
}

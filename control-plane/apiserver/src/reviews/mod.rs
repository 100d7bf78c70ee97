//! The review APIs: create-only resources that answer a question in the `status` of the object
//! posted and store nothing (authorization.k8s.io's access and rules reviews,
//! authentication.k8s.io's TokenReview and SelfSubjectReview).

pub mod access;
pub mod authentication;

use http::{Method, Response};
use serde_json::Value;

use crate::body::{self, ApiBody};
use crate::rest::Call;
use crate::route::Target;
use crate::status::{ApiError, ApiResult};
use crate::strategy;

/// Serves a request on a create-only kind: POST of the collection only.
pub async fn serve(
    call: &Call<'_>,
    method: &Method,
    target: &Target<'_>,
) -> ApiResult<Response<ApiBody>> {
    let kind = target.kind;
    if *method != Method::POST || target.name.is_some() {
        let verb = match (method, target.name.is_some()) {
            (&Method::GET, false) => "list",
            (&Method::GET, true) => "get",
            (&Method::DELETE, _) => "delete",
            _ => method.as_str(),
        };
        return Err(ApiError::method_not_allowed(verb));
    }
    let mut object = body::decode_object(call.content_type.as_deref(), &call.body)?;
    strategy::check_type(kind, &mut object)?;
    let namespace = target.namespace.as_deref().unwrap_or("");
    let status = match kind.kind {
        "SelfSubjectAccessReview" => access::self_subject_access(call, &object)?,
        "SubjectAccessReview" => access::subject_access(call, &object, None)?,
        "LocalSubjectAccessReview" => access::subject_access(call, &object, Some(namespace))?,
        "SelfSubjectRulesReview" => access::self_subject_rules(call, &object)?,
        "TokenReview" => authentication::token_review(call, &object).await?,
        "SelfSubjectReview" => authentication::self_subject(call),
        other => {
            return Err(ApiError::new(
                501,
                "NotImplemented",
                format!("{other} is not implemented yet"),
            ));
        }
    };
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = serde_json::json!({});
    }
    object["status"] = status;
    Ok(body::object_response(201, &object, call.yaml))
}

/// A string field at `pointer` of `object`, empty when absent.
pub(crate) fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The strings at `pointer`.
pub(crate) fn strings(object: &Value, pointer: &str) -> Vec<String> {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

//! Request and response bodies: reading a body within the size limit, decoding JSON or YAML into
//! an object, and building JSON (or YAML) responses, including Status errors.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;

use crate::status::{ApiError, ApiResult};

/// The body type of every response: whole or streamed (watches).
pub type ApiBody = BoxBody<Bytes, Infallible>;

/// The largest request body taken, as kube-apiserver's 3 MiB limit.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] with 413.
pub async fn read_body<B>(body: B) -> ApiResult<Bytes>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large()),
        Err(error) => Err(ApiError::bad_request(format!(
            "error reading the request body: {error}"
        ))),
    }
}

/// Decodes an object body by its content type: JSON (the default), YAML or Kubernetes protobuf.
pub fn decode_object(content_type: Option<&str>, bytes: &[u8]) -> ApiResult<Value> {
    let essence = content_type
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .unwrap_or("application/json");
    let value: Value = match essence {
        "application/json" | "" | "*/*" => serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "the object provided is unrecognized (error decoding JSON: {e})"
            ))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml_ng::from_slice(bytes)
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "the object provided is unrecognized (error decoding YAML: {e})"
                ))
            })?,
        crate::protobuf::MEDIA_TYPE => crate::protobuf::decode_body(bytes)?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::bad_request(
            "the object provided is unrecognized (must be a JSON object)",
        ))
    }
}

/// Whether the client asked for YAML responses. Anything else, protobuf included, is answered
/// in JSON: clients decode by the response's Content-Type, so kubectl's
/// `application/vnd.kubernetes.protobuf,application/json` is content with it.
pub fn wants_yaml(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.trim_start().starts_with("application/yaml"))
}

/// The media types resource responses come in (protobuf responses are not built).
pub const RESPONSE_TYPES: &[&str] = &["application/json", "application/yaml"];

/// Whether a response in one of [`RESPONSE_TYPES`] satisfies `accept` (no header, `*/*`,
/// `application/*`, or one of them with any parameters, tables included).
pub fn acceptable(accept: Option<&str>) -> bool {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return true;
    };
    accept.split(',').any(|range| {
        let media = range.split(';').next().unwrap_or("").trim();
        media == "*/*" || media == "application/*" || RESPONSE_TYPES.contains(&media)
    })
}

fn full(bytes: impl Into<Bytes>) -> ApiBody {
    Full::new(bytes.into()).boxed()
}

/// A response with a JSON body.
pub fn json_response(code: u16, value: &Value) -> Response<ApiBody> {
    bytes_response(code, "application/json", value.to_string().into_bytes())
}

/// A response with a JSON body, in YAML when asked.
pub fn object_response(code: u16, value: &Value, yaml: bool) -> Response<ApiBody> {
    if yaml {
        if let Ok(text) = serde_yaml_ng::to_string(value) {
            return bytes_response(code, "application/yaml", text.into_bytes());
        }
    }
    json_response(code, value)
}

/// A response with these bytes and content type.
pub fn bytes_response(code: u16, content_type: &str, bytes: Vec<u8>) -> Response<ApiBody> {
    let mut response = Response::new(full(bytes));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// A plain text response (health checks).
pub fn text_response(code: u16, text: &str) -> Response<ApiBody> {
    bytes_response(code, "text/plain; charset=utf-8", text.as_bytes().to_vec())
}

/// The Status response of an error.
pub fn error_response(error: &ApiError) -> Response<ApiBody> {
    let mut response = json_response(error.code, &error.to_status());
    if let Some(seconds) = error.details.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

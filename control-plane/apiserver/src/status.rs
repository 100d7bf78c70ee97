//! API errors as kube-apiserver sends them: a `Status` object whose reason, message and details
//! clients (kubectl, client-go, kube-rs) turn into their own error types and messages.

use serde_json::{Value, json};

/// One cause of an `Invalid` error: what is wrong with which field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// kube's cause type, e.g. `FieldValueRequired`.
    pub reason: String,
    /// The message without the field path, e.g. `Required value`.
    pub message: String,
    /// The field path, e.g. `spec.containers[0].image`.
    pub field: String,
}

impl Cause {
    /// A required field left empty.
    pub fn required(field: &str) -> Cause {
        Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: field.into(),
        }
    }

    /// A field whose value is not allowed; `detail` says why.
    pub fn invalid(field: &str, value: &str, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {}: {detail}", json!(value)),
            field: field.into(),
        }
    }

    /// A field that may not be changed.
    pub fn immutable(field: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: field is immutable".into(),
            field: field.into(),
        }
    }
}

/// A failed request: its HTTP code, kube's reason and message, and the object it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status code.
    pub code: u16,
    /// kube's `StatusReason`, e.g. `NotFound`; empty for none.
    pub reason: &'static str,
    /// The message clients print.
    pub message: String,
    /// `details`, boxed: errors travel in every `Result` and should stay small.
    pub details: Box<Details>,
}

/// The `details` of a Status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    /// `details.name`.
    pub name: Option<String>,
    /// `details.group`.
    pub group: Option<String>,
    /// `details.kind` (kube puts the resource there for most errors).
    pub kind: Option<String>,
    /// `details.causes`.
    pub causes: Vec<Cause>,
    /// `details.retryAfterSeconds`.
    pub retry_after: Option<u32>,
}

/// A result whose error is an [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

/// The group and resource an error names, as `pods` or `deployments.apps`.
fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    /// An error without details.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Box::default(),
        }
    }

    fn about(mut self, group: &str, resource: &str, name: &str) -> ApiError {
        self.details.group = Some(group.to_string());
        self.details.kind = Some(resource.to_string());
        self.details.name = Some(name.to_string());
        self
    }

    /// `pods "web" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> ApiError {
        let message = format!("{} \"{name}\" not found", qualified(group, resource));
        ApiError::new(404, "NotFound", message).about(group, resource, name)
    }

    /// `pods "web" already exists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> ApiError {
        let message = format!("{} \"{name}\" already exists", qualified(group, resource));
        ApiError::new(409, "AlreadyExists", message).about(group, resource, name)
    }

    /// `Operation cannot be fulfilled on pods "web": <why>`.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {} \"{name}\": {why}",
            qualified(group, resource)
        );
        ApiError::new(409, "Conflict", message).about(group, resource, name)
    }

    /// The optimistic-concurrency conflict of an update against a stale resourceVersion.
    pub fn modified(group: &str, resource: &str, name: &str) -> ApiError {
        ApiError::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `The Pod "web" is invalid: spec.containers[0].image: Required value`; `details.kind` is the
    /// kind here, as upstream.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> ApiError {
        let listed: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let what = match listed.len() {
            1 => listed.join(""),
            _ => format!("[{}]", listed.join(", ")),
        };
        // Upstream names the group-qualified kind (`Deployment.apps`); kubectl prints its own
        // sentence from details.kind.
        let message = format!("{} \"{name}\" is invalid: {what}", qualified(group, kind));
        let mut error = ApiError::new(422, "Invalid", message).about(group, kind, name);
        error.details.causes = causes;
        error
    }

    /// An `Accept` header no response type satisfies (kube's 406 NotAcceptable).
    pub fn not_acceptable() -> ApiError {
        ApiError::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: {}",
                crate::body::RESPONSE_TYPES.join(", ")
            ),
        )
    }

    /// A request the server cannot make sense of.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// The resource exists but not with this verb.
    pub fn method_not_allowed(verb: &str) -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({verb})"),
        )
    }

    /// No such path.
    pub fn path_not_found() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// A body in a content type the endpoint does not take.
    pub fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type:?})"
            ),
        )
    }

    /// A body over the limit.
    pub fn too_large() -> ApiError {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        )
    }

    /// A resourceVersion or continue token older than the history kept.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    /// Refused for a reason other than authorization of the user, e.g. a terminating namespace.
    pub fn forbidden(group: &str, resource: &str, name: &str, why: &str) -> ApiError {
        let message = format!(
            "{} \"{name}\" is forbidden: {why}",
            qualified(group, resource)
        );
        ApiError::new(403, "Forbidden", message).about(group, resource, name)
    }

    /// A server-side failure the client cannot fix; the cause is logged, not sent.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "InternalError", message)
    }

    /// The server cannot answer now; the client should retry.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        let mut error = ApiError::new(503, "ServiceUnavailable", message);
        error.details.retry_after = Some(1);
        error
    }

    /// The `Status` object, as JSON.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            status["reason"] = json!(self.reason);
        }
        let d = &self.details;
        let has_details =
            d.name.is_some() || d.kind.is_some() || !d.causes.is_empty() || d.retry_after.is_some();
        if has_details {
            let mut details = serde_json::Map::new();
            if let Some(name) = &d.name {
                details.insert("name".into(), json!(name));
            }
            if let Some(group) = d.group.as_ref().filter(|g| !g.is_empty()) {
                details.insert("group".into(), json!(group));
            }
            if let Some(kind) = &d.kind {
                details.insert("kind".into(), json!(kind));
            }
            if !d.causes.is_empty() {
                let causes: Vec<Value> = d
                    .causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                details.insert("causes".into(), Value::Array(causes));
            }
            if let Some(seconds) = d.retry_after {
                details.insert("retryAfterSeconds".into(), json!(seconds));
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_lists_every_cause_as_kube_does() {
        let one = ApiError::invalid("", "Pod", "web", vec![Cause::required("spec.containers")]);
        assert_eq!(
            one.message,
            "Pod \"web\" is invalid: spec.containers: Required value"
        );
        let two = ApiError::invalid(
            "",
            "Pod",
            "web",
            vec![Cause::required("a"), Cause::required("b")],
        );
        assert_eq!(
            two.message,
            "Pod \"web\" is invalid: [a: Required value, b: Required value]"
        );
        assert_eq!(two.to_status()["details"]["causes"][1]["field"], "b");
    }

    #[test]
    fn group_qualifies_the_resource() {
        let e = ApiError::not_found("apps", "deployments", "web");
        assert_eq!(e.message, "deployments.apps \"web\" not found");
        assert_eq!(e.to_status()["details"]["group"], "apps");
    }
}

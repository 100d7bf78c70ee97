//! authorization.k8s.io/v1: SubjectAccessReview (may this user do that?),
//! LocalSubjectAccessReview (the same, within the namespace of the path),
//! SelfSubjectAccessReview (may I?, what `kubectl auth can-i` asks) and SelfSubjectRulesReview
//! (what may I do here?, `kubectl auth can-i --list`). Each is answered by the authorizer chain
//! that guards requests, so the answer is what a request would meet.

use serde_json::{Value, json};

use super::{strings, text};
use crate::authz::attributes::Attributes;
use crate::authz::rbac::rules::PolicyRule;
use crate::authz::{Decision, Rules};
use crate::rest::Call;
use crate::server::RequestUser;
use crate::status::{ApiError, ApiResult, Cause};

const GROUP: &str = "authorization.k8s.io";

/// The attributes a review's spec asks about, or the validation causes.
fn spec_attributes(spec: &Value, kind: &str) -> ApiResult<Attributes> {
    let resource = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    match (resource, non_resource) {
        (Some(r), None) => Ok(Attributes {
            verb: text(r, "/verb").into(),
            resource_request: true,
            api_group: text(r, "/group").into(),
            api_version: text(r, "/version").into(),
            resource: text(r, "/resource").into(),
            subresource: text(r, "/subresource").into(),
            name: text(r, "/name").into(),
            namespace: text(r, "/namespace").into(),
            path: String::new(),
        }),
        (None, Some(n)) => Ok(Attributes {
            verb: text(n, "/verb").into(),
            path: text(n, "/path").into(),
            ..Attributes::default()
        }),
        (Some(_), Some(_)) => Err(invalid(
            kind,
            Cause::invalid(
                "spec.resourceAttributes",
                "",
                "cannot be specified in combination with nonResourceAttributes",
            ),
        )),
        (None, None) => Err(invalid(
            kind,
            Cause::invalid(
                "spec.resourceAttributes",
                "null",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ),
        )),
    }
}

fn invalid(kind: &str, cause: Cause) -> ApiError {
    ApiError::invalid(GROUP, kind, "", vec![cause])
}

/// The `status` of an access review: the chain's decision on `attributes` for `user`.
fn decide(call: &Call<'_>, user: &RequestUser, attributes: &Attributes) -> Value {
    let (decision, reason) = call.server.authorizer.decide(user, attributes);
    let mut status = json!({"allowed": decision == Decision::Allow});
    if decision == Decision::Deny {
        status["denied"] = json!(true);
    }
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    status
}

/// SelfSubjectAccessReview: the requesting user.
pub fn self_subject_access(call: &Call<'_>, object: &Value) -> ApiResult<Value> {
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let attributes = spec_attributes(&spec, "SelfSubjectAccessReview")?;
    Ok(decide(call, call.user, &attributes))
}

/// SubjectAccessReview, or LocalSubjectAccessReview when `namespace` is the path's.
pub fn subject_access(
    call: &Call<'_>,
    object: &Value,
    namespace: Option<&str>,
) -> ApiResult<Value> {
    let kind = match namespace {
        Some(_) => "LocalSubjectAccessReview",
        None => "SubjectAccessReview",
    };
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let attributes = spec_attributes(&spec, kind)?;
    let user = RequestUser {
        name: text(&spec, "/user").into(),
        uid: Some(text(&spec, "/uid").to_string()).filter(|u| !u.is_empty()),
        groups: strings(&spec, "/groups"),
    };
    if user.name.is_empty() && user.groups.is_empty() {
        return Err(invalid(
            kind,
            Cause::invalid(
                "spec.user",
                "",
                "at least one of user or group must be specified",
            ),
        ));
    }
    if let Some(namespace) = namespace {
        if !attributes.resource_request {
            return Err(invalid(
                kind,
                Cause::invalid(
                    "spec.nonResourceAttributes",
                    "",
                    "disallowed on this kind of request",
                ),
            ));
        }
        if attributes.namespace != namespace {
            return Err(ApiError::bad_request(format!(
                "spec.resourceAttributes.namespace must match namespace: {namespace}"
            )));
        }
    }
    Ok(decide(call, &user, &attributes))
}

/// SelfSubjectRulesReview: the rules the requesting user holds in `spec.namespace`.
pub fn self_subject_rules(call: &Call<'_>, object: &Value) -> ApiResult<Value> {
    let namespace = text(object, "/spec/namespace");
    if namespace.is_empty() {
        return Err(ApiError::bad_request("no namespace on request"));
    }
    let Rules {
        resource,
        non_resource,
        incomplete,
        errors,
    } = call.server.authorizer.rules_for(call.user, namespace);
    let resource: Vec<Value> = resource
        .iter()
        .map(|r| {
            let mut rule =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                rule["resourceNames"] = json!(r.resource_names);
            }
            rule
        })
        .collect();
    let non_resource: Vec<Value> = non_resource
        .iter()
        .map(|r: &PolicyRule| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
        .collect();
    let mut status = json!({
        "resourceRules": resource,
        "nonResourceRules": non_resource,
        "incomplete": incomplete,
    });
    if !errors.is_empty() {
        status["evaluationError"] = json!(crate::authz::rbac::aggregate(&errors));
    }
    Ok(status)
}

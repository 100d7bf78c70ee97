//! `certificatesigningrequests/approval`: where `kubectl certificate approve|deny` writes the
//! Approved or Denied condition. Only `status.conditions` is taken from the request; issuing
//! the certificate is a signer's job, not the API server's.

use http::{Method, Response};
use serde_json::{Value, json};

use super::{Change, modify, pinned};
use crate::admission::Operation;
use crate::body::{self, ApiBody};
use crate::patch::{self, PatchType};
use crate::rest::{self, Call};
use crate::route::Target;
use crate::status::{ApiError, ApiResult, Cause};
use crate::strategy;

/// GET, PUT or PATCH of a CSR's approval.
pub async fn serve(
    call: &Call<'_>,
    target: &Target<'_>,
    method: &Method,
) -> ApiResult<Response<ApiBody>> {
    let kind = target.kind;
    let name = target.name.as_deref().unwrap_or("");
    if *method == Method::GET {
        let (csr, _) = rest::get_object(call.server, kind, None, name).await?;
        return Ok(call.object(200, kind, &csr));
    }
    let requested = if *method == Method::PUT {
        let mut csr = body::decode_object(call.content_type.as_deref(), &call.body)?;
        strategy::check_type(kind, &mut csr)?;
        Some(csr)
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
    let how = Change {
        subresource: "approval",
        operation: Operation::Update,
        pinned: match &requested {
            Some(csr) => pinned(csr)?,
            None => None,
        },
    };
    let stored = modify(call, target, how, |current| {
        let new_csr = match (&requested, patch_type) {
            (Some(csr), _) => csr.clone(),
            (None, Some(patch_type)) => patch::apply(current, patch_type, &call.body)?,
            (None, None) => return Err(ApiError::method_not_allowed(method.as_str())),
        };
        let mut conditions: Vec<Value> = new_csr
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let causes = check_conditions(current, &conditions);
        if !causes.is_empty() {
            return Err(ApiError::invalid(
                "certificates.k8s.io",
                "CertificateSigningRequest",
                name,
                causes,
            ));
        }
        let now = strategy::now();
        for condition in conditions.iter_mut().filter_map(Value::as_object_mut) {
            for stamp in ["lastUpdateTime", "lastTransitionTime"] {
                if condition.get(stamp).is_none_or(Value::is_null) {
                    condition.insert(stamp.into(), json!(now));
                }
            }
        }
        let mut new = current.clone();
        if !new["status"].is_object() {
            new["status"] = json!({});
        }
        new["status"]["conditions"] = Value::Array(conditions);
        Ok(new)
    })
    .await?;
    Ok(call.object(200, kind, &stored))
}

/// Upstream's approval checks: known condition status, no duplicate types, Approved and Denied
/// exclusive, and neither removed once set.
fn check_conditions(current: &Value, conditions: &[Value]) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, condition) in conditions.iter().enumerate() {
        let at = format!("status.conditions[{i}]");
        let kind = condition.get("type").and_then(Value::as_str).unwrap_or("");
        if kind.is_empty() {
            causes.push(Cause::required(&format!("{at}.type")));
            continue;
        }
        if seen.contains(&kind) {
            causes.push(Cause {
                reason: "FieldValueDuplicate".into(),
                message: format!("Duplicate value: {}", json!(kind)),
                field: format!("{at}.type"),
            });
        }
        seen.push(kind);
        let status = condition
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("");
        let allowed: &[&str] = if matches!(kind, "Approved" | "Denied") {
            &["True"]
        } else {
            &["False", "True", "Unknown"]
        };
        if !allowed.contains(&status) {
            let listed: Vec<String> = allowed.iter().map(|s| format!("\"{s}\"")).collect();
            causes.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "Unsupported value: {}: supported values: {}",
                    json!(status),
                    listed.join(", ")
                ),
                field: format!("{at}.status"),
            });
        }
    }
    if seen.contains(&"Approved") && seen.contains(&"Denied") {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message:
                "Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive"
                    .into(),
            field: "status.conditions".into(),
        });
    }
    let previous = current
        .pointer("/status/conditions")
        .and_then(Value::as_array);
    for old in previous.into_iter().flatten() {
        let kind = old.get("type").and_then(Value::as_str).unwrap_or("");
        if matches!(kind, "Approved" | "Denied") && !seen.contains(&kind) {
            causes.push(Cause {
                reason: "FieldValueForbidden".into(),
                message: format!(
                    "Forbidden: updates may not remove a condition of type {}",
                    json!(kind)
                ),
                field: "status.conditions".into(),
            });
        }
    }
    causes
}

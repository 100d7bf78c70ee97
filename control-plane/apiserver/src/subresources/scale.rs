//! The `scale` subresource of deployments, replicasets, statefulsets and replication
//! controllers: an `autoscaling/v1` Scale read from and written to the parent's
//! `spec.replicas`, as `kubectl scale` and autoscalers use it.

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

/// GET, PUT or PATCH of a Scale.
pub async fn serve(
    call: &Call<'_>,
    target: &Target<'_>,
    method: &Method,
) -> ApiResult<Response<ApiBody>> {
    let kind = target.kind;
    let name = target.name.as_deref().unwrap_or("");
    let namespace = target.namespace.as_deref();
    if *method == Method::GET {
        let (object, _) = rest::get_object(call.server, kind, namespace, name).await?;
        return Ok(body::object_response(200, &scale_of(&object), call.yaml));
    }
    let requested = if *method == Method::PUT {
        Some(body::decode_object(
            call.content_type.as_deref(),
            &call.body,
        )?)
    } else {
        None
    };
    let patch_type = match method {
        &Method::PATCH => {
            let content_type = call.content_type.as_deref().unwrap_or("");
            Some(
                PatchType::from_content_type(content_type)
                    .ok_or_else(|| ApiError::unsupported_media_type(content_type))?,
            )
        }
        _ => None,
    };
    let pin = match &requested {
        Some(scale) => pinned(scale)?,
        None => None,
    };
    let how = Change {
        subresource: "scale",
        operation: Operation::Update,
        pinned: pin,
    };
    let stored = modify(call, target, how, |current| {
        let scale = match (&requested, patch_type) {
            (Some(scale), _) => scale.clone(),
            (None, Some(patch_type)) => patch::apply(&scale_of(current), patch_type, &call.body)?,
            (None, None) => return Err(ApiError::method_not_allowed(method.as_str())),
        };
        let replicas = check_scale(&scale, name)?;
        let mut new = current.clone();
        new["spec"]["replicas"] = json!(replicas);
        strategy::prepare_update(kind, &mut new, current);
        Ok(new)
    })
    .await?;
    Ok(body::object_response(200, &scale_of(&stored), call.yaml))
}

/// The Scale's `spec.replicas`, checked as upstream's ValidateScale.
fn check_scale(scale: &Value, name: &str) -> ApiResult<i64> {
    if let Some(kind) = scale.get("kind").and_then(Value::as_str) {
        if kind != "Scale" {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind (Scale)"
            )));
        }
    }
    if let Some(body_name) = strategy::meta_str(scale, "name").filter(|n| !n.is_empty()) {
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
    }
    let replicas = scale.pointer("/spec/replicas").unwrap_or(&Value::Null);
    let value = match replicas {
        Value::Null => 0,
        other => other.as_i64().ok_or_else(|| {
            ApiError::bad_request("spec.replicas: must be an integer".to_string())
        })?,
    };
    if value < 0 {
        let cause = Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {value}: must be greater than or equal to 0"),
            field: "spec.replicas".into(),
        };
        return Err(ApiError::invalid("autoscaling", "Scale", name, vec![cause]));
    }
    Ok(value)
}

/// The Scale of a workload object.
fn scale_of(object: &Value) -> Value {
    let meta = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let mut metadata = serde_json::Map::new();
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(value) = meta.get(field) {
            metadata.insert(field.into(), value.clone());
        }
    }
    let selector = object
        .pointer("/spec/selector")
        .map(selector_string)
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": object.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// A selector in kube's string form, requirements sorted by key: a `LabelSelector`
/// (`matchLabels`, `matchExpressions`) or, for replication controllers, a plain label map.
pub fn selector_string(selector: &Value) -> String {
    let Some(map) = selector.as_object() else {
        return String::new();
    };
    let structured = map.contains_key("matchLabels") || map.contains_key("matchExpressions");
    let mut requirements: Vec<(String, String)> = Vec::new();
    let labels = if structured {
        selector.get("matchLabels").and_then(Value::as_object)
    } else {
        Some(map)
    };
    for (key, value) in labels.into_iter().flatten() {
        let value = value.as_str().unwrap_or("");
        requirements.push((key.clone(), format!("{key}={value}")));
    }
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    for expression in expressions.into_iter().flatten() {
        let key = expression.get("key").and_then(Value::as_str).unwrap_or("");
        let mut values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        values.sort_unstable();
        values.dedup();
        let set = values.join(",");
        let text = match expression.get("operator").and_then(Value::as_str) {
            Some("In") => format!("{key} in ({set})"),
            Some("NotIn") => format!("{key} notin ({set})"),
            Some("Exists") => key.to_string(),
            Some("DoesNotExist") => format!("!{key}"),
            _ => continue,
        };
        requirements.push((key.to_string(), text));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    requirements
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_print_as_kube_does() {
        let selector = json!({
            "matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": [
                {"key": "c", "operator": "In", "values": ["y", "x"]},
                {"key": "d", "operator": "DoesNotExist"},
            ],
        });
        assert_eq!(selector_string(&selector), "a=1,b=2,c in (x,y),!d");
        assert_eq!(selector_string(&json!({"app": "web"})), "app=web");
    }

    #[test]
    fn negative_replicas_are_invalid() {
        let scale = json!({"kind": "Scale", "spec": {"replicas": -1}});
        let Err(error) = check_scale(&scale, "web") else {
            panic!("accepted");
        };
        assert!(
            error
                .message
                .ends_with("spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
            "{}",
            error.message
        );
    }
}

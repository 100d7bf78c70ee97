//! Server-side field validation (`fieldValidation=Strict`) by the schema table: a field the
//! kind's messages do not have is an error, as kube-apiserver's strict decoding makes it.
//! Kinds outside the table, and fields the table leaves opaque, are not checked.

use serde_json::Value;

use super::schema::{Message, Shape, Ty};
use super::table;
use crate::kinds::Kind;
use crate::status::{ApiError, ApiResult};

/// Fields the JSON has but the protobuf table leaves out (decoding drops them).
fn also_known(message: &Message, name: &str) -> bool {
    message.name == "ObjectMeta" && name == "managedFields"
}

fn field_named<'a>(message: &'a Message, name: &str) -> Option<(&'a Message, Ty, Shape)> {
    for field in message.fields {
        if field.shape == Shape::Inline {
            if let Some(found) = field_inline(field.ty, name) {
                return Some(found);
            }
        } else if field.name == name {
            return Some((message, field.ty, field.shape));
        }
    }
    None
}

fn field_inline(ty: Ty, name: &str) -> Option<(&'static Message, Ty, Shape)> {
    let Ty::Msg(inner) = ty else { return None };
    table::message(inner).and_then(|m| field_named(m, name))
}

fn walk(message: &Message, value: &Value, path: &str, unknown: &mut Vec<String>) {
    let Some(object) = value.as_object() else {
        return;
    };
    for (name, child) in object {
        let at = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let Some((_, ty, shape)) = field_named(message, name) else {
            if !also_known(message, name) {
                unknown.push(at);
            }
            continue;
        };
        let Ty::Msg(inner) = ty else { continue };
        let Some(inner) = table::message(inner) else {
            continue;
        };
        match (shape, child) {
            (Shape::Repeated, Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    walk(inner, item, &format!("{at}[{i}]"), unknown);
                }
            }
            (_, child) => walk(inner, child, &at, unknown),
        }
    }
}

/// The unknown fields of `object` (of `api_version` and `kind`), by JSON path; `None` when
/// the table does not have the kind.
pub fn unknown_fields(api_version: &str, kind: &str, object: &Value) -> Option<Vec<String>> {
    let message = table::top_level(api_version, kind)?;
    let mut unknown = Vec::new();
    if let Some(fields) = object.as_object() {
        let mut rest = fields.clone();
        rest.remove("apiVersion");
        rest.remove("kind");
        walk(message, &Value::Object(rest), "", &mut unknown);
    }
    Some(unknown)
}

/// Applies the request's `fieldValidation`: `Strict` refuses unknown fields with 400, as
/// kube-apiserver does; `Warn` and `Ignore` (and no parameter) let them through.
pub fn check(kind: &Kind, object: &Value, directive: Option<&str>) -> ApiResult<()> {
    if kind.custom.is_some() {
        return crate::crd::strict(kind, object, directive);
    }
    if directive != Some("Strict") {
        return Ok(());
    }
    // Kinds outside the protobuf table are checked by their OpenAPI schemas.
    let unknown = unknown_fields(&kind.api_version(), kind.kind, object)
        .or_else(|| crate::openapi::fields::unknown_fields(kind, object));
    let Some(unknown) = unknown else {
        return Ok(());
    };
    if unknown.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    Err(ApiError::bad_request(format!(
        "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
        listed.join(", "),
        kind = kind.kind,
        version = kind.version,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields_at_any_depth() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "managedFields": [], "bogus": 1},
            "spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": "i", "ports": [{"containerPort": 1, "nope": 2}]},
            ]}}},
            "extra": true,
        });
        let unknown = unknown_fields("apps/v1", "Deployment", &deployment);
        assert_eq!(
            unknown,
            Some(vec![
                "extra".to_string(),
                "metadata.bogus".to_string(),
                "spec.template.spec.containers[0].ports[0].nope".to_string(),
            ])
        );
    }

    #[test]
    fn inlined_fields_are_known() {
        let cm = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
        assert_eq!(unknown_fields("v1", "Secret", &cm), Some(vec![]));
        let pod_env = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template":
            {"spec": {"containers": [{"env": [{"name": "a", "valueFrom":
            {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}]}}}});
        assert_eq!(
            unknown_fields("apps/v1", "Deployment", &pod_env),
            Some(vec![])
        );
        assert_eq!(unknown_fields("v1", "Pod", &pod_env), None);
    }
}

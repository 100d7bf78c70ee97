//! The Forbidden error plugins refuse with, naming the object as kube's `admission.NewForbidden`
//! does: its name, else its `generateName` (names are not generated yet), else `Unknown`.

use serde_json::Value;

use super::Attributes;
use crate::status::ApiError;

/// `<resource> "<name>" is forbidden: <why>` about the object `attributes` write.
pub fn forbidden(attributes: &Attributes<'_>, object: Option<&Value>, why: &str) -> ApiError {
    let meta = |field: &str| {
        object
            .and_then(|o| o.pointer(&format!("/metadata/{field}")))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let name = meta("name")
        .or_else(|| meta("generateName"))
        .or_else(|| (!attributes.name.is_empty()).then_some(attributes.name))
        .unwrap_or("Unknown");
    ApiError::forbidden(attributes.kind.group, attributes.kind.plural, name, why)
}

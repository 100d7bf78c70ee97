//! What the printers share: reading fields, kube's `<none>`, ages, label selectors and the
//! containers and images of a pod template.

use serde_json::{Value, json};

/// The string at `pointer`, empty when missing.
pub fn s<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The integer at `pointer`, 0 when missing.
pub fn i(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The array at `pointer`, empty when missing.
pub fn list<'a>(object: &'a Value, pointer: &str) -> &'a [Value] {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `text`, or `<none>` when empty.
pub fn or_none(text: impl Into<String>) -> Value {
    let text = text.into();
    if text.is_empty() {
        json!("<none>")
    } else {
        json!(text)
    }
}

/// The human age of the timestamp at `pointer` (`<unknown>` without one).
pub fn age_at(object: &Value, pointer: &str) -> String {
    let at = object
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    match at {
        Some(t) => crate::table::human_age(
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds(),
        ),
        None => "<unknown>".into(),
    }
}

/// The object's age.
pub fn age(object: &Value) -> Value {
    json!(age_at(object, "/metadata/creationTimestamp"))
}

/// The object's name.
pub fn name(object: &Value) -> Value {
    json!(s(object, "/metadata/name"))
}

/// A selector (LabelSelector or map) as kube prints it, `<none>` when empty.
pub fn selector(object: &Value, pointer: &str) -> Value {
    or_none(
        object
            .pointer(pointer)
            .map(crate::subresources::selector_string)
            .unwrap_or_default(),
    )
}

/// A `k=v` map, sorted, comma-joined; `<none>` when empty.
pub fn label_map(object: &Value, pointer: &str) -> Value {
    let mut pairs: Vec<String> = object
        .pointer(pointer)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    or_none(pairs.join(","))
}

/// The containers' names and images of the pod spec at `pointer`.
pub fn containers(object: &Value, pointer: &str) -> (Value, Value) {
    let all = list(object, &format!("{pointer}/containers"));
    let names: Vec<&str> = all.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = all.iter().map(|c| s(c, "/image")).collect();
    (or_none(names.join(",")), or_none(images.join(",")))
}

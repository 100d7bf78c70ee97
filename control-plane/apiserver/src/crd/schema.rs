//! Validation of custom objects against a structural schema, with the messages
//! kube-apiserver's OpenAPI validator gives (`spec.size in body must be of type integer:
//! "string"`, `Required value`, `should be greater than or equal to 1`...).

use serde_json::{Map, Value};

use super::field::{self, child, index};
use crate::status::Cause;

/// The causes `value` (at `path`, `""` for the object) breaks `schema` with.
pub fn validate(schema: &Value, value: &Value, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    check(schema, value, path, path.is_empty(), &mut causes);
    causes
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn matches_type(ty: &str, value: &Value) -> bool {
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => is_integer(value),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

/// `spec.size in body`, the subject of kube-openapi's messages.
fn in_body(path: &str) -> String {
    if path.is_empty() {
        "body".to_string()
    } else {
        format!("{path} in body")
    }
}

fn check(schema: &Value, value: &Value, path: &str, root: bool, out: &mut Vec<Cause>) {
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    if value.is_null() && (flag(schema, "nullable") || (ty.is_empty() && !root)) {
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !value.is_string() && !is_integer(value) {
            let actual = type_name(value);
            out.push(field::type_invalid(
                path,
                actual,
                &format!(
                    "{} must be of type integer or string: \"{actual}\"",
                    in_body(path)
                ),
            ));
            return;
        }
    } else if !ty.is_empty() && !matches_type(ty, value) {
        let actual = type_name(value);
        out.push(field::type_invalid(
            path,
            actual,
            &format!("{} must be of type {ty}: \"{actual}\"", in_body(path)),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            out.push(field::not_supported(path, value, allowed));
        }
    }
    match value {
        Value::String(text) => check_string(schema, text, value, path, out),
        Value::Number(_) => check_number(schema, value, path, out),
        Value::Array(items) => check_array(schema, items, value, path, out),
        Value::Object(map) => check_object(schema, map, path, root, out),
        _ => {}
    }
    for nested in ["allOf", "anyOf", "oneOf"] {
        let Some(schemas) = schema.get(nested).and_then(Value::as_array) else {
            continue;
        };
        let results: Vec<Vec<Cause>> = schemas
            .iter()
            .map(|s| {
                let mut c = Vec::new();
                check(s, value, path, root, &mut c);
                c
            })
            .collect();
        let passing = results.iter().filter(|c| c.is_empty()).count();
        match nested {
            "allOf" => out.extend(results.into_iter().flatten()),
            "anyOf" if passing == 0 => out.push(field::invalid(
                path,
                value,
                &format!(
                    "{} must validate at least one schema (anyOf)",
                    in_body(path)
                ),
            )),
            "oneOf" if passing != 1 => out.push(field::invalid(
                path,
                value,
                &format!(
                    "{} must validate one and only one schema (oneOf)",
                    in_body(path)
                ),
            )),
            _ => {}
        }
    }
    if let Some(not) = schema.get("not") {
        let mut c = Vec::new();
        check(not, value, path, root, &mut c);
        if c.is_empty() {
            out.push(field::invalid(
                path,
                value,
                &format!("{} must not validate the schema (not)", in_body(path)),
            ));
        }
    }
}

fn check_string(schema: &Value, text: &str, value: &Value, path: &str, out: &mut Vec<Cause>) {
    let length = text.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if length > max {
            out.push(field::too_long(path, max));
        }
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if length < min {
            out.push(field::invalid(
                path,
                value,
                &format!("{} should be at least {min} chars long", in_body(path)),
            ));
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        // The definition's patterns were compiled when it was accepted.
        if super::format::pattern(pattern).is_some_and(|re| !re.is_match(text)) {
            out.push(field::invalid(
                path,
                value,
                &format!("{} should match '{pattern}'", in_body(path)),
            ));
        }
    }
    if let Some(format) = schema.get("format").and_then(Value::as_str) {
        if !super::format::matches(format, text) {
            out.push(field::invalid(
                path,
                value,
                &format!("{} must be of type {format}: {}", in_body(path), value),
            ));
        }
    }
}

fn check_number(schema: &Value, value: &Value, path: &str, out: &mut Vec<Cause>) {
    let Some(n) = value.as_f64() else { return };
    let bound = |name: &str| schema.get(name).and_then(Value::as_f64);
    let says = |what: &str| format!("{} should be {what}", in_body(path));
    if let Some(min) = bound("minimum") {
        if flag(schema, "exclusiveMinimum") && n <= min {
            out.push(field::invalid(
                path,
                value,
                &says(&format!("greater than {}", field::number(min))),
            ));
        } else if n < min {
            out.push(field::invalid(
                path,
                value,
                &says(&format!("greater than or equal to {}", field::number(min))),
            ));
        }
    }
    if let Some(max) = bound("maximum") {
        if flag(schema, "exclusiveMaximum") && n >= max {
            out.push(field::invalid(
                path,
                value,
                &says(&format!("less than {}", field::number(max))),
            ));
        } else if n > max {
            out.push(field::invalid(
                path,
                value,
                &says(&format!("less than or equal to {}", field::number(max))),
            ));
        }
    }
    if let Some(step) = bound("multipleOf").filter(|s| *s > 0.0) {
        let ratio = n / step;
        if (ratio - ratio.round()).abs() > 1e-9 {
            out.push(field::invalid(
                path,
                value,
                &says(&format!("a multiple of {}", field::number(step))),
            ));
        }
    }
    let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
    let fits = match format {
        "int32" => value.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
        "int64" => value.as_i64().is_some(),
        _ => true,
    };
    if !fits {
        out.push(field::invalid(
            path,
            value,
            &format!(
                "{} must be of type {format}: {}",
                in_body(path),
                field::show(value)
            ),
        ));
    }
}

fn check_array(schema: &Value, items: &[Value], value: &Value, path: &str, out: &mut Vec<Cause>) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
        if items.len() as u64 > max {
            out.push(field::too_many(path, items.len(), max));
        }
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
        if (items.len() as u64) < min {
            out.push(field::invalid(
                path,
                &Value::from(items.len()),
                &format!("{} should have at least {min} items", in_body(path)),
            ));
        }
    }
    if flag(schema, "uniqueItems") {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                out.push(field::invalid(
                    path,
                    value,
                    &format!("{} shouldn't contain duplicates", in_body(path)),
                ));
                break;
            }
        }
    }
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &index(path, i), false, out);
        }
    }
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    out.push(field::duplicate(&index(path, i), &field::show(item)));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key_of = |item: &Value| -> Vec<Value> {
                keys.iter()
                    .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
                    .collect()
            };
            for (i, item) in items.iter().enumerate() {
                let mine = key_of(item);
                if items[..i].iter().any(|other| key_of(other) == mine) {
                    let shown: Vec<String> = keys
                        .iter()
                        .zip(&mine)
                        .map(|(k, v)| format!("\"{k}\":{}", field::show(v)))
                        .collect();
                    out.push(field::duplicate(
                        &index(path, i),
                        &format!("map[string]interface {{}}{{{}}}", shown.join(", ")),
                    ));
                }
            }
        }
        _ => {}
    }
}

fn check_object(
    schema: &Value,
    map: &Map<String, Value>,
    path: &str,
    root: bool,
    out: &mut Vec<Cause>,
) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if map.get(name).is_none_or(Value::is_null) {
                out.push(field::required(&child(path, name), ""));
            }
        }
    }
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
        if map.len() as u64 > max {
            out.push(field::too_many(path, map.len(), max));
        }
    }
    if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
        if (map.len() as u64) < min {
            out.push(field::invalid(
                path,
                &Value::from(map.len()),
                &format!("{} should have at least {min} properties", in_body(path)),
            ));
        }
    }
    if flag(schema, "x-kubernetes-embedded-resource") {
        for name in ["apiVersion", "kind"] {
            if map
                .get(name)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                out.push(field::required(&child(path, name), "must not be empty"));
            }
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (name, child_value) in map {
        // The object's own type and metadata are checked by the generic machinery.
        if root && matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let at = child(path, name);
        match (properties.and_then(|p| p.get(name)), additional) {
            (Some(property), _) => check(property, child_value, &at, false, out),
            (None, Some(values)) => check(values, child_value, &at, false, out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(schema: &Value, value: &Value) -> Vec<String> {
        validate(schema, value, "")
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn messages_are_upstreams() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
        "required": ["replicas"],
        "properties": {
            "replicas": {"type": "integer", "minimum": 1, "maximum": 10},
            "size": {"type": "integer"},
            "color": {"type": "string", "enum": ["red", "blue"]},
            "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
            "email": {"type": "string", "format": "email"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2,
                     "x-kubernetes-list-type": "set"},
            "port": {"x-kubernetes-int-or-string": true},
        }}}});
        let bad = json!({"spec": {"size": "big", "color": "pink", "name": "ABCDEFG",
            "email": "nope", "tags": ["a", "a", "b"], "port": true}});
        assert_eq!(
            messages(&schema, &bad),
            vec![
                "spec.replicas: Required value",
                "spec.color: Unsupported value: \"pink\": supported values: \"red\", \"blue\"",
                "spec.email: Invalid value: \"nope\": spec.email in body must be of type email: \"nope\"",
                "spec.name: Too long: may not be more than 5 bytes",
                "spec.name: Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'",
                "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer or string: \"boolean\"",
                "spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\"",
                "spec.tags: Too many: 3: must have at most 2 items",
                "spec.tags[1]: Duplicate value: \"a\"",
            ]
        );
        let low = json!({"spec": {"replicas": 0, "port": "http"}});
        assert_eq!(
            messages(&schema, &low),
            vec![
                "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"
            ]
        );
        assert!(messages(&schema, &json!({"spec": {"replicas": 3, "port": 8080}})).is_empty());
    }

    #[test]
    fn nullable_embedded_and_map_lists() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "note": {"type": "string", "nullable": true},
            "name": {"type": "string"},
            "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                         "x-kubernetes-preserve-unknown-fields": true},
            "ports": {"type": "array", "x-kubernetes-list-type": "map",
                      "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        }}}});
        let object = json!({"spec": {"note": null, "name": null, "template": {"metadata": {}},
                            "ports": [{"name": "http"}, {"name": "http"}]}});
        assert_eq!(
            messages(&schema, &object),
            vec![
                "spec.name: Invalid value: \"null\": spec.name in body must be of type string: \"null\"",
                "spec.ports[1]: Duplicate value: map[string]interface {}{\"name\":\"http\"}",
                "spec.template.apiVersion: Required value: must not be empty",
                "spec.template.kind: Required value: must not be empty",
            ]
        );
    }
}

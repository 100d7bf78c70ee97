//! ConfigMaps and Secrets: key names, the 1 MiB limit, Secrets' `stringData` folded into
//! `data` and their `Opaque` default type, and `immutable` honoured, as upstream.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::status::Cause;

/// Upstream's MaxSecretSize, which ConfigMaps share.
const MAX_SIZE: usize = 1024 * 1024;

const KEY_MESSAGE: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// Secrets: `stringData` merged over `data` (base64), and the type defaulted.
pub fn prepare_secret(object: &mut Value) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(strings)) = map.remove("stringData") {
        let data = map
            .entry("data")
            .or_insert_with(|| Value::Object(Map::new()));
        if !data.is_object() {
            *data = Value::Object(Map::new());
        }
        if let Some(data) = data.as_object_mut() {
            for (key, value) in strings {
                let text = value.as_str().unwrap_or("").to_string();
                data.insert(key, json!(STANDARD.encode(text)));
            }
        }
    }
    if map
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        map.insert("type".into(), json!("Opaque"));
    }
}

fn check_key(field: &str, key: &str) -> Vec<Cause> {
    let at = format!("{field}[{key}]");
    let mut causes = Vec::new();
    if key.len() > 253 {
        causes.push(Cause::invalid(
            &at,
            key,
            "must be no more than 253 characters",
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if key.is_empty() || !key.chars().all(allowed) {
        causes.push(Cause::invalid(&at, key, KEY_MESSAGE));
    }
    if key == "." || key == ".." {
        causes.push(Cause::invalid(&at, key, &format!("must not be '{key}'")));
    } else if key.starts_with("..") {
        causes.push(Cause::invalid(&at, key, "must not start with '..'"));
    }
    causes
}

/// Key names, duplicates between `data` and `binaryData`, base64 of Secret values, and size.
pub fn check(object: &Value, secret: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    let mut size = 0usize;
    let fields: &[&str] = if secret {
        &["data"]
    } else {
        &["data", "binaryData"]
    };
    for field in fields {
        let Some(map) = object.get(*field).and_then(Value::as_object) else {
            continue;
        };
        for (key, value) in map {
            causes.extend(check_key(field, key));
            if seen.contains(&key.as_str()) {
                causes.push(Cause {
                    reason: "FieldValueDuplicate".into(),
                    message: format!("Duplicate value: {}", json!(key)),
                    field: format!("{field}[{key}]"),
                });
            }
            seen.push(key);
            let text = value.as_str().unwrap_or("");
            size += if secret || *field == "binaryData" {
                STANDARD.decode(text).map(|b| b.len()).unwrap_or(text.len())
            } else {
                text.len()
            };
        }
    }
    if size > MAX_SIZE {
        causes.push(Cause {
            reason: "FieldValueTooLong".into(),
            message: format!("Too long: may not be more than {MAX_SIZE} bytes"),
            field: "[]".into(),
        });
    }
    causes
}

/// What an update of an `immutable` ConfigMap or Secret may not do.
pub fn check_update(new: &Value, old: &Value, secret: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    // A Secret's type never changes, immutable or not (upstream's ValidateSecretUpdate).
    if secret && new.get("type") != old.get("type") && old.get("type").is_some() {
        let shown = json!(new.get("type").and_then(Value::as_str).unwrap_or(""));
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {shown}: field is immutable"),
            field: "type".into(),
        });
    }
    if old.get("immutable") != Some(&json!(true)) {
        return causes;
    }
    let forbidden = |field: &str| Cause {
        reason: "FieldValueForbidden".into(),
        message: "Forbidden: field is immutable when `immutable` is set".into(),
        field: field.into(),
    };
    if new.get("immutable") != Some(&json!(true)) {
        causes.push(forbidden("immutable"));
    }
    for field in ["data", "binaryData"] {
        if new.get(field) != old.get(field) {
            causes.push(forbidden(field));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_string_data_follow_upstream() {
        let bad = json!({"data": {"a b": "x", "ok.key": "y"}});
        let causes = check(&bad, false);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "data[a b]");
        let mut secret = json!({"stringData": {"user": "admin"}});
        prepare_secret(&mut secret);
        assert_eq!(
            secret,
            json!({"data": {"user": "YWRtaW4="}, "type": "Opaque"})
        );
        let big = json!({"data": {"k": "x".repeat(MAX_SIZE + 1)}});
        assert_eq!(check(&big, false)[0].field, "[]");
    }
}

//! Field errors as kube's `field.Error` prints them (`Invalid value: "x": ...`,
//! `Unsupported value`, `Duplicate value`, `Too long`...), for the causes of `Invalid`.

use serde_json::Value;

use crate::status::Cause;

/// A value as Go's `%v`/`%q` show it in field errors: strings quoted, whole floats without a
/// fraction, anything else as JSON.
pub fn show(value: &Value) -> String {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A number as Go's `%v` prints a float64.
pub fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause {
        reason: reason.into(),
        message,
        field: field.into(),
    }
}

/// `Required value` (with `: detail` when there is one).
pub fn required(field: &str, detail: &str) -> Cause {
    let message = if detail.is_empty() {
        "Required value".to_string()
    } else {
        format!("Required value: {detail}")
    };
    cause("FieldValueRequired", field, message)
}

/// `Invalid value: <value>: detail`.
pub fn invalid(field: &str, value: &Value, detail: &str) -> Cause {
    cause(
        "FieldValueInvalid",
        field,
        format!("Invalid value: {}: {detail}", show(value)),
    )
}

/// `Invalid value: "<type>": detail`, kube's TypeInvalid.
pub fn type_invalid(field: &str, actual: &str, detail: &str) -> Cause {
    cause(
        "FieldValueTypeInvalid",
        field,
        format!("Invalid value: \"{actual}\": {detail}"),
    )
}

/// `Forbidden: detail`.
pub fn forbidden(field: &str, detail: &str) -> Cause {
    cause("FieldValueForbidden", field, format!("Forbidden: {detail}"))
}

/// `Unsupported value: <value>: supported values: "a", "b"`.
pub fn not_supported(field: &str, value: &Value, supported: &[Value]) -> Cause {
    let listed: Vec<String> = supported.iter().map(show).collect();
    cause(
        "FieldValueNotSupported",
        field,
        format!(
            "Unsupported value: {}: supported values: {}",
            show(value),
            listed.join(", ")
        ),
    )
}

/// `Duplicate value: <value>`.
pub fn duplicate(field: &str, shown: &str) -> Cause {
    cause(
        "FieldValueDuplicate",
        field,
        format!("Duplicate value: {shown}"),
    )
}

/// `Too long: may not be more than N bytes`.
pub fn too_long(field: &str, max: u64) -> Cause {
    cause(
        "FieldValueTooLong",
        field,
        format!("Too long: may not be more than {max} bytes"),
    )
}

/// `Too many: N: must have at most M items`.
pub fn too_many(field: &str, actual: usize, max: u64) -> Cause {
    cause(
        "FieldValueTooMany",
        field,
        format!("Too many: {actual}: must have at most {max} items"),
    )
}

/// `a.b`, or `b` at the root.
pub fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// `a[i]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// `a[key]`, as kube's `Key` paths print.
pub fn key(path: &str, key: &str) -> String {
    format!("{path}[{key}]")
}

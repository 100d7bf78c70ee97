//! Decodes a message's bytes into JSON by the schema table: the same JSON a client sending
//! JSON would have sent. Fields the table does not know are skipped, as protobuf readers do.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use super::schema::{Field, Message, Shape, Ty};
use super::table;
use super::wire::{self, Reader, Wire};

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes are not a valid encoding of the message (400).
    Malformed(String),
    /// The message sets a field this server does not decode from protobuf (415).
    Unsupported(String),
}

fn malformed(path: &str, why: impl std::fmt::Display) -> DecodeError {
    DecodeError::Malformed(format!("{path}: {why}"))
}

/// Decodes `bytes` as `message`; `path` names it in errors (e.g. `ConfigMap`).
pub fn message(
    message: &Message,
    bytes: &[u8],
    path: &str,
) -> Result<Map<String, Value>, DecodeError> {
    let mut object = Map::new();
    let mut reader = Reader::new(bytes);
    while let Some((number, value)) = reader.next_field().map_err(|e| malformed(path, e))? {
        let Some(field) = message.field(number) else {
            tracing::trace!(
                message = message.name,
                number,
                "skipping unknown protobuf field"
            );
            continue;
        };
        let at = format!("{path}.{}", field.name);
        match field.shape {
            Shape::Inline => {
                let Ty::Msg(name) = field.ty else {
                    return Err(malformed(&at, "inline field of a non-message type"));
                };
                let inner = nested(name, bytes_of(value, &at)?, &at)?;
                object.extend(inner);
            }
            Shape::Repeated => {
                let values = repeated(field, value, &at)?;
                let slot = object
                    .entry(field.name)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(items) = slot {
                    items.extend(values);
                }
            }
            Shape::Single | Shape::Kept => match field.ty {
                Ty::Map(value_ty) => {
                    let (key, entry) = map_entry(value_ty, value, &at)?;
                    let slot = object
                        .entry(field.name)
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Value::Object(entries) = slot {
                        entries.insert(key, entry);
                    }
                }
                ty => {
                    let decoded = single(ty, value, &at)?;
                    // The Go marshaller writes non-pointer scalars even when zero; the JSON
                    // would have left them out (omitempty).
                    if field.shape == Shape::Single && is_zero_scalar(ty, &decoded) {
                        object.remove(field.name);
                    } else {
                        object.insert(field.name.into(), decoded);
                    }
                }
            },
        }
    }
    Ok(object)
}

fn is_zero_scalar(ty: Ty, value: &Value) -> bool {
    match ty {
        Ty::Str => value.as_str() == Some(""),
        Ty::Bool => value.as_bool() == Some(false),
        Ty::I32 | Ty::I64 => value.as_i64() == Some(0),
        Ty::Time => value.is_null(),
        _ => false,
    }
}

fn nested(name: &str, bytes: &[u8], path: &str) -> Result<Map<String, Value>, DecodeError> {
    let Some(inner) = table::message(name) else {
        return Err(malformed(path, format!("no schema for message {name}")));
    };
    message(inner, bytes, path)
}

fn bytes_of<'a>(value: Wire<'a>, path: &str) -> Result<&'a [u8], DecodeError> {
    match value {
        Wire::Bytes(bytes) => Ok(bytes),
        other => Err(malformed(
            path,
            format!("expected a length-delimited value, got {}", other.name()),
        )),
    }
}

fn varint(value: Wire<'_>, path: &str) -> Result<u64, DecodeError> {
    match value {
        Wire::Varint(v) => Ok(v),
        other => Err(malformed(
            path,
            format!("expected a varint, got {}", other.name()),
        )),
    }
}

fn scalar_from_varint(ty: Ty, raw: u64, path: &str) -> Result<Value, DecodeError> {
    Ok(match ty {
        Ty::Bool => Value::Bool(raw != 0),
        // int32 is sign-extended to 64 bits on the wire; the low 32 bits are the value.
        Ty::I32 => Value::from(raw as u32 as i32),
        Ty::I64 => Value::from(raw as i64),
        _ => return Err(malformed(path, "not a varint field")),
    })
}

fn string(bytes: &[u8], path: &str) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed(path, "string is not valid UTF-8"))
}

/// One value of a non-repeated field (or one element of a repeated one).
fn single(ty: Ty, value: Wire<'_>, path: &str) -> Result<Value, DecodeError> {
    match ty {
        Ty::Str => Ok(Value::String(string(bytes_of(value, path)?, path)?)),
        Ty::Bytes => Ok(Value::String(STANDARD.encode(bytes_of(value, path)?))),
        Ty::Bool | Ty::I32 | Ty::I64 => scalar_from_varint(ty, varint(value, path)?, path),
        Ty::Msg(name) => Ok(Value::Object(nested(name, bytes_of(value, path)?, path)?)),
        Ty::Quantity => quantity(bytes_of(value, path)?, path),
        Ty::IntOrString => int_or_string(bytes_of(value, path)?, path),
        Ty::Time => time(bytes_of(value, path)?, path),
        Ty::Map(_) => Err(malformed(path, "a map inside a repeated field")),
        Ty::Opaque => Err(DecodeError::Unsupported(format!(
            "{path} is not decoded from protobuf by this server"
        ))),
    }
}

/// The elements one occurrence of a repeated field carries: one, or several when packed.
fn repeated(field: &Field, value: Wire<'_>, path: &str) -> Result<Vec<Value>, DecodeError> {
    let numeric = matches!(field.ty, Ty::Bool | Ty::I32 | Ty::I64);
    match value {
        Wire::Bytes(packed) if numeric => wire::packed_varints(packed)
            .map_err(|e| malformed(path, e))?
            .into_iter()
            .map(|raw| scalar_from_varint(field.ty, raw, path))
            .collect(),
        other => Ok(vec![single(field.ty, other, path)?]),
    }
}

/// One entry of a map field: key as field 1 and value as field 2; either may be absent
/// (protobuf's default: empty key, zero value).
fn map_entry(value_ty: &Ty, value: Wire<'_>, path: &str) -> Result<(String, Value), DecodeError> {
    let mut reader = Reader::new(bytes_of(value, path)?);
    let mut key = String::new();
    let mut entry = None;
    while let Some((number, wire)) = reader.next_field().map_err(|e| malformed(path, e))? {
        match number {
            1 => key = string(bytes_of(wire, path)?, path)?,
            2 => entry = Some(single(*value_ty, wire, &format!("{path}[{key}]"))?),
            _ => {}
        }
    }
    let entry = match entry {
        Some(entry) => entry,
        None => match value_ty {
            Ty::Str | Ty::Bytes => Value::String(String::new()),
            Ty::Quantity => Value::String("0".into()),
            other => single(*other, Wire::Bytes(&[]), path)?,
        },
    };
    Ok((key, entry))
}

/// `resource.Quantity`: field 1 is its canonical string.
fn quantity(bytes: &[u8], path: &str) -> Result<Value, DecodeError> {
    let mut reader = Reader::new(bytes);
    let mut text = String::from("0");
    while let Some((number, wire)) = reader.next_field().map_err(|e| malformed(path, e))? {
        if number == 1 {
            text = string(bytes_of(wire, path)?, path)?;
        }
    }
    Ok(Value::String(text))
}

/// `intstr.IntOrString`: type 0 is intVal, type 1 strVal.
fn int_or_string(bytes: &[u8], path: &str) -> Result<Value, DecodeError> {
    let mut reader = Reader::new(bytes);
    let (mut kind, mut int, mut text) = (0, 0i32, String::new());
    while let Some((number, wire)) = reader.next_field().map_err(|e| malformed(path, e))? {
        match number {
            1 => kind = varint(wire, path)? as i64,
            2 => int = varint(wire, path)? as u32 as i32,
            3 => text = string(bytes_of(wire, path)?, path)?,
            _ => {}
        }
    }
    match kind {
        0 => Ok(Value::from(int)),
        1 => Ok(Value::String(text)),
        other => Err(malformed(
            path,
            format!("IntOrString of unknown type {other}"),
        )),
    }
}

/// `metav1.Time`: seconds and nanos; an empty message is the zero time, `null` in JSON.
fn time(bytes: &[u8], path: &str) -> Result<Value, DecodeError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let mut reader = Reader::new(bytes);
    let (mut seconds, mut nanos) = (0i64, 0u32);
    while let Some((number, wire)) = reader.next_field().map_err(|e| malformed(path, e))? {
        match number {
            1 => seconds = varint(wire, path)? as i64,
            2 => nanos = varint(wire, path)? as u32,
            _ => {}
        }
    }
    let Some(at) = chrono::DateTime::from_timestamp(seconds, nanos) else {
        return Err(malformed(
            path,
            format!("time {seconds}s {nanos}ns out of range"),
        ));
    };
    // Time is second-precise in JSON; MicroTime's sub-seconds are kept when there are any.
    let format = if nanos == 0 {
        chrono::SecondsFormat::Secs
    } else {
        chrono::SecondsFormat::Micros
    };
    Ok(Value::String(at.to_rfc3339_opts(format, true)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::encoding::{WireType, encode_key, encode_varint};
    use serde_json::json;

    fn varint_field(number: u32, value: u64, out: &mut Vec<u8>) {
        encode_key(number, WireType::Varint, out);
        encode_varint(value, out);
    }

    fn bytes_field(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
        encode_key(number, WireType::LengthDelimited, out);
        encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn entry(key: &str, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        bytes_field(1, key.as_bytes(), &mut out);
        bytes_field(2, value, &mut out);
        out
    }

    fn decode(name: &str, bytes: &[u8]) -> Result<Value, DecodeError> {
        let Some(schema) = table::message(name) else {
            panic!("{name} missing")
        };
        message(schema, bytes, name).map(Value::Object)
    }

    #[test]
    fn nested_messages_maps_and_zero_values() {
        let mut meta = Vec::new();
        bytes_field(1, b"cm", &mut meta);
        bytes_field(2, b"", &mut meta); // an empty generateName, left out as JSON would
        bytes_field(8, b"", &mut meta); // the zero creationTimestamp
        bytes_field(11, &entry("app", b"web"), &mut meta);
        bytes_field(11, &entry("tier", b""), &mut meta);
        let mut cm = Vec::new();
        bytes_field(1, &meta, &mut cm);
        bytes_field(2, &entry("k", b"v"), &mut cm);
        bytes_field(3, &entry("bin", &[0, 1, 2]), &mut cm);
        varint_field(4, 0, &mut cm); // immutable: a pointer, kept when false
        assert_eq!(
            decode("ConfigMap", &cm),
            Ok(json!({
                "metadata": {"name": "cm", "labels": {"app": "web", "tier": ""}},
                "data": {"k": "v"},
                "binaryData": {"bin": "AAEC"},
                "immutable": false,
            }))
        );
    }

    #[test]
    fn repeated_fields_packed_or_not() {
        let mut rule = Vec::new();
        bytes_field(1, b"get", &mut rule);
        bytes_field(1, b"list", &mut rule);
        assert_eq!(
            decode("PolicyRule", &rule),
            Ok(json!({"verbs": ["get", "list"]}))
        );
        // No repeated numeric field in the table; exercise both encodings on a stand-in.
        let field = super::super::schema::r(1, "n", Ty::I64);
        let packed = repeated(&field, Wire::Bytes(&[1, 0x96, 0x01]), "x");
        assert_eq!(packed, Ok(vec![json!(1), json!(150)]));
        assert_eq!(repeated(&field, Wire::Varint(7), "x"), Ok(vec![json!(7)]));
    }

    #[test]
    fn int_or_string_quantity_time_and_negative_int32() {
        let mut port = Vec::new();
        varint_field(3, 80, &mut port);
        let mut target = Vec::new();
        varint_field(1, 1, &mut target);
        bytes_field(3, b"http", &mut target);
        bytes_field(4, &target, &mut port);
        assert_eq!(
            decode("ServicePort", &port),
            Ok(json!({"port": 80, "targetPort": "http"}))
        );
        let mut spec = Vec::new();
        // replicas -1: int32 is sign-extended to ten bytes.
        varint_field(1, (-1i64) as u64, &mut spec);
        assert_eq!(decode("DeploymentSpec", &spec), Ok(json!({"replicas": -1})));

        let mut quantity = Vec::new();
        bytes_field(1, b"500m", &mut quantity);
        let mut limits = Vec::new();
        bytes_field(1, &entry("cpu", &quantity), &mut limits);
        assert_eq!(
            decode("ResourceRequirements", &limits),
            Ok(json!({"limits": {"cpu": "500m"}}))
        );

        let mut time = Vec::new();
        varint_field(1, 1_700_000_000, &mut time);
        let mut status = Vec::new();
        bytes_field(2, &time, &mut status);
        assert_eq!(
            decode("JobStatus", &status),
            Ok(json!({"startTime": "2023-11-14T22:13:20Z"}))
        );
    }

    #[test]
    fn unknown_fields_are_skipped_of_every_wire_type() {
        let mut meta = Vec::new();
        varint_field(900, 5, &mut meta);
        bytes_field(17, b"\x0a\x01x", &mut meta); // managedFields: dropped
        encode_key(901, WireType::SixtyFourBit, &mut meta);
        meta.extend_from_slice(&[0; 8]);
        encode_key(902, WireType::ThirtyTwoBit, &mut meta);
        meta.extend_from_slice(&[0; 4]);
        bytes_field(1, b"n", &mut meta);
        assert_eq!(decode("ObjectMeta", &meta), Ok(json!({"name": "n"})));
    }

    #[test]
    fn inline_fields_merge_into_the_parent() {
        let mut reference = Vec::new();
        bytes_field(1, b"cm", &mut reference);
        let mut selector = Vec::new();
        bytes_field(1, &reference, &mut selector);
        bytes_field(2, b"key", &mut selector);
        assert_eq!(
            decode("ConfigMapKeySelector", &selector),
            Ok(json!({"name": "cm", "key": "key"}))
        );
    }

    #[test]
    fn malformed_and_unsupported_are_told_apart() {
        let mut wrong_type = Vec::new();
        varint_field(1, 3, &mut wrong_type); // ObjectMeta.name as a varint
        assert!(matches!(
            decode("ObjectMeta", &wrong_type),
            Err(DecodeError::Malformed(m)) if m.contains("ObjectMeta.name")
        ));
        let mut bad_utf8 = Vec::new();
        bytes_field(1, &[0xff, 0xfe], &mut bad_utf8);
        assert!(matches!(
            decode("ObjectMeta", &bad_utf8),
            Err(DecodeError::Malformed(_))
        ));
        let mut ephemeral = Vec::new();
        bytes_field(34, b"", &mut ephemeral);
        assert!(matches!(
            decode("PodSpec", &ephemeral),
            Err(DecodeError::Unsupported(m)) if m.contains("PodSpec.ephemeralContainers")
        ));
    }

    #[test]
    fn pod_template_security_contexts_and_volumes_decode() {
        // What a stored template carries once defaulted: `securityContext: {}` and volumes.
        let mut empty_dir = Vec::new();
        bytes_field(1, b"Memory", &mut empty_dir);
        let mut source = Vec::new();
        bytes_field(2, &empty_dir, &mut source);
        let mut volume = Vec::new();
        bytes_field(1, b"scratch", &mut volume);
        bytes_field(2, &source, &mut volume); // the inlined VolumeSource
        let mut security = Vec::new();
        varint_field(2, 1000, &mut security);
        let mut spec = Vec::new();
        bytes_field(1, &volume, &mut spec);
        bytes_field(14, &security, &mut spec);
        assert_eq!(
            decode("PodSpec", &spec),
            Ok(json!({
                "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
                "securityContext": {"runAsUser": 1000},
            }))
        );
        assert_eq!(
            decode("PodSpec", &{
                let mut only = Vec::new();
                bytes_field(14, b"", &mut only);
                only
            }),
            Ok(json!({"securityContext": {}}))
        );
    }
}

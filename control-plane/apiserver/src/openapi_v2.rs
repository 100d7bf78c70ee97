//! OpenAPI v2 (`/openapi/v2`) as gnostic protobuf (`openapi_v2.Document`), the form kubectl
//! asks for: kubectl 1.27 reads it for `explain` (without OpenAPI v3) and before `apply -f`,
//! `create -f` and `replace -f`, and stops when it cannot parse it. The JSON document is built
//! by [`crate::openapi`]; this encodes it, field by field of gnostic's `OpenAPIv2.proto`.
//! Vendor extensions travel as YAML text; JSON is YAML, so their JSON is sent.

use prost::encoding::{WireType, encode_key, encode_varint};
use serde_json::{Map, Value};

/// The media type kubectl asks for.
pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The same with a dot for the `@`, which kube-apiserver also accepts.
pub const PROTOBUF_DOTTED: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The Content-Type of the answer: Go's media type parser refuses the `@` of [`PROTOBUF`], so
/// kube-apiserver answers with a dot there, and so does this.
pub const PROTOBUF_RESPONSE: &str = PROTOBUF_DOTTED;

fn bytes_field(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn string_field(number: u32, value: Option<&Value>, out: &mut Vec<u8>) {
    if let Some(Value::String(s)) = value {
        bytes_field(number, s.as_bytes(), out);
    }
}

fn varint_field(number: u32, value: u64, out: &mut Vec<u8>) {
    encode_key(number, WireType::Varint, out);
    encode_varint(value, out);
}

fn double_field(number: u32, value: Option<&Value>, out: &mut Vec<u8>) {
    if let Some(v) = value.and_then(Value::as_f64) {
        encode_key(number, WireType::SixtyFourBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn int_field(number: u32, value: Option<&Value>, out: &mut Vec<u8>) {
    if let Some(v) = value.and_then(Value::as_i64) {
        // proto3 int64: two's complement as a varint.
        varint_field(number, v as u64, out);
    }
}

fn bool_field(number: u32, value: Option<&Value>, out: &mut Vec<u8>) {
    if value.and_then(Value::as_bool) == Some(true) {
        varint_field(number, 1, out);
    }
}

/// gnostic's `Any`: the value as YAML (here JSON) text in field 2.
fn any(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    bytes_field(2, value.to_string().as_bytes(), &mut out);
    out
}

fn named_any(name: &str, value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    bytes_field(1, name.as_bytes(), &mut out);
    bytes_field(2, &any(value), &mut out);
    out
}

fn named_schemas(map: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, schema) in map {
        let mut named = Vec::new();
        bytes_field(1, name.as_bytes(), &mut named);
        bytes_field(2, &schema_message(schema), &mut named);
        bytes_field(1, &named, &mut out);
    }
    out
}

/// gnostic's `Schema`.
fn schema_message(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let Value::Object(s) = value else {
        return out;
    };
    string_field(1, s.get("$ref"), &mut out);
    string_field(2, s.get("format"), &mut out);
    string_field(3, s.get("title"), &mut out);
    string_field(4, s.get("description"), &mut out);
    if let Some(default) = s.get("default") {
        bytes_field(5, &any(default), &mut out);
    }
    double_field(6, s.get("multipleOf"), &mut out);
    double_field(7, s.get("maximum"), &mut out);
    bool_field(8, s.get("exclusiveMaximum"), &mut out);
    double_field(9, s.get("minimum"), &mut out);
    bool_field(10, s.get("exclusiveMinimum"), &mut out);
    int_field(11, s.get("maxLength"), &mut out);
    int_field(12, s.get("minLength"), &mut out);
    string_field(13, s.get("pattern"), &mut out);
    int_field(14, s.get("maxItems"), &mut out);
    int_field(15, s.get("minItems"), &mut out);
    bool_field(16, s.get("uniqueItems"), &mut out);
    int_field(17, s.get("maxProperties"), &mut out);
    int_field(18, s.get("minProperties"), &mut out);
    for required in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        string_field(19, Some(required), &mut out);
    }
    for item in s
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        bytes_field(20, &any(item), &mut out);
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut item = Vec::new();
            varint_field(2, u64::from(*b), &mut item);
            bytes_field(21, &item, &mut out);
        }
        Some(schema @ Value::Object(_)) => {
            let mut item = Vec::new();
            bytes_field(1, &schema_message(schema), &mut item);
            bytes_field(21, &item, &mut out);
        }
        _ => {}
    }
    if let Some(Value::String(t)) = s.get("type") {
        let mut item = Vec::new();
        bytes_field(1, t.as_bytes(), &mut item);
        bytes_field(22, &item, &mut out);
    }
    if let Some(items) = s.get("items") {
        let mut item = Vec::new();
        bytes_field(1, &schema_message(items), &mut item);
        bytes_field(23, &item, &mut out);
    }
    for schema in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        bytes_field(24, &schema_message(schema), &mut out);
    }
    if let Some(Value::Object(properties)) = s.get("properties") {
        bytes_field(25, &named_schemas(properties), &mut out);
    }
    bool_field(27, s.get("readOnly"), &mut out);
    if let Some(example) = s.get("example") {
        bytes_field(30, &any(example), &mut out);
    }
    for (name, value) in s.iter().filter(|(k, _)| k.starts_with("x-")) {
        bytes_field(31, &named_any(name, value), &mut out);
    }
    out
}

/// The document as gnostic protobuf: `swagger` (1), `info` (2: title 1, version 2), `paths`
/// (8, its operations left out: kubectl reads v3's) and `definitions` (9).
pub fn encode(document: &Value) -> Vec<u8> {
    let mut info = Vec::new();
    string_field(1, document.pointer("/info/title"), &mut info);
    string_field(2, document.pointer("/info/version"), &mut info);
    let mut out = Vec::new();
    string_field(1, document.get("swagger"), &mut out);
    bytes_field(2, &info, &mut out);
    bytes_field(8, &[], &mut out);
    let definitions = match document.get("definitions") {
        Some(Value::Object(map)) => named_schemas(map),
        _ => Vec::new(),
    };
    bytes_field(9, &definitions, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf::wire::{Reader, Wire};
    use serde_json::json;

    #[test]
    fn the_protobuf_document_reads_back() {
        let document = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "definitions": {"A": {"type": "object", "description": "an A",
                "x-kubernetes-group-version-kind": [{"group": "", "kind": "A", "version": "v1"}]}},
        });
        let bytes = encode(&document);
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.next_field(), Ok(Some((1, Wire::Bytes(&b"2.0"[..])))));
        let Ok(Some((2, Wire::Bytes(info)))) = reader.next_field() else {
            panic!("no info")
        };
        let mut info = Reader::new(info);
        assert_eq!(
            info.next_field(),
            Ok(Some((1, Wire::Bytes(&b"Kubernetes"[..]))))
        );
        assert_eq!(
            info.next_field(),
            Ok(Some((2, Wire::Bytes(&b"v1.33.0"[..]))))
        );
        assert_eq!(reader.next_field(), Ok(Some((8, Wire::Bytes(&[][..])))));
        let Ok(Some((9, Wire::Bytes(definitions)))) = reader.next_field() else {
            panic!("no definitions")
        };
        let mut definitions = Reader::new(definitions);
        let Ok(Some((1, Wire::Bytes(named)))) = definitions.next_field() else {
            panic!("no named schema")
        };
        let mut named = Reader::new(named);
        assert_eq!(named.next_field(), Ok(Some((1, Wire::Bytes(&b"A"[..])))));
        let Ok(Some((2, Wire::Bytes(schema)))) = named.next_field() else {
            panic!("no schema")
        };
        let mut schema = Reader::new(schema);
        assert_eq!(
            schema.next_field(),
            Ok(Some((4, Wire::Bytes(&b"an A"[..]))))
        );
        let Ok(Some((22, Wire::Bytes(_)))) = schema.next_field() else {
            panic!("no type")
        };
        let Ok(Some((31, Wire::Bytes(_)))) = schema.next_field() else {
            panic!("no extension")
        };
        assert_eq!(reader.next_field(), Ok(None));
    }
}

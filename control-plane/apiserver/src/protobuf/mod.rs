//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), as kubectl's typed
//! `create` commands send them: the `k8s\0` magic, a `runtime.Unknown` envelope naming the
//! kind, and the object's bytes, decoded by a schema table into the JSON the JSON path takes.

pub mod decode;
pub mod schema;
pub mod strict;
pub mod table;
pub mod wire;

use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};
use decode::DecodeError;
use wire::{Reader, Wire};

/// The media type of Kubernetes protobuf.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// What every Kubernetes protobuf body starts with.
const MAGIC: &[u8] = b"k8s\0";

/// The fields of the `runtime.Unknown` envelope.
#[derive(Debug, Default, PartialEq, Eq)]
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

fn bad(why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!(
        "the object provided is unrecognized (error decoding protobuf: {why})"
    ))
}

fn text(wire: Wire<'_>, what: &str) -> ApiResult<String> {
    match wire {
        Wire::Bytes(bytes) => {
            String::from_utf8(bytes.to_vec()).map_err(|_| bad(format!("{what} is not valid UTF-8")))
        }
        _ => Err(bad(format!("{what} is not length-delimited"))),
    }
}

fn envelope(body: &[u8]) -> ApiResult<Envelope<'_>> {
    let Some(message) = body.strip_prefix(MAGIC) else {
        return Err(bad("the body does not start with the k8s protobuf magic"));
    };
    let mut envelope = Envelope::default();
    let mut reader = Reader::new(message);
    while let Some((number, wire)) = reader
        .next_field()
        .map_err(|e| bad(format!("envelope: {e}")))?
    {
        match (number, wire) {
            (1, Wire::Bytes(type_meta)) => {
                let mut meta = Reader::new(type_meta);
                while let Some((n, w)) = meta
                    .next_field()
                    .map_err(|e| bad(format!("typeMeta: {e}")))?
                {
                    match n {
                        1 => envelope.api_version = text(w, "typeMeta.apiVersion")?,
                        2 => envelope.kind = text(w, "typeMeta.kind")?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(raw)) => envelope.raw = raw,
            (3, w) => envelope.content_encoding = text(w, "contentEncoding")?,
            (1 | 2, _) => {
                return Err(bad(format!(
                    "envelope field {number} is not length-delimited"
                )));
            }
            _ => {}
        }
    }
    Ok(envelope)
}

/// Decodes a protobuf body into the object's JSON, with its apiVersion and kind. A kind the
/// table does not have, or a field it does not decode, is 415 (send JSON); bytes that are
/// not a valid encoding are 400.
pub fn decode_body(body: &[u8]) -> ApiResult<Value> {
    let envelope = envelope(body)?;
    if envelope.kind.is_empty() || envelope.api_version.is_empty() {
        return Err(bad("the envelope has no apiVersion or kind"));
    }
    if !envelope.content_encoding.is_empty() {
        return Err(unsupported(format!(
            "protobuf bodies with contentEncoding {:?} are not supported",
            envelope.content_encoding
        )));
    }
    let Some(message) = table::top_level(&envelope.api_version, &envelope.kind) else {
        return Err(unsupported(format!(
            "protobuf bodies of kind {} ({}) are not supported by this server",
            envelope.kind, envelope.api_version
        )));
    };
    let mut object = Map::new();
    object.insert(
        "apiVersion".into(),
        Value::from(envelope.api_version.as_str()),
    );
    object.insert("kind".into(), Value::from(envelope.kind.as_str()));
    match decode::message(message, envelope.raw, &envelope.kind) {
        Ok(fields) => object.extend(fields),
        Err(DecodeError::Malformed(why)) => return Err(bad(why)),
        Err(DecodeError::Unsupported(why)) => return Err(unsupported(why)),
    }
    tracing::debug!(kind = %envelope.kind, "decoded a protobuf body");
    Ok(Value::Object(object))
}

fn unsupported(why: String) -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!("{why}; send it as JSON (Content-Type: application/json) instead"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::encoding::{WireType, encode_key, encode_varint};
    use serde_json::json;

    fn bytes_field(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
        encode_key(number, WireType::LengthDelimited, out);
        encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    /// A body as client-go writes it: magic, then Unknown{typeMeta, raw}.
    pub(crate) fn body(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = Vec::new();
        bytes_field(1, api_version.as_bytes(), &mut type_meta);
        bytes_field(2, kind.as_bytes(), &mut type_meta);
        let mut out = MAGIC.to_vec();
        bytes_field(1, &type_meta, &mut out);
        bytes_field(2, raw, &mut out);
        bytes_field(3, b"", &mut out);
        bytes_field(4, b"", &mut out);
        out
    }

    #[test]
    fn an_envelope_decodes_with_its_type() {
        let mut meta = Vec::new();
        bytes_field(1, b"ns1", &mut meta);
        let mut raw = Vec::new();
        bytes_field(1, &meta, &mut raw);
        assert_eq!(
            decode_body(&body("v1", "Namespace", &raw)),
            Ok(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1"}}))
        );
    }

    #[test]
    fn unknown_kinds_are_415_and_bad_bytes_400() {
        let Err(error) = decode_body(&body("v1", "Pod", &[])) else {
            panic!("a Pod body decoded")
        };
        assert_eq!(error.code, 415);
        assert!(error.message.contains("kind Pod (v1)") && error.message.contains("JSON"));
        for bad in [
            b"{\"kind\":\"x\"}".to_vec(),
            b"k8s\0\x0a\x05ab".to_vec(),
            body("v1", "ConfigMap", b"\x0a\x09"),
        ] {
            let Err(error) = decode_body(&bad) else {
                panic!("{bad:?} decoded")
            };
            assert_eq!(error.code, 400, "{bad:?}: {}", error.message);
        }
    }
}

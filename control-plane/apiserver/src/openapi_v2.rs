//! OpenAPI v2 (`/openapi/v2`): the document kubectl 1.27 downloads before `apply -f`,
//! `create -f` and `replace -f` validate anything. kubectl asks for it only as protobuf
//! (gnostic's `openapi_v2.Document`) and stops when it cannot parse it. It lists no type
//! schemas, like the v3 documents: kubectl then learns from `/openapi/v3` that the server
//! validates fields itself (`fieldValidation`) and leaves validation to it.

use prost::encoding::{WireType, encode_key, encode_varint};
use serde_json::{Value, json};

/// The media type kubectl asks for.
pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The Content-Type of the answer: Go's media type parser refuses the `@` of [`PROTOBUF`], so
/// kube-apiserver answers with a dot there, and so does this.
pub const PROTOBUF_RESPONSE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

fn bytes_field(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// The document as gnostic protobuf: `swagger` (1), `info` (2: title 1, version 2), an empty
/// `paths` (8) and empty `definitions` (9).
pub fn protobuf(version: &str) -> Vec<u8> {
    let mut info = Vec::new();
    bytes_field(1, b"Kubernetes", &mut info);
    bytes_field(2, version.as_bytes(), &mut info);
    let mut document = Vec::new();
    bytes_field(1, b"2.0", &mut document);
    bytes_field(2, &info, &mut document);
    bytes_field(8, &[], &mut document);
    bytes_field(9, &[], &mut document);
    document
}

/// The same document as JSON.
pub fn json(version: &str) -> Value {
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": version},
        "paths": {},
        "definitions": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protobuf::wire::{Reader, Wire};

    #[test]
    fn the_protobuf_document_reads_back() {
        let bytes = protobuf("v1.33.0");
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
        assert_eq!(reader.next_field(), Ok(Some((9, Wire::Bytes(&[][..])))));
        assert_eq!(reader.next_field(), Ok(None));
    }
}

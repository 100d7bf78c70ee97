//! Protobuf bodies sent in process: an unsupported kind is a clear 415, malformed bytes a 400
//! that stores nothing, and client-go's protobuf `Accept` (`application/vnd.kubernetes.protobuf,
//! */*`) is answered in JSON.

mod common;

use bytes::Bytes;
use capstan_apiserver::RequestUser;
use http::Request;
use http_body_util::{BodyExt, Full};
use prost::encoding::{WireType, encode_key, encode_varint};
use serde_json::Value;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

fn bytes_field(number: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = Vec::new();
    bytes_field(1, api_version.as_bytes(), &mut type_meta);
    bytes_field(2, kind.as_bytes(), &mut type_meta);
    let mut out = b"k8s\0".to_vec();
    bytes_field(1, &type_meta, &mut out);
    bytes_field(2, raw, &mut out);
    out
}

/// A ConfigMap named `name` with data {k: v}.
fn config_map(name: &str) -> Vec<u8> {
    let mut meta = Vec::new();
    bytes_field(1, name.as_bytes(), &mut meta);
    let mut entry = Vec::new();
    bytes_field(1, b"k", &mut entry);
    bytes_field(2, b"v", &mut entry);
    let mut raw = Vec::new();
    bytes_field(1, &meta, &mut raw);
    bytes_field(2, &entry, &mut raw);
    envelope("v1", "ConfigMap", &raw)
}

async fn send(
    server: &capstan_apiserver::ApiServer,
    method: &str,
    uri: &str,
    body: Vec<u8>,
) -> (u16, String, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", PROTOBUF)
        // What client-go sends with a protobuf content type and no accept list of its own.
        .header("accept", "application/vnd.kubernetes.protobuf, */*")
        .body(Full::new(Bytes::from(body)));
    let Ok(request) = request else {
        panic!("request")
    };
    let response = server.handle(request, &RequestUser::admin()).await;
    let code = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = match response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    (
        code,
        content_type,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn a_protobuf_configmap_is_created_and_answered_in_json() {
    let (server, _) = common::server().await;
    let (code, content_type, created) = send(&server, "POST", CMS, config_map("pb")).await;
    assert_eq!(
        (code, content_type.as_str()),
        (201, "application/json"),
        "{created}"
    );
    assert_eq!(created["data"]["k"], "v");
    assert_eq!(created["metadata"]["namespace"], "default");
}

#[tokio::test]
async fn an_unsupported_kind_is_a_clear_415() {
    let (server, _) = common::server().await;
    let pods = "/api/v1/namespaces/default/pods";
    let (code, _, status) = send(&server, "POST", pods, envelope("v1", "Pod", &[])).await;
    assert_eq!(code, 415, "{status}");
    assert_eq!(status["reason"], "UnsupportedMediaType");
    let message = status["message"].as_str().unwrap_or("");
    assert!(
        message.contains("protobuf bodies of kind Pod (v1) are not supported")
            && message.contains("send it as JSON"),
        "{message}"
    );
}

#[tokio::test]
async fn malformed_protobuf_is_400_and_stores_nothing() {
    let (server, _) = common::server().await;
    let mut truncated = config_map("bad");
    truncated.truncate(truncated.len() - 2);
    // metadata { name: 0xff 0xfe }
    let bad_utf8 = envelope("v1", "ConfigMap", &[0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe]);
    for (what, body) in [
        ("no magic", b"\x0a\x00".to_vec()),
        ("truncated", truncated),
        ("bad UTF-8", bad_utf8),
        ("no kind", envelope("", "", &[])),
    ] {
        let (code, _, status) = send(&server, "POST", CMS, body).await;
        assert_eq!(code, 400, "{what}: {status}");
        assert_eq!(status["reason"], "BadRequest", "{what}");
        assert!(
            status["message"]
                .as_str()
                .is_some_and(|m| m.contains("error decoding protobuf")),
            "{what}: {status}"
        );
    }
    let (code, list) = common::json(&server, "GET", CMS, &Value::Null).await;
    assert_eq!(code, 200);
    assert_eq!(list["items"], serde_json::json!([]), "nothing stored");
}

#[tokio::test]
async fn openapi_v2_is_protobuf_for_kubectl() {
    let (server, _) = common::server().await;
    let request = Request::builder()
        .uri("/openapi/v2")
        .header(
            "accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )
        .body(Full::new(Bytes::new()));
    let Ok(request) = request else {
        panic!("request")
    };
    let response = server.handle(request, &RequestUser::admin()).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
    );
}

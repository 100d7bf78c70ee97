//! CertificateSigningRequests: the requester's identity is the server's to write, and the
//! request must be a PEM `CERTIFICATE REQUEST` with a signer named.

use base64::Engine;
use serde_json::{Value, json};

use crate::server::RequestUser;
use crate::status::Cause;

/// Sets `spec.username`, `uid` and `groups` from the requesting user and clears the status,
/// as upstream's csrStrategy.PrepareForCreate.
pub fn prepare_create(object: &mut Value, user: &RequestUser) {
    if !object["spec"].is_object() {
        object["spec"] = json!({});
    }
    let spec = &mut object["spec"];
    spec["username"] = json!(user.name);
    match &user.uid {
        Some(uid) => spec["uid"] = json!(uid),
        None => {
            if let Some(map) = spec.as_object_mut() {
                map.remove("uid");
            }
        }
    }
    spec["groups"] = json!(user.groups);
    if let Some(map) = spec.as_object_mut() {
        map.remove("extra");
    }
    object["status"] = json!({});
}

/// Upstream's create checks that matter to clients: a PEM CSR and a signer.
pub fn check(object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match object.pointer("/spec/request").and_then(Value::as_str) {
        None | Some("") => causes.push(Cause::required("spec.request")),
        Some(encoded) => {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            if !pem.contains("-----BEGIN CERTIFICATE REQUEST-----") {
                causes.push(Cause {
                    reason: "FieldValueInvalid".into(),
                    message:
                        "Invalid value: []byte{...}: PEM block type must be CERTIFICATE REQUEST"
                            .into(),
                    field: "spec.request".into(),
                });
            }
        }
    }
    if object
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        causes.push(Cause::required("spec.signerName"));
    }
    if object
        .pointer("/spec/usages")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        causes.push(Cause::required("spec.usages"));
    }
    causes
}

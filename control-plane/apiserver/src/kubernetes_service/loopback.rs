//! Requests the reconciler makes to its own server, as kube-apiserver's loopback client does:
//! through [`ApiServer::handle`], so admission, validation and allocation run as for any
//! client, without a socket.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::server::{ApiServer, RequestUser};

/// What the reconciler's requests carry as user agent: the managed-fields manager is
/// `kube-apiserver`, as upstream's.
const USER_AGENT: &str = "kube-apiserver/v1.33.0 (linux/amd64) kubernetes/capstan";

/// An answer: the status code and the decoded body (a `Status` on errors).
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body, `Null` when it was not JSON.
    pub body: Value,
}

impl Answer {
    /// Whether the request succeeded.
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The `message` of a `Status` body, for logs.
    pub fn message(&self) -> String {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }
}

/// The loopback user: kube-apiserver's own, a member of `system:masters`.
fn user() -> RequestUser {
    RequestUser {
        name: "system:apiserver".into(),
        uid: None,
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }
}

/// Sends `method path` with `body` (JSON) to `server`.
pub async fn call(server: &ApiServer, method: Method, path: &str, body: Option<&Value>) -> Answer {
    let bytes = body
        .map(|b| Bytes::from(crate::rest::encode(b)))
        .unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, USER_AGENT)
        .body(Full::new(bytes));
    let request = match request {
        Ok(request) => request,
        Err(error) => {
            return Answer {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                body: serde_json::json!({"message": error.to_string()}),
            };
        }
    };
    let response = server.handle(request, &user()).await;
    let status = response.status();
    let body = match response.into_body().collect().await {
        Ok(collected) => serde_json::from_slice(&collected.to_bytes()).unwrap_or(Value::Null),
        Err(never) => match never {},
    };
    Answer { status, body }
}

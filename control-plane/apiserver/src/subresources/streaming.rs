//! The `proxy` subresources of pods and services: kube-apiserver proxies them to the pod or
//! the Service's endpoints; not built here yet. After the checks upstream makes first (the
//! object exists, the pod is scheduled) they answer a Status saying so, never an empty
//! answer. Pods' log, exec, attach and portforward and nodes' proxy are
//! [`crate::node_proxy`]'s.

use http::Response;
use serde_json::Value;

use crate::body::ApiBody;
use crate::rest::{self, Call};
use crate::route::Target;
use crate::status::{ApiError, ApiResult};

/// Answers a `proxy` subresource with why it cannot be served.
pub async fn serve(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let name = target.name.as_deref().unwrap_or("");
    let (object, _) =
        rest::get_object(call.server, target.kind, target.namespace.as_deref(), name).await?;
    let what = match target.kind.plural {
        "services" => format!("service {name}"),
        "nodes" => format!("node {name}"),
        _ => {
            let node = object
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if node.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "pod {name} does not have a host assigned"
                )));
            }
            format!("pod {name}")
        }
    };
    Err(ApiError::bad_request(format!(
        "proxying to {what} is not implemented"
    )))
}

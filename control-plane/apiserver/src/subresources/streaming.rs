//! The subresources kube-apiserver proxies to a node's kubelet: pods' `log`, `exec`, `attach`,
//! `portforward` and `proxy`, and nodes' `proxy` (and services' `proxy`, not built either). The node agent serves no streaming endpoint
//! yet, so after the checks upstream makes first (the pod is scheduled, the container exists)
//! they answer a Status saying so, never an empty stream.

use http::Response;
use serde_json::Value;

use crate::body::ApiBody;
use crate::rest::{self, Call};
use crate::route::Target;
use crate::status::{ApiError, ApiResult};

/// Answers a streaming subresource with why it cannot be served.
pub async fn serve(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let name = target.name.as_deref().unwrap_or("");
    let sub = target.subresource.as_deref().unwrap_or("");
    if target.kind.plural == "services" {
        rest::get_object(call.server, target.kind, target.namespace.as_deref(), name).await?;
        return Err(ApiError::bad_request(format!(
            "proxying to service {name} is not implemented"
        )));
    }
    let node = if target.kind.plural == "nodes" {
        // Checks the node exists: a missing one is a 404 as upstream.
        rest::get_object(call.server, target.kind, None, name).await?;
        name.to_string()
    } else {
        let (pod, _) =
            rest::get_object(call.server, target.kind, target.namespace.as_deref(), name).await?;
        if matches!(sub, "log" | "exec" | "attach") {
            check_container(&pod, name, call.param("container"))?;
        }
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        node.to_string()
    };
    Err(no_kubelet(&node, sub))
}

/// The error of a node without a known kubelet endpoint: a 400, as upstream's other refusals
/// here, since retrying cannot help (clients such as kube-rs retry 503s for minutes).
fn no_kubelet(node: &str, sub: &str) -> ApiError {
    ApiError::bad_request(format!(
        "no kubelet endpoint is known for node \"{node}\": the node agent does not serve {sub} yet (not implemented)"
    ))
}

/// The container a request names: given and in the pod, or the pod's only one (upstream's
/// messages otherwise).
fn check_container(pod: &Value, name: &str, container: Option<&str>) -> ApiResult<()> {
    let names: Vec<&str> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let main: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    match container.filter(|c| !c.is_empty()) {
        Some(wanted) if names.contains(&wanted) => Ok(()),
        Some(wanted) => Err(ApiError::bad_request(format!(
            "container {wanted} is not valid for pod {name}"
        ))),
        None if main.len() == 1 => Ok(()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            main.join(" ")
        ))),
    }
}

//! Pods' `log`, `exec`, `attach` and `portforward`: kube-apiserver's part of `kubectl logs`,
//! `exec`, `attach`, `cp` and `port-forward`. The pod's node is found, its kubelet endpoint
//! (an address of the Node and its `daemonEndpoints` port) is called with the API server's
//! kubelet-client certificate, and the answer is passed back: a log streamed as it comes, an
//! upgraded connection (SPDY or WebSocket) relayed byte for byte. `nodes/NAME/proxy/PATH`
//! reaches the kubelet endpoint's PATH (`/configz`, `/logs/`, `/metrics/resource`...) the
//! same way, its answer passed through as it is.

pub mod kubelet_client;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use serde_json::Value;

use crate::body::ApiBody;
use crate::rest;
use crate::route::Target;
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult, Cause};

pub use kubelet_client::KubeletClient;

/// The kubelet port when a Node advertises none.
const DEFAULT_KUBELET_PORT: u16 = 10250;
/// The most of a kubelet's error answer read into the Status message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Node address types tried, in order (kubeadm's `--kubelet-preferred-address-types`).
const ADDRESS_TYPES: &[&str] = &["InternalIP", "ExternalIP", "Hostname"];

/// Whether `target` is one of the subresources this module serves.
pub fn proxies(target: &Target<'_>) -> bool {
    target.kind.group.is_empty()
        && target.name.is_some()
        && match (target.kind.plural, target.subresource.as_deref()) {
            ("pods", Some(sub)) => matches!(sub, "log" | "exec" | "attach" | "portforward"),
            ("nodes", Some(sub)) => sub == "proxy",
            _ => false,
        }
}

/// The kubelet path of `nodes/NAME/proxy/PATH`: what follows `proxy`, still percent-encoded
/// as the client sent it, with the query.
fn node_proxy_path(uri: &http::Uri) -> String {
    // /api/v1/nodes/NAME/proxy/...: the first six segments (counting the empty one before
    // the leading slash) are the resource's.
    let rest: Vec<&str> = uri.path().split('/').skip(6).collect();
    let path = format!("/{}", rest.join("/"));
    match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

/// Go's `strconv.ParseBool` true spellings, as the query decoder of kube-apiserver takes them.
fn truthy(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// Serves a proxied subresource (see [`proxies`]).
pub async fn serve(
    server: &ApiServer,
    parts: &http::request::Parts,
    target: &Target<'_>,
    body: Bytes,
) -> ApiResult<Response<ApiBody>> {
    if target.kind.plural == "nodes" {
        let name = target.name.as_deref().unwrap_or_default();
        // Upstream's `nodes/NAME:PORT/proxy` reaches another port of the node; only the
        // kubelet's is served here.
        if name.contains(':') {
            return Err(ApiError::bad_request(format!(
                "proxying to port {} of node {} is not implemented; use nodes/{}/proxy for the kubelet",
                name.rsplit(':').next().unwrap_or_default(),
                name.split(':').next().unwrap_or_default(),
                name.split(':').next().unwrap_or_default(),
            )));
        }
        // A missing Node is a NotFound naming it, before any kubelet is looked for.
        rest::get_object(server, target.kind, None, name).await?;
        let path = node_proxy_path(&parts.uri);
        let response = to_kubelet(server, parts, name, &path, body).await?;
        return Ok(passed_through(response));
    }
    let sub = target.subresource.as_deref().unwrap_or_default();
    let method = &parts.method;
    let allowed = match sub {
        "log" => method == Method::GET,
        _ => method == Method::GET || method == Method::POST,
    };
    if !allowed {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    let namespace = target.namespace.as_deref().unwrap_or("default");
    let name = target.name.as_deref().unwrap_or_default();
    let (pod, _) = rest::get_object(server, target.kind, Some(namespace), name).await?;
    let query: Vec<(String, String)> =
        form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let first = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let path = match sub {
        "portforward" => {
            let ports: Vec<String> = query
                .iter()
                .filter(|(k, _)| k == "ports")
                .flat_map(|(_, v)| v.split(','))
                .map(|p| format!("port={}", p.trim()))
                .collect();
            with_query(format!("/portForward/{namespace}/{name}"), &ports)
        }
        _ => {
            let container = pick_container(&pod, name, first("container"))?;
            let base = match sub {
                "log" => "containerLogs",
                other => other,
            };
            let path = format!("/{base}/{namespace}/{name}/{container}");
            let params = match sub {
                "log" => log_params(name, &query)?,
                _ => stream_params(sub, &query)?,
            };
            with_query(path, &params)
        }
    };
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let upgrade = capstan_relay::wants_upgrade(&parts.headers);
    if sub != "log" && !upgrade {
        return Err(ApiError::bad_request(format!(
            "{sub} needs a connection upgrade (SPDY/3.1 or WebSocket) over HTTP/1.1"
        )));
    }
    let response = to_kubelet(server, parts, node, &path, Bytes::new()).await?;
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(capstan_relay::with_body(&response, empty()));
    }
    if status != StatusCode::OK {
        return Err(kubelet_error(status, response.into_body()).await);
    }
    let mut out = Response::new(());
    if let Some(kind) = response.headers().get(http::header::CONTENT_TYPE) {
        out.headers_mut()
            .insert(http::header::CONTENT_TYPE, kind.clone());
    }
    Ok(out.map(|()| streamed(response.into_body())))
}

/// A kubelet's body as it comes; it ends when the kubelet's does, or at the first error on it
/// (a followed log).
fn streamed(body: hyper::body::Incoming) -> ApiBody {
    let frames = BodyStream::new(body)
        .take_while(|frame| futures::future::ready(frame.is_ok()))
        .filter_map(|frame| futures::future::ready(frame.ok().map(Ok)));
    BodyExt::boxed(StreamBody::new(frames))
}

/// The kubelet's answer as it is: status, headers and body (an upgrade's 101 with none).
fn passed_through(response: Response<hyper::body::Incoming>) -> Response<ApiBody> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return capstan_relay::with_body(&response, empty());
    }
    let head = capstan_relay::with_body(&response, ());
    head.map(|()| streamed(response.into_body()))
}

/// Sends the client's request on to node `node`'s kubelet at `path`, with `body`; an upgrade
/// the client asked for is joined to the kubelet's.
async fn to_kubelet(
    server: &ApiServer,
    parts: &http::request::Parts,
    node: &str,
    path: &str,
    body: Bytes,
) -> ApiResult<Response<hyper::body::Incoming>> {
    let method = &parts.method;
    let Some(client) = server.config.kubelet_client.clone() else {
        return Err(ApiError::bad_request(format!(
            "the API server has no kubelet client credentials to reach node \"{node}\" (--kubelet-client-certificate is not set)"
        )));
    };
    let (host, port) = kubelet_location(server, node).await?;
    let display = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let backend = client.connect(&host, port).await.map_err(|e| {
        ApiError::internal(format!(
            "Get \"https://{display}{path}\": dial tcp {display}: {e}"
        ))
    })?;
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = method.clone();
    *request.uri_mut() = path
        .parse()
        .map_err(|e| ApiError::internal(format!("kubelet path {path:?}: {e}")))?;
    *request.headers_mut() = capstan_relay::forwarded_headers(&parts.headers);
    if let Ok(value) = display.parse() {
        request.headers_mut().insert(http::header::HOST, value);
    }
    let upgrade = capstan_relay::wants_upgrade(&parts.headers)
        .then(|| parts.extensions.get::<hyper::upgrade::OnUpgrade>().cloned())
        .flatten();
    capstan_relay::forward(backend, request, upgrade)
        .await
        .map_err(|e| ApiError::internal(format!("proxy to the kubelet on node \"{node}\": {e}")))
}

fn empty() -> ApiBody {
    Full::new(Bytes::new()).boxed()
}

fn with_query(path: String, params: &[String]) -> String {
    if params.is_empty() {
        path
    } else {
        format!("{path}?{}", params.join("&"))
    }
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The kubelet query of an exec or attach: its command and streams, as kube-apiserver passes
/// them on (`input`, `output`, `error`, `tty`).
fn stream_params(sub: &str, query: &[(String, String)]) -> ApiResult<Vec<String>> {
    let set = |key: &str| query.iter().any(|(k, v)| k == key && truthy(v));
    let (stdin, stdout, stderr, tty) = (set("stdin"), set("stdout"), set("stderr"), set("tty"));
    if !stdin && !stdout && !stderr {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let mut params: Vec<String> = Vec::new();
    if sub == "exec" {
        let commands: Vec<&str> = query
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.as_str())
            .collect();
        if commands.is_empty() {
            return Err(ApiError::bad_request("you must specify a command"));
        }
        params.extend(commands.iter().map(|c| format!("command={}", encode(c))));
    }
    for (on, name) in [
        (stdin, "input"),
        (stdout, "output"),
        (stderr, "error"),
        (tty, "tty"),
    ] {
        if on {
            params.push(format!("{name}=1"));
        }
    }
    Ok(params)
}

/// The kubelet query of a log request, after kube-apiserver's checks of PodLogOptions.
fn log_params(name: &str, query: &[(String, String)]) -> ApiResult<Vec<String>> {
    let mut causes = Vec::new();
    let mut params = Vec::new();
    let mut since = 0;
    for (key, value) in query {
        let number = || value.parse::<i64>().ok();
        match key.as_str() {
            "follow" | "previous" | "timestamps" if truthy(value) => {
                params.push(format!("{key}=true"));
            }
            "tailLines" => match number() {
                Some(n) if n >= 0 => params.push(format!("tailLines={n}")),
                _ => causes.push(Cause::invalid(
                    "tailLines",
                    value,
                    "must be greater than or equal to 0",
                )),
            },
            "limitBytes" => match number() {
                Some(n) if n >= 1 => params.push(format!("limitBytes={n}")),
                _ => causes.push(Cause::invalid(
                    "limitBytes",
                    value,
                    "must be greater than 0",
                )),
            },
            "sinceSeconds" => {
                since += 1;
                match number() {
                    Some(n) if n >= 1 => params.push(format!("sinceSeconds={n}")),
                    _ => causes.push(Cause::invalid(
                        "sinceSeconds",
                        value,
                        "must be greater than 0",
                    )),
                }
            }
            "sinceTime" => {
                since += 1;
                params.push(format!("sinceTime={}", encode(value)));
            }
            _ => {}
        }
    }
    if since > 1 {
        causes.push(Cause {
            reason: "FieldValueForbidden".into(),
            message: "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
                .into(),
            field: String::new(),
        });
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("", "PodLogOptions", name, causes));
    }
    Ok(params)
}

/// The container a request names: given and in the pod, or the pod's only one (upstream's
/// messages otherwise).
fn pick_container(pod: &Value, name: &str, container: Option<&str>) -> ApiResult<String> {
    let names = |fields: &[&str]| -> Vec<String> {
        fields
            .iter()
            .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    let all = names(&["containers", "initContainers", "ephemeralContainers"]);
    let main = names(&["containers"]);
    match container.filter(|c| !c.is_empty()) {
        Some(wanted) if all.iter().any(|n| n == wanted) => Ok(wanted.to_string()),
        Some(wanted) => Err(ApiError::bad_request(format!(
            "container {wanted} is not valid for pod {name}"
        ))),
        None if main.len() == 1 => Ok(main[0].clone()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            main.join(" ")
        ))),
    }
}

/// Where node `node`'s kubelet listens: its first address of the preferred types, and the
/// port its status advertises.
async fn kubelet_location(server: &ApiServer, node: &str) -> ApiResult<(String, u16)> {
    let Some(nodes) = server.kinds.find("", "v1", "nodes").cloned() else {
        return Err(ApiError::internal("the nodes kind is not served"));
    };
    let (object, _) = rest::get_object(server, &nodes, None, node).await?;
    let addresses = object
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let host = ADDRESS_TYPES.iter().find_map(|wanted| {
        addresses.iter().find_map(|a| {
            (a.get("type").and_then(Value::as_str) == Some(wanted))
                .then(|| a.get("address").and_then(Value::as_str))
                .flatten()
                .filter(|addr| !addr.is_empty())
                .map(str::to_string)
        })
    });
    let Some(host) = host else {
        return Err(ApiError::bad_request(format!(
            "node \"{node}\" has no address of the types {ADDRESS_TYPES:?}"
        )));
    };
    let port = object
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok((host, port))
}

/// A kubelet's refusal as a Status with its code and text, as kubectl prints it.
async fn kubelet_error(status: StatusCode, body: hyper::body::Incoming) -> ApiError {
    let text = http_body_util::Limited::new(body, ERROR_BODY_LIMIT)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
        .unwrap_or_default();
    let reason = match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        _ => "InternalError",
    };
    let message = if text.is_empty() {
        format!("the kubelet answered {status}")
    } else {
        text
    };
    ApiError::new(status.as_u16(), reason, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn exec_options_become_the_kubelets_query() {
        let q = pairs(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo a b"),
            ("stdin", "true"),
            ("stdout", "true"),
            ("tty", "false"),
        ]);
        assert_eq!(
            stream_params("exec", &q).unwrap(),
            [
                "command=sh",
                "command=-c",
                "command=echo+a+b",
                "input=1",
                "output=1"
            ]
        );
        let none = pairs(&[("command", "ls")]);
        assert!(
            stream_params("exec", &none)
                .unwrap_err()
                .message
                .contains("at least 1 of stdin")
        );
    }

    #[test]
    fn log_options_are_checked_as_upstream() {
        let q = pairs(&[("follow", "true"), ("tailLines", "5"), ("container", "c")]);
        assert_eq!(log_params("p", &q).unwrap(), ["follow=true", "tailLines=5"]);
        let bad = pairs(&[
            ("tailLines", "-1"),
            ("sinceSeconds", "3"),
            ("sinceTime", "x"),
        ]);
        let error = log_params("p", &bad).unwrap_err();
        assert_eq!(error.code, 422);
        assert!(error.message.contains("tailLines"), "{}", error.message);
        assert!(error.message.contains("at most one"), "{}", error.message);
    }

    #[test]
    fn the_only_container_is_the_default() {
        let pod = serde_json::json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(pick_container(&pod, "p", Some("i")).unwrap(), "i");
        assert!(
            pick_container(&pod, "p", None)
                .unwrap_err()
                .message
                .contains("choose one of: [a b]")
        );
        let one = serde_json::json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, "p", None).unwrap(), "a");
    }
}

//! `/exec`, `/attach` and `/portForward`: the kubelet's part of `kubectl exec`, `attach` and
//! `port-forward`. The container (or the pod's sandbox) is looked up, the runtime is asked for
//! a streaming URL (CRI Exec, Attach, PortForward), and the client's request is passed on to
//! it, the upgraded connection relayed as it is (SPDY or WebSocket; the runtime's streaming
//! server speaks both), as the kubelet does with its streaming proxy.

use std::collections::HashMap;
use std::sync::Arc;

use capstan_proto::{
    AttachRequest, ExecRequest, ListPodSandboxRequest, PodSandboxFilter, PodSandboxState,
    PodSandboxStateValue, PortForwardRequest,
};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, StatusCode};
use tonic::Request as Rpc;

use crate::endpoint::read_only::{Reply, reply};
use crate::pods::{NodeContext, labels};

/// Which stream request it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `/exec/{namespace}/{pod}[/{uid}]/{container}`.
    Exec,
    /// `/attach/{namespace}/{pod}[/{uid}]/{container}`.
    Attach,
    /// `/portForward/{namespace}/{pod}[/{uid}]`.
    PortForward,
}

impl StreamKind {
    /// The kind a path asks for, and the path's segments after it.
    pub fn of(path: &str) -> Option<(StreamKind, Vec<&str>)> {
        let mut segments = path.trim_start_matches('/').split('/');
        let kind = match segments.next()? {
            "exec" => StreamKind::Exec,
            "attach" => StreamKind::Attach,
            "portForward" => StreamKind::PortForward,
            _ => return None,
        };
        Some((kind, segments.filter(|s| !s.is_empty()).collect()))
    }
}

fn bad_request(message: impl Into<Bytes>) -> Reply {
    reply(StatusCode::BAD_REQUEST, "text/plain", message)
}

fn flag(query: &[(String, String)], names: &[&str]) -> bool {
    query.iter().any(|(k, v)| {
        names.contains(&k.as_str())
            && matches!(v.as_str(), "1" | "true" | "True" | "TRUE" | "t" | "")
    })
}

/// The streams the query asks for: stdin, stdout, stderr, tty (and their old names).
fn streams(query: &[(String, String)]) -> (bool, bool, bool, bool) {
    (
        flag(query, &["stdin", "input"]),
        flag(query, &["stdout", "output"]),
        flag(query, &["stderr", "error"]),
        flag(query, &["tty"]),
    )
}

/// Serves one stream request: the runtime's URL for it, the request relayed there.
pub async fn serve(
    ctx: &Arc<NodeContext>,
    kind: StreamKind,
    segments: &[&str],
    query: &[(String, String)],
    mut request: Request<Incoming>,
) -> Reply {
    let url = match runtime_url(ctx, kind, segments, query).await {
        Ok(url) => url,
        Err(reply) => return reply,
    };
    let uri: hyper::Uri = match url.parse() {
        Ok(uri) => uri,
        Err(e) => {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("the runtime answered a bad streaming URL {url:?}: {e}"),
            );
        }
    };
    let Some(authority) = uri.authority().map(|a| a.to_string()) else {
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("the runtime's streaming URL {url:?} has no address"),
        );
    };
    let backend = match tokio::net::TcpStream::connect(&authority).await {
        Ok(stream) => stream,
        Err(e) => {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("connect to the runtime's streaming server {authority}: {e}"),
            );
        }
    };
    let client_upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>();
    let mut outgoing = Request::new(Full::new(Bytes::new()));
    *outgoing.method_mut() = request.method().clone();
    *outgoing.uri_mut() = uri.path_and_query().map_or_else(
        || "/".parse().expect("a root path"),
        |p| p.as_str().parse().unwrap_or_default(),
    );
    *outgoing.headers_mut() = capstan_relay::forwarded_headers(request.headers());
    if let Ok(host) = authority.parse() {
        outgoing.headers_mut().insert(hyper::header::HOST, host);
    }
    match capstan_relay::forward(backend, outgoing, client_upgrade).await {
        Ok(response) => {
            let status = response.status();
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return capstan_relay::with_body(&response, empty());
            }
            let head = capstan_relay::with_body(&response, ());
            let body = response.into_body().map_err(std::io::Error::other).boxed();
            head.map(|()| body)
        }
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("relay to the runtime's streaming server: {e}"),
        ),
    }
}

fn empty() -> crate::endpoint::read_only::Body {
    Full::new(Bytes::new())
        .map_err(|never: std::convert::Infallible| match never {})
        .boxed()
}

/// The runtime's single-use URL for the request, or the reply refusing it.
async fn runtime_url(
    ctx: &NodeContext,
    kind: StreamKind,
    segments: &[&str],
    query: &[(String, String)],
) -> Result<String, Reply> {
    let (namespace, pod, container) = match (kind, segments) {
        (StreamKind::PortForward, [namespace, pod] | [namespace, pod, _]) => (*namespace, *pod, ""),
        (_, [namespace, pod, container] | [namespace, pod, _, container]) => {
            (*namespace, *pod, *container)
        }
        _ => {
            return Err(bad_request(match kind {
                StreamKind::PortForward => "expected /portForward/{namespace}/{pod}",
                StreamKind::Exec => "expected /exec/{namespace}/{pod}/{container}",
                StreamKind::Attach => "expected /attach/{namespace}/{pod}/{container}",
            }));
        }
    };
    let Some(record) = ctx.store.find(namespace, pod) else {
        return Err(reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("pod does not exist: {namespace}/{pod}"),
        ));
    };
    let rpc_error = |e: tonic::Status| {
        reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.message().to_string(),
        )
    };
    if kind == StreamKind::PortForward {
        let uid = record.pod.metadata.uid.clone().unwrap_or_default();
        let sandbox = ready_sandbox(ctx, &uid).await.map_err(rpc_error)?;
        let Some(sandbox) = sandbox else {
            return Err(bad_request(format!(
                "pod {namespace}/{pod} has no running sandbox"
            )));
        };
        let ports = query
            .iter()
            .filter(|(k, _)| k == "port")
            .filter_map(|(_, v)| v.parse::<i32>().ok())
            .collect();
        let answer = ctx
            .cri
            .runtime
            .port_forward(Rpc::new(PortForwardRequest {
                pod_sandbox_id: sandbox,
                port: ports,
            }))
            .await
            .map_err(rpc_error)?;
        return Ok(answer.into_inner().url);
    }
    let (stdin, stdout, stderr, tty) = streams(query);
    if !stdin && !stdout && !stderr {
        return Err(bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let running = record
        .status
        .container_statuses
        .iter()
        .flatten()
        .chain(record.status.init_container_statuses.iter().flatten())
        .chain(record.status.ephemeral_container_statuses.iter().flatten())
        .find(|s| s.name == container);
    let Some(status) = running else {
        return Err(reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("container not found (\"{container}\")"),
        ));
    };
    let id =
        crate::pods::status::runtime_container_id(status.container_id.as_deref().unwrap_or(""))
            .to_string();
    if id.is_empty() || status.state.as_ref().is_none_or(|s| s.running.is_none()) {
        return Err(bad_request(format!(
            "container \"{container}\" in pod \"{pod}\" is not running"
        )));
    }
    let url = if kind == StreamKind::Exec {
        let cmd: Vec<String> = query
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect();
        if cmd.is_empty() {
            return Err(bad_request("you must specify a command"));
        }
        ctx.cri
            .runtime
            .exec(Rpc::new(ExecRequest {
                container_id: id,
                cmd,
                tty,
                stdin,
                stdout,
                stderr: stderr && !tty,
            }))
            .await
            .map_err(rpc_error)?
            .into_inner()
            .url
    } else {
        ctx.cri
            .runtime
            .attach(Rpc::new(AttachRequest {
                container_id: id,
                stdin,
                tty,
                stdout,
                stderr: stderr && !tty,
            }))
            .await
            .map_err(rpc_error)?
            .into_inner()
            .url
    };
    Ok(url)
}

/// The ready sandbox of pod `uid`, the newest if there are several.
async fn ready_sandbox(ctx: &NodeContext, uid: &str) -> Result<Option<String>, tonic::Status> {
    let mut items = ctx
        .cri
        .runtime
        .list_pod_sandbox(Rpc::new(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]),
                state: Some(PodSandboxStateValue {
                    state: PodSandboxState::SandboxReady as i32,
                }),
                ..Default::default()
            }),
        }))
        .await?
        .into_inner()
        .items;
    items.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    Ok(items.into_iter().next().map(|s| s.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_stream_and_its_target() {
        let (kind, rest) = StreamKind::of("/exec/default/web/c").unwrap();
        assert_eq!(
            (kind, rest),
            (StreamKind::Exec, vec!["default", "web", "c"])
        );
        let (kind, rest) = StreamKind::of("/portForward/ns/p").unwrap();
        assert_eq!((kind, rest), (StreamKind::PortForward, vec!["ns", "p"]));
        assert!(StreamKind::of("/containerLogs/a/b/c").is_none());
    }

    #[test]
    fn stream_flags_take_both_spellings() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            streams(&q(&[("stdin", "1"), ("output", "1")])),
            (true, true, false, false)
        );
        assert_eq!(
            streams(&q(&[("tty", "true"), ("stderr", "0")])),
            (false, false, false, true)
        );
    }
}

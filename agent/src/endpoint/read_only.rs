//! The kubelet's read-only endpoints (`/healthz`, `/pods`, `/metrics`, `/metrics/resource`,
//! `/stats/summary`, `/containerLogs/...`), served on the read-only port without
//! authentication, and the same GET routes behind the secure endpoint's checks ([`get`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;

use super::logs::{self, LogOptions};
use crate::pods::NodeContext;

/// The body of every endpoint response: whole, or streamed (`follow`).
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A response of the endpoints.
pub type Reply = Response<Body>;

/// A whole response.
pub fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn not_found(what: String) -> Reply {
    reply(StatusCode::NOT_FOUND, "text/plain", what)
}

/// Serves the endpoints on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, ctx: Arc<NodeContext>) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let ctx = Arc::clone(&ctx);
                async move { Ok::<_, Infallible>(route(&ctx, request).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "read-only API connection ended");
            }
        });
    }
}

/// Binds the read-only address.
pub async fn bind(address: &str) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

async fn route(ctx: &Arc<NodeContext>, request: Request<Incoming>) -> Reply {
    if request.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "read-only endpoint: GET only",
        );
    }
    let path = request.uri().path().to_string();
    let query = decode_query(request.uri().query());
    get(ctx, &path, &query)
        .await
        .unwrap_or_else(|| not_found(format!("no endpoint {path}")))
}

/// A query's pairs, percent-decoded, in order (repeated names kept: exec's `command`).
pub fn decode_query(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The GET endpoints both ports serve; None for a path that is none of them.
pub async fn get(ctx: &Arc<NodeContext>, path: &str, query: &[(String, String)]) -> Option<Reply> {
    Some(match path {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok"),
        "/pods" | "/pods/" => pods(ctx),
        "/metrics" => metrics(ctx),
        "/metrics/resource" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            crate::endpoint::resource_metrics::resource_metrics(ctx).await,
        ),
        "/stats/summary" | "/stats/summary/" => {
            crate::endpoint::summary::summary(ctx).await.map_or_else(
                |e| reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e),
                |json| reply(StatusCode::OK, "application/json", json),
            )
        }
        _ => container_logs(ctx, path.strip_prefix("/containerLogs/")?, query),
    })
}

fn pods(ctx: &NodeContext) -> Reply {
    let items: Vec<Pod> = ctx
        .store
        .list()
        .into_iter()
        .map(|record| {
            let mut pod = record.pod;
            pod.status = Some(record.status);
            pod
        })
        .collect();
    let list = serde_json::json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
        "items": items,
    });
    reply(StatusCode::OK, "application/json", list.to_string())
}

/// `/runningpods/`: the pods with a running container, as the kubelet lists them from the
/// runtime (identity and containers only).
pub fn running_pods(ctx: &NodeContext) -> Reply {
    let items: Vec<serde_json::Value> = ctx
        .store
        .list()
        .into_iter()
        .filter(|record| {
            record
                .status
                .container_statuses
                .iter()
                .flatten()
                .any(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
        })
        .map(|record| {
            let containers: Vec<serde_json::Value> = record
                .status
                .container_statuses
                .iter()
                .flatten()
                .filter(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
                .map(|s| serde_json::json!({"name": s.name, "image": s.image, "resources": {}}))
                .collect();
            serde_json::json!({
                "metadata": {
                    "name": record.pod.metadata.name,
                    "namespace": record.pod.metadata.namespace,
                    "uid": record.pod.metadata.uid,
                    "creationTimestamp": null,
                },
                "spec": {"containers": containers},
                "status": {},
            })
        })
        .collect();
    let list =
        serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
    reply(StatusCode::OK, "application/json", list.to_string())
}

fn metrics(ctx: &NodeContext) -> Reply {
    let mut phases: BTreeMap<String, u64> = BTreeMap::new();
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    for record in ctx.store.list() {
        *phases
            .entry(record.status.phase.clone().unwrap_or_default())
            .or_default() += 1;
        for status in record.status.container_statuses.iter().flatten() {
            let state = status.state.clone().unwrap_or_default();
            let name = if state.running.is_some() {
                "running"
            } else if state.terminated.is_some() {
                "exited"
            } else {
                "waiting"
            };
            *states.entry(name.to_string()).or_default() += 1;
        }
    }
    reply(StatusCode::OK, "text/plain; version=0.0.4", {
        let probes = ctx.probe_counters.snapshot();
        let rows: Vec<(&str, &str, u64)> = probes
            .iter()
            .map(|(kind, result, n)| (kind_name(*kind), *result, *n))
            .collect();
        ctx.metrics.render(&phases, &states, &rows)
    })
}

/// `/containerLogs/{namespace}/{pod}/{container}`: the log, whole or followed.
fn container_logs(ctx: &Arc<NodeContext>, rest: &str, query: &[(String, String)]) -> Reply {
    let parts: Vec<&str> = rest.split('/').collect();
    let [namespace, name, container] = parts.as_slice() else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "expected /containerLogs/{namespace}/{pod}/{container}",
        );
    };
    let options = match LogOptions::from_query(query, chrono::Utc::now()) {
        Ok(options) => options,
        Err(message) => return reply(StatusCode::BAD_REQUEST, "text/plain", message),
    };
    let source = match logs::locate(ctx, namespace, name, container, options.previous) {
        Ok(source) => source,
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
            return reply(status, "text/plain", e.message);
        }
    };
    if !options.follow {
        return match logs::read_all(&source, &options) {
            Ok(text) => reply(StatusCode::OK, "text/plain", text),
            Err(e) => not_found(format!(
                "log of container {container}: {}: {e}",
                source.file.display()
            )),
        };
    }
    let (sink, frames) = tokio::sync::mpsc::channel(16);
    tokio::spawn(logs::follow(Arc::clone(ctx), source, options, sink));
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(frames));
    let mut response = Response::new(BodyExt::boxed(body));
    if let Ok(value) = "text/plain".parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// The probe_type label value, as the kubelet spells it.
fn kind_name(kind: crate::probes::ProbeKind) -> &'static str {
    match kind {
        crate::probes::ProbeKind::Startup => "Startup",
        crate::probes::ProbeKind::Liveness => "Liveness",
        crate::probes::ProbeKind::Readiness => "Readiness",
    }
}

//! The kubelet's read-only endpoints: `/healthz`, `/pods`, `/metrics`, `/stats/summary` and
//! `/containerLogs/{namespace}/{pod}/{container}`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;

use crate::pods::{NodeContext, sandbox_config};

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
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

async fn route(ctx: &NodeContext, request: Request<Incoming>) -> Reply {
    if request.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "read-only endpoint: GET only",
        );
    }
    let path = request.uri().path().to_string();
    let query = parse_query(request.uri().query().unwrap_or_default());
    match path.as_str() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok"),
        "/pods" | "/pods/" => pods(ctx),
        "/metrics" => metrics(ctx),
        "/stats/summary" => crate::endpoint::summary::summary(ctx).await.map_or_else(
            |e| reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e),
            |json| reply(StatusCode::OK, "application/json", json),
        ),
        _ => match path.strip_prefix("/containerLogs/") {
            Some(rest) => container_logs(ctx, rest, &query),
            None => not_found(format!("no endpoint {path}")),
        },
    }
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (pair.to_string(), String::new()),
        })
        .collect()
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

/// `/containerLogs/{namespace}/{pod}/{container}` with `tailLines`, `previous` and
/// `timestamps`: the container's log in the kubelet's plain form.
fn container_logs(ctx: &NodeContext, rest: &str, query: &BTreeMap<String, String>) -> Reply {
    let parts: Vec<&str> = rest.split('/').collect();
    let [namespace, name, container] = parts.as_slice() else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "expected /containerLogs/{namespace}/{pod}/{container}",
        );
    };
    let Some(record) = ctx.store.find(namespace, name) else {
        return not_found(format!("pod {namespace}/{name} not found"));
    };
    let statuses = record
        .status
        .container_statuses
        .iter()
        .flatten()
        .chain(record.status.init_container_statuses.iter().flatten());
    let Some(status) = statuses.into_iter().find(|s| s.name == *container) else {
        return not_found(format!(
            "container {container} is not in pod {namespace}/{name}"
        ));
    };
    let previous = query
        .get("previous")
        .is_some_and(|v| v == "true" || v.is_empty());
    let attempt = if previous {
        if status.restart_count == 0 {
            return reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("previous terminated container {container} in pod {name} not found"),
            );
        }
        status.restart_count - 1
    } else {
        status.restart_count
    };
    let dir = sandbox_config::log_directory(&ctx.settings.pod_logs_dir, &record.pod);
    let file = dir.join(container).join(format!("{attempt}.log"));
    let timestamps = query.get("timestamps").is_some_and(|v| v == "true");
    let tail = query.get("tailLines").and_then(|v| v.parse::<usize>().ok());
    match read_cri_log(&file, timestamps, tail) {
        Ok(text) => reply(StatusCode::OK, "text/plain", text),
        Err(e) => not_found(format!(
            "log of container {container}: {}: {e}",
            file.display()
        )),
    }
}

/// Turns CRI log lines (`TIMESTAMP STREAM P|F TEXT`) back into the container's output.
fn read_cri_log(file: &Path, timestamps: bool, tail: Option<usize>) -> std::io::Result<String> {
    let text = std::fs::read_to_string(file)?;
    let mut lines: Vec<String> = Vec::new();
    let mut partial = String::new();
    for line in text.lines() {
        let mut fields = line.splitn(4, ' ');
        let (Some(ts), Some(_stream), Some(tag)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let content = fields.next().unwrap_or_default();
        if partial.is_empty() && timestamps {
            partial.push_str(ts);
            partial.push(' ');
        }
        partial.push_str(content);
        if tag != "P" {
            lines.push(std::mem::take(&mut partial));
        }
    }
    if !partial.is_empty() {
        lines.push(partial);
    }
    let start = tail.map_or(0, |n| lines.len().saturating_sub(n));
    let mut out = lines[start..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Ok(out)
}

/// The probe_type label value, as the kubelet spells it.
fn kind_name(kind: crate::probes::ProbeKind) -> &'static str {
    match kind {
        crate::probes::ProbeKind::Startup => "Startup",
        crate::probes::ProbeKind::Liveness => "Liveness",
        crate::probes::ProbeKind::Readiness => "Readiness",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines_are_joined_and_tailed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("0.log");
        std::fs::write(
            &file,
            "2026-01-01T00:00:00.1Z stdout F one\n2026-01-01T00:00:00.2Z stderr P tw\n2026-01-01T00:00:00.3Z stderr F o\n2026-01-01T00:00:00.4Z stdout F three\n",
        )
        .unwrap();
        assert_eq!(
            read_cri_log(&file, false, None).unwrap(),
            "one\ntwo\nthree\n"
        );
        assert_eq!(read_cri_log(&file, false, Some(2)).unwrap(), "two\nthree\n");
        assert_eq!(
            read_cri_log(&file, true, Some(1)).unwrap(),
            "2026-01-01T00:00:00.4Z three\n"
        );
    }
}

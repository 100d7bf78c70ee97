//! The streaming server's HTTP side: `/{exec,attach,portforward}/TOKEN`, upgraded to WebSocket or
//! SPDY/3.1 with the subprotocol both sides support, in the client's order of preference.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue, UPGRADE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::tokens::Tokens;
use super::{Target, portforward, spdy_command, tunnel, websocket};

/// WebSocket subprotocols for exec and attach, best first.
const WEBSOCKET_COMMAND_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
];
/// WebSocket subprotocols for port-forward: SPDY tunneled in binary messages (kubectl
/// 1.31+), or the kubelet's channel protocol (other clients).
const WEBSOCKET_PORTFORWARD_PROTOCOLS: &[&str] =
    &["SPDY/3.1+portforward.k8s.io", "v4.channel.k8s.io"];
/// SPDY stream protocols for exec and attach.
const SPDY_COMMAND_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
];
/// SPDY stream protocol for port-forward.
const SPDY_PORTFORWARD_PROTOCOLS: &[&str] = &["portforward.k8s.io"];

/// How long a client may take to send its request head.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

type Body = Full<Bytes>;

/// Accepts connections until the process ends.
pub(super) async fn serve(listener: TcpListener, tokens: Arc<Tokens<Target>>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "streaming server: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let tokens = Arc::clone(&tokens);
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, Arc::clone(&tokens)));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                // A connection that never sends its request does not hold a task for ever.
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "streaming connection ended");
            }
        });
    }
}

fn plain(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response
}

/// Every value of header `name`, comma-separated lists split.
fn header_values(request: &Request<Incoming>, name: &str) -> Vec<String> {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The first protocol of the client's that we support.
fn negotiate(offered: &[String], supported: &[&str]) -> Option<String> {
    offered
        .iter()
        .find(|p| supported.contains(&p.as_str()))
        .cloned()
}

fn is_upgrade_to(request: &Request<Incoming>, protocol: &str) -> bool {
    header_values(request, UPGRADE.as_str())
        .iter()
        .any(|p| p.eq_ignore_ascii_case(protocol))
}

async fn handle(
    mut request: Request<Incoming>,
    tokens: Arc<Tokens<Target>>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().trim_start_matches('/').to_string();
    let Some((kind, token)) = path.split_once('/') else {
        return Ok(plain(StatusCode::NOT_FOUND, "no such streaming URL"));
    };
    let target = match tokens.take(token) {
        Some(target) if target.kind() == kind => target,
        _ => {
            tracing::info!(kind, "refused an unknown, used or expired streaming token");
            return Ok(plain(
                StatusCode::NOT_FOUND,
                "unknown, used or expired streaming token",
            ));
        }
    };
    let is_command = !matches!(target, Target::PortForward(_));
    if is_upgrade_to(&request, "websocket") {
        let supported = if is_command {
            WEBSOCKET_COMMAND_PROTOCOLS
        } else {
            WEBSOCKET_PORTFORWARD_PROTOCOLS
        };
        let offered = header_values(&request, "sec-websocket-protocol");
        // No subprotocol at all is the channel protocol, as the kubelet takes it.
        let negotiated = if offered.is_empty() {
            Some(String::new())
        } else {
            negotiate(&offered, supported)
        };
        let Some(protocol) = negotiated else {
            // 400: client-go takes a failed upgrade as the cue to fall back to SPDY.
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                &format!(
                    "none of the WebSocket subprotocols {offered:?} is supported; supported: {supported:?}"
                ),
            ));
        };
        let ports = if is_command || protocol.starts_with("SPDY/3.1+") {
            Vec::new()
        } else {
            match portforward::ports_of_query(request.uri().query().unwrap_or_default()) {
                Ok(ports) => ports,
                Err(message) => return Ok(plain(StatusCode::BAD_REQUEST, &message)),
            }
        };
        let Some(key) = request.headers().get("sec-websocket-key") else {
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                "Sec-WebSocket-Key is missing",
            ));
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut request);
        let chosen = protocol.clone();
        tokio::spawn(async move {
            match upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        None,
                    )
                    .await;
                    match target {
                        Target::PortForward(forward) if chosen.starts_with("SPDY/3.1+") => {
                            portforward::serve_spdy(tunnel::bridge(socket), forward).await;
                        }
                        Target::PortForward(forward) => {
                            portforward::serve_websocket(socket, forward, ports).await;
                        }
                        command => websocket::serve_command(socket, &chosen, command).await,
                    }
                }
                Err(e) => tracing::warn!(error = %e, "WebSocket upgrade failed"),
            }
        });
        let mut response = plain(StatusCode::SWITCHING_PROTOCOLS, "");
        *response.body_mut() = Full::new(Bytes::new());
        let headers = response.headers_mut();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(value) = HeaderValue::from_str(&accept) {
            headers.insert("sec-websocket-accept", value);
        }
        if !protocol.is_empty()
            && let Ok(value) = HeaderValue::from_str(&protocol)
        {
            headers.insert("sec-websocket-protocol", value);
        }
        return Ok(response);
    }
    if is_upgrade_to(&request, "SPDY/3.1") {
        let supported = if is_command {
            SPDY_COMMAND_PROTOCOLS
        } else {
            SPDY_PORTFORWARD_PROTOCOLS
        };
        let offered = header_values(&request, "x-stream-protocol-version");
        let Some(protocol) = negotiate(&offered, supported) else {
            return Ok(plain(
                StatusCode::FORBIDDEN,
                &format!(
                    "none of the stream protocols {offered:?} is supported; supported: {supported:?}"
                ),
            ));
        };
        let upgrade = hyper::upgrade::on(&mut request);
        let chosen = protocol.clone();
        tokio::spawn(async move {
            match upgrade.await {
                Ok(upgraded) => {
                    let io = TokioIo::new(upgraded);
                    match target {
                        Target::PortForward(forward) => portforward::serve_spdy(io, forward).await,
                        command => spdy_command::serve(io, &chosen, command).await,
                    }
                }
                Err(e) => tracing::warn!(error = %e, "SPDY upgrade failed"),
            }
        });
        let mut response = plain(StatusCode::SWITCHING_PROTOCOLS, "");
        *response.body_mut() = Full::new(Bytes::new());
        let headers = response.headers_mut();
        headers.insert(UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(value) = HeaderValue::from_str(&protocol) {
            headers.insert("x-stream-protocol-version", value);
        }
        return Ok(response);
    }
    Ok(plain(
        StatusCode::BAD_REQUEST,
        "upgrade to websocket or SPDY/3.1 required",
    ))
}

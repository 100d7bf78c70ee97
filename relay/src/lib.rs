//! One proxy hop for the kubelet's streaming requests: the API server forwards `pods/log`,
//! `exec`, `attach` and `portforward` to the node's kubelet endpoint, which forwards exec,
//! attach and port-forward to the runtime's streaming server. Each hop sends the request on a
//! connection its caller opened (TLS or not) and, when the far side switches protocols (101,
//! SPDY or WebSocket), splices the two upgraded connections byte for byte, so that neither hop
//! needs to understand the stream protocol.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why a request could not be relayed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The HTTP exchange with the backend failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// Headers that carry the caller's credentials or belong to this hop only: never forwarded
/// (the hop authenticates on its own behalf; `Connection` and `Upgrade` are kept, an upgrade
/// is what is relayed).
const NOT_FORWARDED: &[HeaderName] = &[
    header::AUTHORIZATION,
    header::HOST,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

/// The request headers to send on to the backend: all but credentials, hop-only ones and
/// impersonation, which the hop has already resolved.
pub fn forwarded_headers(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(name, _)| {
            !NOT_FORWARDED.contains(name) && !name.as_str().starts_with("impersonate-")
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Whether `headers` ask for a protocol upgrade.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Sends `request` on `backend` and answers the backend's response. When the backend switches
/// protocols and `client` is the caller's own pending upgrade, the two connections are joined
/// in the background once the caller has passed the 101 on; the response then has an empty
/// body. Any other response is the caller's to stream or read.
pub async fn forward<IO>(
    backend: IO,
    request: Request<Full<Bytes>>,
    client: Option<OnUpgrade>,
) -> Result<Response<Incoming>, RelayError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(backend))
        .await
        .map_err(RelayError::Http)?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "relayed backend connection ended with an error");
        }
    });
    let mut response = sender.send_request(request).await?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client) = client
    {
        let backend = hyper::upgrade::on(&mut response);
        tokio::spawn(splice(client, backend));
    }
    Ok(response)
}

/// Copies both ways between two upgraded connections until both directions end.
async fn splice(client: OnUpgrade, backend: OnUpgrade) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(both) => both,
        Err(error) => {
            tracing::debug!(%error, "upgrade not completed; nothing to relay");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut backend = TokioIo::new(backend);
    match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        Ok((up, down)) => tracing::debug!(up, down, "relayed stream ended"),
        Err(error) => tracing::debug!(%error, "relayed stream ended with an error"),
    }
}

/// The head of `response` (status and headers) over `body`: what a hop answers its own client.
pub fn with_body<B>(response: &Response<Incoming>, body: B) -> Response<B> {
    let mut out = Response::new(body);
    *out.status_mut() = response.status();
    *out.headers_mut() = response.headers().clone();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn credentials_and_impersonation_are_not_forwarded() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        headers.insert("impersonate-user", HeaderValue::from_static("eve"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(
            "x-stream-protocol-version",
            HeaderValue::from_static("v4.channel.k8s.io"),
        );
        let forwarded = forwarded_headers(&headers);
        assert!(forwarded.get(header::AUTHORIZATION).is_none());
        assert!(forwarded.get("impersonate-user").is_none());
        assert_eq!(forwarded.len(), 3);
        assert!(wants_upgrade(&forwarded));
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!wants_upgrade(&headers));
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(wants_upgrade(&headers));
    }

    /// A backend that upgrades and echoes, behind a hop that relays with [`forward`]: bytes
    /// written by the client after the 101 come back through both hops.
    #[tokio::test]
    async fn an_upgraded_stream_is_spliced_through_the_hop() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_addr = backend.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = backend.accept().await.unwrap();
            let service = hyper::service::service_fn(|mut request: Request<Incoming>| async move {
                let upgrade = hyper::upgrade::on(&mut request);
                tokio::spawn(async move {
                    let mut io = TokioIo::new(upgrade.await.unwrap());
                    let mut buf = [0u8; 5];
                    io.read_exact(&mut buf).await.unwrap();
                    io.write_all(&buf).await.unwrap();
                });
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                response
                    .headers_mut()
                    .insert(header::UPGRADE, http::HeaderValue::from_static("echo"));
                response.headers_mut().insert(
                    header::CONNECTION,
                    http::HeaderValue::from_static("Upgrade"),
                );
                Ok::<_, std::convert::Infallible>(response)
            });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
                .unwrap();
        });

        let hop = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hop_addr = hop.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = hop.accept().await.unwrap();
            let service =
                hyper::service::service_fn(move |mut request: Request<Incoming>| async move {
                    let client = request.extensions_mut().remove::<OnUpgrade>();
                    let mut outgoing = Request::new(Full::new(Bytes::new()));
                    *outgoing.uri_mut() = "/echo".parse().unwrap();
                    *outgoing.headers_mut() = forwarded_headers(request.headers());
                    let conn = tokio::net::TcpStream::connect(backend_addr).await.unwrap();
                    let response = forward(conn, outgoing, client).await.unwrap();
                    Ok::<_, std::convert::Infallible>(with_body(&response, Full::new(Bytes::new())))
                });
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
                .unwrap();
        });

        let mut client = tokio::net::TcpStream::connect(hop_addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: hop\r\nConnection: Upgrade\r\nUpgrade: echo\r\nAuthorization: Bearer secret\r\n\r\n")
            .await
            .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            client.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        client.write_all(b"hello").await.unwrap();
        let mut echoed = [0u8; 5];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"hello");
    }
}

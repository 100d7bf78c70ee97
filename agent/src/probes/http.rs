//! The HTTP GET that httpGet probes and lifecycle hooks make, with the kubelet's rules: one
//! connection per request, a bounded body, redirects followed only while they stay on the same
//! host, and HTTPS without certificate verification (a pod's certificate is rarely one the node
//! could check).

use std::sync::Arc;
use std::time::Duration;

use capstan_tls::AnyServerCertificate;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONNECTION, HOST, HeaderName, HeaderValue, LOCATION, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How much of a response body is kept: the kubelet keeps 10 KiB for its event message.
pub const MAX_BODY: usize = 10 * 1024;
/// Redirects followed at most, as Go's HTTP client does.
pub const MAX_REDIRECTS: usize = 10;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// HTTPS instead of HTTP.
    pub https: bool,
    /// Host name or IP address, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// `host:port` as it goes in a Host header, IPv6 addresses bracketed.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn parse_authority(authority: &str, https: bool) -> Option<(String, u16)> {
        let default = if https { 443 } else { 80 };
        if let Some(rest) = authority.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => default,
                None => return None,
            };
            return Some((host.to_string(), port));
        }
        match authority.rsplit_once(':') {
            Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
            None => Some((authority.to_string(), default)),
        }
    }

    /// The target of a `Location` header, relative to this URL.
    pub fn join(&self, location: &str) -> Option<Url> {
        let absolute = |rest: &str, https: bool| -> Option<Url> {
            let (authority, path) = match rest.find(['/', '?']) {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let (host, port) = Self::parse_authority(authority, https)?;
            let path = if path.starts_with('?') {
                format!("/{path}")
            } else {
                path.to_string()
            };
            Some(Url {
                https,
                host,
                port,
                path,
            })
        };
        let lower = location.to_ascii_lowercase();
        if lower.starts_with("http://") {
            absolute(&location[7..], false)
        } else if lower.starts_with("https://") {
            absolute(&location[8..], true)
        } else if let Some(rest) = location.strip_prefix("//") {
            absolute(rest, self.https)
        } else if location.starts_with('/') {
            Some(Url {
                path: location.to_string(),
                ..self.clone()
            })
        } else {
            // Relative to the current path's directory.
            let current = self.path.split('?').next().unwrap_or("/");
            let dir = match current.rfind('/') {
                Some(i) => &current[..=i],
                None => "/",
            };
            Some(Url {
                path: format!("{dir}{location}"),
                ..self.clone()
            })
        }
    }
}

/// What a GET answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code of the last response.
    pub status: u16,
    /// The first [`MAX_BODY`] bytes of its body.
    pub body: Vec<u8>,
    /// The last response is a redirect that was not followed because it left the host.
    pub redirect_stopped: bool,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Probes and hooks talk to the pod's own endpoint, whose certificate the node has no way
    // to judge; the kubelet skips the check too.
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(AnyServerCertificate::new(provider))
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn connect(url: &Url) -> Result<Box<dyn Io>, String> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("dial tcp {}: {e}", url.authority()))?;
    if !url.https {
        return Ok(Box::new(tcp));
    }
    let name = ServerName::try_from(url.host.clone())
        .map_err(|e| format!("invalid TLS server name {:?}: {e}", url.host))?;
    let tls = tls_connector()?
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {}: {e}", url.authority()))?;
    Ok(Box::new(tls))
}

/// One request on a fresh connection: status, Location and the bounded body.
async fn get_once(
    url: &Url,
    headers: &[(String, String)],
    user_agent: &str,
) -> Result<(u16, Option<String>, Vec<u8>), String> {
    let io = connect(url).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake with {}: {e}", url.authority()))?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        let mut builder = hyper::Request::get(url.path.as_str());
        let has = |name: &HeaderName| {
            headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(name.as_str()))
        };
        if !has(&HOST) {
            builder = builder.header(HOST, url.authority());
        }
        if !has(&USER_AGENT) {
            builder = builder.header(USER_AGENT, user_agent);
        }
        if !has(&ACCEPT) {
            builder = builder.header(ACCEPT, "*/*");
        }
        builder = builder.header(CONNECTION, "close");
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("invalid header name {name:?}: {e}"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| format!("invalid value of header {name}: {e}"))?;
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("invalid request for {}: {e}", url.path))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("GET {}{}: {e}", url.authority(), url.path))?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body_stream = response.into_body();
        let mut body = Vec::new();
        while body.len() < MAX_BODY {
            match body_stream.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = MAX_BODY - body.len();
                        body.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                Some(Err(e)) => return Err(format!("reading the body: {e}")),
                None => break,
            }
        }
        Ok((status, location, body))
    }
    .await;
    conn.abort();
    result
}

/// GETs `url`, following redirects that stay on the same host (at most [`MAX_REDIRECTS`]),
/// all within `timeout`. `headers` are sent as given; User-Agent and Accept default to
/// `user_agent` and `*/*`, Host to the URL's.
pub async fn get(
    url: &Url,
    headers: &[(String, String)],
    user_agent: &str,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let run = async {
        let mut current = url.clone();
        let mut redirects = 0;
        loop {
            let (status, location, body) = get_once(&current, headers, user_agent).await?;
            let is_redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
            let next = location.as_deref().and_then(|l| current.join(l));
            match next {
                Some(next) if is_redirect => {
                    if !next.host.eq_ignore_ascii_case(&url.host) {
                        return Ok(HttpResponse {
                            status,
                            body,
                            redirect_stopped: true,
                        });
                    }
                    redirects += 1;
                    if redirects > MAX_REDIRECTS {
                        return Err(format!("stopped after {MAX_REDIRECTS} redirects"));
                    }
                    current = next;
                }
                _ => {
                    return Ok(HttpResponse {
                        status,
                        body,
                        redirect_stopped: false,
                    });
                }
            }
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "GET {}{}: timeout after {:?} awaiting response",
            url.authority(),
            url.path,
            timeout
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, path: &str) -> Url {
        Url {
            https: false,
            host: host.into(),
            port,
            path: path.into(),
        }
    }

    #[test]
    fn locations_resolve_like_a_browser() {
        let base = url("10.0.0.1", 8080, "/a/b?x=1");
        assert_eq!(base.join("/c").unwrap(), url("10.0.0.1", 8080, "/c"));
        assert_eq!(base.join("c").unwrap(), url("10.0.0.1", 8080, "/a/c"));
        assert_eq!(
            base.join("http://example.com/z").unwrap(),
            url("example.com", 80, "/z")
        );
        assert_eq!(
            base.join("//10.0.0.1:9/q").unwrap(),
            url("10.0.0.1", 9, "/q")
        );
        let v6 = base.join("https://[fd00::1]:8443").unwrap();
        assert!(v6.https);
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.path.as_str()),
            ("fd00::1", 8443, "/")
        );
        assert_eq!(v6.authority(), "[fd00::1]:8443");
        assert!(base.join("http://host:notaport/").is_none());
    }
}

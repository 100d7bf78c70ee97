//! A tiny Kubernetes API server for tests that drive the real `kubectl`: discovery, GET of the
//! pods it is told about, and the pods/exec, pods/attach and pods/portforward subresources,
//! which it serves as kube-apiserver does, by asking the runtime over CRI for a streaming URL
//! and proxying the upgraded connection to it byte for byte. Every request is logged, so a test
//! can show what kubectl asked.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::cri::CriClient;
use crate::error::{Error, Result};

/// A container of a [`FakePod`].
#[derive(Debug, Clone, Default)]
pub struct FakeContainer {
    /// Its name in the pod.
    pub name: String,
    /// Its CRI container ID.
    pub id: String,
    /// The spec asked for stdin.
    pub stdin: bool,
    /// The spec asked for a TTY.
    pub tty: bool,
}

/// A running pod the server reports (namespace `default`).
#[derive(Debug, Clone, Default)]
pub struct FakePod {
    /// Its name.
    pub name: String,
    /// Its CRI sandbox ID.
    pub sandbox_id: String,
    /// Its containers, the first the default one.
    pub containers: Vec<FakeContainer>,
}

#[derive(Debug)]
struct Shared {
    cri: CriClient,
    pods: Mutex<HashMap<String, FakePod>>,
    requests: Mutex<Vec<String>>,
}

/// The server; it stops when dropped.
#[derive(Debug)]
pub struct FakeApiServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = Full<Bytes>;

impl FakeApiServer {
    /// Serves on a free loopback port, calling the runtime through `cri`.
    pub async fn start(cri: CriClient) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Command(format!("fake API server: listen: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| Error::Command(format!("fake API server: {e}")))?;
        let shared = Arc::new(Shared {
            cri,
            pods: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
        });
        let serving = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&serving);
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(request, Arc::clone(&shared)));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(FakeApiServer {
            address,
            shared,
            task,
        })
    }

    /// Its address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Makes `pod` known.
    pub fn add_pod(&self, pod: FakePod) {
        self.shared
            .pods
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pod.name.clone(), pod);
    }

    /// The requests served so far, as `METHOD path?query [upgrade]`.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Writes a kubeconfig pointing at this server into `dir`; returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n",
            self.address
        );
        std::fs::write(&path, text).map_err(|source| Error::Io {
            what: "write",
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json(
        code,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
        }),
    )
}

fn pod_object(pod: &FakePod) -> serde_json::Value {
    let containers: Vec<_> = pod
        .containers
        .iter()
        .map(|c| serde_json::json!({"name": c.name, "image": "test", "stdin": c.stdin, "tty": c.tty}))
        .collect();
    let statuses: Vec<_> = pod
        .containers
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name, "ready": true, "restartCount": 0, "image": "test", "imageID": "",
                "containerID": format!("capstan://{}", c.id),
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
            })
        })
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": "default", "uid": pod.sandbox_id, "resourceVersion": "1"},
        "spec": {"containers": containers, "nodeName": "capstan"},
        "status": {"phase": "Running", "containerStatuses": statuses},
    })
}

fn discovery(path: &str) -> Option<serde_json::Value> {
    Some(match path {
        "/api" => serde_json::json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        "/apis" => serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        "/api/v1" => {
            let resource = |name: &str, kind: &str, verbs: &[&str]| serde_json::json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": verbs});
            serde_json::json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                resource("pods", "Pod", &["get", "list"]),
                resource("pods/attach", "PodAttachOptions", &["create", "get"]),
                resource("pods/exec", "PodExecOptions", &["create", "get"]),
                resource("pods/portforward", "PodPortForwardOptions", &["create", "get"]),
            ]})
        }
        _ => return None,
    })
}

/// `application/x-www-form-urlencoded` decoding of one value.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> std::result::Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let upgrade = request
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(|v| format!(" [upgrade {v}]"))
        .unwrap_or_default();
    shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(format!("{} {path}?{query}{upgrade}", request.method()));
    if let Some(body) = discovery(&path) {
        return Ok(json(StatusCode::OK, body));
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // api/v1/namespaces/{ns}/pods/{name}[/{subresource}]
    let (name, subresource) = match parts.as_slice() {
        ["api", "v1", "namespaces", _, "pods", name] => (*name, None),
        ["api", "v1", "namespaces", _, "pods", name, sub] => (*name, Some(*sub)),
        _ => {
            return Ok(status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            ));
        }
    };
    let pod = shared
        .pods
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned();
    let Some(pod) = pod else {
        return Ok(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{name}\" not found"),
        ));
    };
    let Some(subresource) = subresource else {
        return Ok(json(StatusCode::OK, pod_object(&pod)));
    };
    let pairs = query_pairs(&query);
    let flag = |name: &str| {
        pairs
            .iter()
            .any(|(n, v)| n == name && matches!(v.as_str(), "true" | "1"))
    };
    let container = pairs
        .iter()
        .find(|(n, _)| n == "container")
        .map(|(_, v)| v.clone());
    let container = match &container {
        Some(name) => pod.containers.iter().find(|c| &c.name == name),
        None => pod.containers.first(),
    };
    let mut cri = shared.cri.runtime.clone();
    let url = match subresource {
        "exec" | "attach" => {
            let Some(container) = container else {
                return Ok(status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "no such container",
                ));
            };
            if subresource == "exec" {
                let cmd = pairs
                    .iter()
                    .filter(|(n, _)| n == "command")
                    .map(|(_, v)| v.clone())
                    .collect();
                cri.exec(capstan_proto::ExecRequest {
                    container_id: container.id.clone(),
                    cmd,
                    tty: flag("tty"),
                    stdin: flag("stdin"),
                    stdout: flag("stdout"),
                    stderr: flag("stderr"),
                })
                .await
                .map(|r| r.into_inner().url)
            } else {
                cri.attach(capstan_proto::AttachRequest {
                    container_id: container.id.clone(),
                    tty: flag("tty"),
                    stdin: flag("stdin"),
                    stdout: flag("stdout"),
                    stderr: flag("stderr"),
                })
                .await
                .map(|r| r.into_inner().url)
            }
        }
        "portforward" => cri
            .port_forward(capstan_proto::PortForwardRequest {
                pod_sandbox_id: pod.sandbox_id.clone(),
                port: Vec::new(),
            })
            .await
            .map(|r| r.into_inner().url),
        _ => {
            return Ok(status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no such subresource",
            ));
        }
    };
    let url = match url {
        Ok(url) => url,
        Err(e) => {
            return Ok(status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("CRI: {}", e.message()),
            ));
        }
    };
    Ok(proxy(request, &url)
        .await
        .unwrap_or_else(|message| status(StatusCode::BAD_GATEWAY, "InternalError", &message)))
}

/// Sends `request` to the streaming `url` and, once both sides switched protocols, copies
/// bytes between the two connections.
async fn proxy(
    mut request: Request<Incoming>,
    url: &str,
) -> std::result::Result<Response<Body>, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("streaming URL {url:?} is not http"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let stream = TcpStream::connect(host)
        .await
        .map_err(|e| format!("connect to {host}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("streaming server: {e}"))?;
    tokio::spawn(connection.with_upgrades());
    let mut upstream = Request::builder()
        .method(request.method())
        .uri(format!("/{path}"));
    for (name, value) in request.headers() {
        if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream
        .header(hyper::header::HOST, host)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let mut answer = sender
        .send_request(upstream)
        .await
        .map_err(|e| format!("streaming server: {e}"))?;
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        let body = answer
            .body_mut()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return response.body(Full::new(body)).map_err(|e| e.to_string());
    }
    let client_side = hyper::upgrade::on(&mut request);
    let server_side = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        if let (Ok(client), Ok(server)) = tokio::join!(client_side, server_side) {
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(server))
                    .await;
        }
    });
    response
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_form_decoded() {
        assert_eq!(
            super::query_pairs("command=sh&command=-c&command=echo+a%3Db%20c"),
            vec![
                ("command".to_string(), "sh".to_string()),
                ("command".to_string(), "-c".to_string()),
                ("command".to_string(), "echo a=b c".to_string()),
            ]
        );
        assert_eq!(super::decode("100%"), "100%");
    }
}

//! Probes against real local servers, and the worker's timing and thresholds with scripted
//! outcomes on a paused clock. Exec probes need a container runtime: the end-to-end tests
//! cover them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{ContainerPort, HTTPHeader};
use tokio::net::TcpListener;

use super::grpc::{HealthCheckRequest, HealthCheckResponse};
use super::worker::{Timing, spawn_with};
use super::*;

type Reply = hyper::Response<Full<Bytes>>;

fn reply(status: u16, location: Option<&str>, body: &str) -> Reply {
    let mut b = hyper::Response::builder().status(status);
    if let Some(l) = location {
        b = b.header("location", l);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

async fn handle(req: hyper::Request<hyper::body::Incoming>) -> Result<Reply, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    Ok(match req.uri().path() {
        "/ok" => reply(200, None, "fine"),
        "/fail" => reply(500, None, "broken"),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            reply(200, None, "late")
        }
        "/redirect" => reply(302, Some("/ok"), ""),
        "/redirect-fail" => reply(301, Some("fail"), ""),
        "/away" => reply(302, Some("http://elsewhere.invalid/fail"), ""),
        "/loop" => reply(302, Some("/loop"), ""),
        "/big" => reply(200, None, &"x".repeat(1 << 20)),
        "/headers" => {
            let ok = header("x-custom") == "yes"
                && header("user-agent") == PROBE_USER_AGENT
                && header("host") == "probe.example"
                && header("accept") == "*/*";
            reply(if ok { 200 } else { 400 }, None, "")
        }
        _ => reply(404, None, ""),
    })
}

async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    });
    addr
}

fn target(port_name: Option<(&str, u16)>) -> ProbeTarget {
    let mut container = Container {
        name: "app".into(),
        ..Default::default()
    };
    if let Some((name, port)) = port_name {
        container.ports = Some(vec![ContainerPort {
            name: Some(name.into()),
            container_port: port as i32,
            ..Default::default()
        }]);
    }
    ProbeTarget {
        pod_ip: Some("127.0.0.1".parse().unwrap()),
        host_network: false,
        container_id: "c1".into(),
        container,
    }
}

fn get_action(port: u16, path: &str) -> HTTPGetAction {
    HTTPGetAction {
        port: IntOrString::Int(port as i32),
        path: Some(path.into()),
        ..Default::default()
    }
}

async fn http(port: u16, path: &str) -> ProbeOutcome {
    http_probe(
        &get_action(port, path),
        &target(None),
        Duration::from_secs(1),
    )
    .await
}

#[tokio::test]
async fn http_probe_results() {
    let port = http_server().await.port();
    assert_eq!(http(port, "/ok").await, ProbeOutcome::Success);
    assert_eq!(
        http(port, "/fail").await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
    );
    assert_eq!(http(port, "ok").await, ProbeOutcome::Success);
    // Same-host redirects are followed to their end.
    assert_eq!(http(port, "/redirect").await, ProbeOutcome::Success);
    assert!(
        matches!(http(port, "/redirect-fail").await, ProbeOutcome::Failure(m) if m.contains("500"))
    );
    // A redirect to another host is not followed, and counts as success.
    assert_eq!(http(port, "/away").await, ProbeOutcome::Success);
    assert!(
        matches!(http(port, "/loop").await, ProbeOutcome::Failure(m) if m.contains("redirects"))
    );
    assert_eq!(http(port, "/big").await, ProbeOutcome::Success);

    let started = std::time::Instant::now();
    let slow = http(port, "/slow").await;
    assert!(
        matches!(&slow, ProbeOutcome::Failure(m) if m.contains("timeout")),
        "{slow:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    let mut with_headers = get_action(port, "/headers");
    with_headers.http_headers = Some(vec![
        HTTPHeader {
            name: "X-Custom".into(),
            value: "yes".into(),
        },
        HTTPHeader {
            name: "Host".into(),
            value: "probe.example".into(),
        },
    ]);
    let t = target(None);
    assert_eq!(
        http_probe(&with_headers, &t, Duration::from_secs(1)).await,
        ProbeOutcome::Success
    );
    assert!(matches!(
        http(port, "/headers").await,
        ProbeOutcome::Failure(_)
    ));

    // Named ports resolve through the container's ports; unknown names cannot be probed.
    let named = HTTPGetAction {
        port: IntOrString::String("web".into()),
        path: Some("/ok".into()),
        ..Default::default()
    };
    assert_eq!(
        http_probe(&named, &target(Some(("web", port))), Duration::from_secs(1)).await,
        ProbeOutcome::Success
    );
    assert!(matches!(
        http_probe(&named, &target(None), Duration::from_secs(1)).await,
        ProbeOutcome::Unknown(_)
    ));

    // Nothing listening: a failure.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    assert!(matches!(
        http(closed_port, "/ok").await,
        ProbeOutcome::Failure(_)
    ));
}

#[tokio::test]
async fn response_bodies_are_bounded() {
    let port = http_server().await.port();
    let url = http::Url {
        https: false,
        host: "127.0.0.1".into(),
        port,
        path: "/big".into(),
    };
    let r = http::get(&url, &[], "test", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), http::MAX_BODY);
    let away = http::Url {
        path: "/away".into(),
        ..url
    };
    let r = http::get(&away, &[], "test", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!((r.status, r.redirect_stopped), (302, true));
}

#[tokio::test]
async fn tcp_probe_results() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    assert_eq!(
        tcp_probe("127.0.0.1", port, Duration::from_secs(1)).await,
        ProbeOutcome::Success
    );
    drop(listener);
    assert!(matches!(
        tcp_probe("127.0.0.1", port, Duration::from_secs(1)).await,
        ProbeOutcome::Failure(_)
    ));
}

#[test]
fn hosts_and_ports() {
    let mut t = target(Some(("web", 8080)));
    assert_eq!(t.resolve_port(&IntOrString::String("web".into())), Ok(8080));
    assert_eq!(t.resolve_port(&IntOrString::String("81".into())), Ok(81));
    assert!(t.resolve_port(&IntOrString::Int(0)).is_err());
    assert!(t.resolve_port(&IntOrString::Int(70000)).is_err());
    t.pod_ip = Some("10.0.0.9".parse().unwrap());
    assert_eq!(t.default_host().unwrap().to_string(), "10.0.0.9");
    t.host_network = true;
    assert_eq!(t.default_host().unwrap().to_string(), "127.0.0.1");
    t.host_network = false;
    t.pod_ip = None;
    assert!(t.default_host().is_err());

    let action = HTTPGetAction {
        port: IntOrString::Int(443),
        scheme: Some("HTTPS".into()),
        host: Some("example.com".into()),
        path: Some("healthz?full=1".into()),
        ..Default::default()
    };
    let (url, _) = http_request(&action, &target(None)).unwrap();
    assert!(url.https);
    assert_eq!(url.authority(), "example.com:443");
    assert_eq!(url.path, "/healthz?full=1");
}

/// A grpc.health.v1 server answering every check with one status.
#[derive(Clone)]
struct Health(i32);

impl tonic::server::NamedService for Health {
    const NAME: &'static str = "grpc.health.v1.Health";
}

struct Check(i32);

impl tonic::server::UnaryService<HealthCheckRequest> for Check {
    type Response = HealthCheckResponse;
    type Future = std::future::Ready<Result<tonic::Response<HealthCheckResponse>, tonic::Status>>;
    fn call(&mut self, request: tonic::Request<HealthCheckRequest>) -> Self::Future {
        let status = if request.get_ref().service == "missing" {
            3
        } else {
            self.0
        };
        std::future::ready(Ok(tonic::Response::new(HealthCheckResponse { status })))
    }
}

impl tower::Service<tonic::codegen::http::Request<tonic::body::Body>> for Health {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;
    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, request: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        let status = self.0;
        Box::pin(async move {
            let codec: tonic_prost::ProstCodec<HealthCheckResponse, HealthCheckRequest> =
                tonic_prost::ProstCodec::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            Ok(grpc.unary(Check(status), request).await)
        })
    }
}

async fn grpc_server(status: i32) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Health(status))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    port
}

#[tokio::test]
async fn grpc_probe_results() {
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let second = Duration::from_secs(1);
    let serving = grpc_server(1).await;
    assert_eq!(
        grpc::probe(ip, serving, "", second).await,
        ProbeOutcome::Success
    );
    assert_eq!(
        grpc::probe(ip, serving, "missing", second).await,
        ProbeOutcome::Failure("service unhealthy (responded with \"SERVICE_UNKNOWN\")".into())
    );
    let not_serving = grpc_server(2).await;
    assert!(matches!(
        grpc::probe(ip, not_serving, "", second).await,
        ProbeOutcome::Failure(m) if m.contains("NOT_SERVING")
    ));
    // An HTTP/1 server is no grpc health server.
    let http_port = http_server().await.port();
    assert!(matches!(
        grpc::probe(ip, http_port, "", second).await,
        ProbeOutcome::Failure(_)
    ));
}

/// Scripted outcomes, then `tail` for ever; counts the runs.
fn script(
    outcomes: Vec<ProbeOutcome>,
    tail: ProbeOutcome,
) -> (
    Arc<AtomicUsize>,
    impl FnMut() -> std::future::Ready<ProbeOutcome> + Send + 'static,
) {
    let runs = Arc::new(AtomicUsize::new(0));
    let queue = Arc::new(Mutex::new(VecDeque::from(outcomes)));
    let counter = runs.clone();
    let f = move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let next = queue.lock().unwrap().pop_front().unwrap_or(tail.clone());
        std::future::ready(next)
    };
    (runs, f)
}

fn timing(success: u32, failure: u32, delay: u64) -> Timing {
    Timing {
        initial_delay: Duration::from_secs(delay),
        period: Duration::from_secs(10),
        success_threshold: success,
        failure_threshold: failure,
    }
}

async fn at(seconds: f64, start: tokio::time::Instant) {
    tokio::time::sleep_until(start + Duration::from_secs_f64(seconds)).await;
}

fn fail() -> ProbeOutcome {
    ProbeOutcome::Failure("boom".into())
}

#[tokio::test(start_paused = true)]
async fn liveness_fails_on_the_third_failure_and_stops() {
    let counters = Arc::new(ProbeCounters::default());
    let start = tokio::time::Instant::now();
    let (runs, f) = script(
        vec![
            ProbeOutcome::Success,
            fail(),
            fail(),
            ProbeOutcome::Unknown("runtime down".into()),
            ProbeOutcome::Success,
            fail(),
            fail(),
        ],
        fail(),
    );
    let handle = spawn_with(
        ProbeKind::Liveness,
        timing(1, 3, 0),
        SystemTime::now(),
        counters.clone(),
        f,
    );
    // Liveness starts out passing.
    assert_eq!(handle.current().result, ProbeResult::Success);
    assert!(!handle.current().probed);
    // t=0 S, 10 F, 20 F, 30 Unknown (not counted), 40 S (resets), 50 F, 60 F, 70 F.
    at(65.0, start).await;
    assert_eq!(handle.current().result, ProbeResult::Success);
    assert_eq!(runs.load(Ordering::SeqCst), 7);
    at(71.0, start).await;
    let state = handle.current();
    assert_eq!(state.result, ProbeResult::Failure);
    assert_eq!(state.message.as_deref(), Some("boom"));
    // On hold after a liveness failure: no more runs.
    at(200.0, start).await;
    assert_eq!(runs.load(Ordering::SeqCst), 8);
    assert!(handle.finished());
    assert_eq!(counters.get(ProbeKind::Liveness, "successful"), 2);
    assert_eq!(counters.get(ProbeKind::Liveness, "failed"), 5);
    assert_eq!(counters.get(ProbeKind::Liveness, "unknown"), 1);
}

#[tokio::test(start_paused = true)]
async fn readiness_needs_its_success_threshold() {
    let start = tokio::time::Instant::now();
    let (_, f) = script(
        vec![
            ProbeOutcome::Success,
            ProbeOutcome::Success,
            fail(),
            ProbeOutcome::Success,
        ],
        ProbeOutcome::Success,
    );
    let handle = spawn_with(
        ProbeKind::Readiness,
        timing(2, 1, 0),
        SystemTime::now(),
        Arc::new(ProbeCounters::default()),
        f,
    );
    let mut changes = handle.subscribe();
    assert_eq!(handle.current().result, ProbeResult::Failure);
    at(5.0, start).await; // one success: not yet
    assert_eq!(handle.current().result, ProbeResult::Failure);
    at(15.0, start).await; // two: ready
    assert_eq!(handle.current().result, ProbeResult::Success);
    assert!(changes.has_changed().unwrap());
    changes.borrow_and_update();
    at(25.0, start).await; // one failure with failureThreshold 1
    assert_eq!(handle.current().result, ProbeResult::Failure);
    at(35.0, start).await; // one success again: not yet
    assert_eq!(handle.current().result, ProbeResult::Failure);
    at(45.0, start).await;
    assert_eq!(handle.current().result, ProbeResult::Success);
    assert!(!handle.finished(), "readiness keeps probing");
}

#[tokio::test(start_paused = true)]
async fn initial_delay_startup_and_drop() {
    let start = tokio::time::Instant::now();
    let (runs, f) = script(vec![fail()], ProbeOutcome::Success);
    let handle = spawn_with(
        ProbeKind::Startup,
        timing(1, 3, 15),
        SystemTime::now(),
        Arc::new(ProbeCounters::default()),
        f,
    );
    at(14.0, start).await;
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    at(16.0, start).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    at(26.0, start).await;
    // Started: the startup probe is done for good.
    assert_eq!(handle.current().result, ProbeResult::Success);
    assert!(handle.current().probed);
    at(100.0, start).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    let (runs, f) = script(vec![], ProbeOutcome::Success);
    let handle = spawn_with(
        ProbeKind::Readiness,
        timing(1, 3, 0),
        SystemTime::now(),
        Arc::new(ProbeCounters::default()),
        f,
    );
    at(121.0, start).await;
    let before = runs.load(Ordering::SeqCst);
    assert!(before >= 2);
    drop(handle);
    at(200.0, start).await;
    assert_eq!(runs.load(Ordering::SeqCst), before);
}

/// An HTTPS server with a throw-away self-signed certificate (made by the openssl command).
/// None when the openssl command is missing.
async fn https_server(dir: &std::path::Path) -> Option<u16> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=pod.example",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) => assert!(s.success(), "openssl failed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("openssl: {e}"),
    }
    let certs = vec![CertificateDer::from_pem_file(&cert).unwrap()];
    let key = PrivateKeyDer::from_pem_file(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service_fn(handle))
                        .await;
                }
            });
        }
    });
    Some(port)
}

#[tokio::test]
async fn https_probes_skip_certificate_checks() {
    let dir = tempfile::tempdir().unwrap();
    let Some(port) = https_server(dir.path()).await else {
        eprintln!("skipped: no openssl command to make a certificate");
        return;
    };
    let mut action = get_action(port, "/ok");
    action.scheme = Some("HTTPS".into());
    let second = Duration::from_secs(2);
    assert_eq!(
        http_probe(&action, &target(None), second).await,
        ProbeOutcome::Success
    );
    action.path = Some("/fail".into());
    assert_eq!(
        http_probe(&action, &target(None), second).await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
    );
    // HTTPS against a plain HTTP server fails instead of hanging.
    let plain = http_server().await.port();
    let mut action = get_action(plain, "/ok");
    action.scheme = Some("HTTPS".into());
    assert!(matches!(
        http_probe(&action, &target(None), second).await,
        ProbeOutcome::Failure(m) if m.contains("TLS")
    ));
}

#[test]
fn exec_results_are_judged_like_the_kubelet() {
    use crate::cri::ExecOutcome;
    let cmd = vec!["cat".to_string(), "/tmp/healthy".to_string()];
    let out = |code: i32, stdout: &str| {
        Some(Ok(ExecOutcome {
            stdout: stdout.as_bytes().to_vec(),
            stderr: b"err\n".to_vec(),
            exit_code: code,
        }))
    };
    assert_eq!(super::exec_outcome(&cmd, out(0, "")), ProbeOutcome::Success);
    assert_eq!(
        super::exec_outcome(&cmd, out(1, "no such file\n")),
        ProbeOutcome::Failure(
            "command [\"cat\", \"/tmp/healthy\"] exited with 1: no such file\nerr".into()
        )
    );
    assert!(matches!(
        super::exec_outcome(&cmd, Some(Err(tonic::Status::deadline_exceeded("slow")))),
        ProbeOutcome::Failure(m) if m.ends_with("timed out")
    ));
    assert!(matches!(
        super::exec_outcome(&cmd, None),
        ProbeOutcome::Failure(_)
    ));
    assert!(matches!(
        super::exec_outcome(&cmd, Some(Err(tonic::Status::not_found("no container")))),
        ProbeOutcome::Unknown(_)
    ));
}

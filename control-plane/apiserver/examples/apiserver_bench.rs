//! Benchmark of `capstan control-plane` (not a test): start-up to `/readyz`, idle RSS, pod
//! create latency at a steady rate, RSS with many pods stored, a LIST of them (time and RSS
//! meanwhile), and many watchers of pods while pods are created (delivery latency, RSS). It
//! talks HTTPS/2 with the admin client certificate the server writes, as kubectl would.
//!
//! `cargo build --release --bin capstan && cargo run --release -p capstan-apiserver --example
//! apiserver_bench -- [--capstan target/release/capstan] [--pods 10000] [--creates 1000]
//! [--rate 100] [--clients 10] [--watchers 100] [--watch-creates 1000]`
//!
//! The data directory is a fresh temp directory (`TMPDIR`), so the disk measured is that one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use capstan_testkit::process::{free_port, rss_mib};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Sender = SendRequest<Full<Bytes>>;

struct Options {
    capstan: PathBuf,
    pods: usize,
    creates: usize,
    rate: u64,
    clients: usize,
    watchers: usize,
    watch_creates: usize,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let number =
        |flag: &str, default: usize| value(flag).and_then(|v| v.parse().ok()).unwrap_or(default);
    Options {
        capstan: value("--capstan")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target/release/capstan")),
        pods: number("--pods", 10_000),
        creates: number("--creates", 1000),
        rate: number("--rate", 100) as u64,
        clients: number("--clients", 10),
        watchers: number("--watchers", 100),
        watch_creates: number("--watch-creates", 1000),
    }
}

/// The server process.
struct Server {
    child: Child,
    address: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples the process's RSS until dropped; the peak seen.
struct RssPeak {
    peak: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
}

impl RssPeak {
    fn start(pid: u32) -> RssPeak {
        let peak = Arc::new(AtomicU64::new(0));
        let running = Arc::new(AtomicBool::new(true));
        let (p, r) = (peak.clone(), running.clone());
        std::thread::spawn(move || {
            while r.load(Ordering::SeqCst) {
                let kib = (rss_mib(pid) * 1024.0) as u64;
                p.fetch_max(kib, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RssPeak { peak, running }
    }

    fn stop(self) -> f64 {
        self.running.store(false, Ordering::SeqCst);
        self.peak.load(Ordering::SeqCst) as f64 / 1024.0
    }
}

fn tls_config(pki: &Path) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(pki.join("ca.crt"))?)?;
    let chain = vec![CertificateDer::from_pem_file(pki.join("admin.crt"))?.into_owned()];
    let key = PrivateKeyDer::from_pem_file(pki.join("admin.key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

async fn connect(address: SocketAddr, tls: &Arc<rustls::ClientConfig>) -> Result<Sender, Error> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::IpAddress(address.ip().into());
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn call(
    sender: &mut Sender,
    address: SocketAddr,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(u16, Bytes), Error> {
    let request = Request::builder()
        .method(method)
        .uri(format!("https://{address}{path}"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let code = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((code, body))
}

/// Starts the server on a fresh data directory; the time until `/readyz` answered `ok`.
async fn start(options: &Options, data_dir: &Path) -> Result<(Server, Duration), Error> {
    let port = free_port()?;
    let started = Instant::now();
    let child = Command::new(&options.capstan)
        .args([
            "--log-level",
            "warn",
            "control-plane",
            "--bind-address",
            "127.0.0.1",
        ])
        .arg("--secure-port")
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = started + Duration::from_secs(30);
    loop {
        if Instant::now() > deadline {
            return Err("the server did not get ready in 30 s".into());
        }
        if data_dir.join("pki/admin.key").exists() {
            if let Ok(tls) = tls_config(&data_dir.join("pki")) {
                if let Ok(mut sender) = connect(address, &tls).await {
                    if let Ok((200, body)) =
                        call(&mut sender, address, "GET", "/readyz", None).await
                    {
                        if body.as_ref() == b"ok" {
                            let ready = started.elapsed();
                            return Ok((
                                Server {
                                    child,
                                    address,
                                    tls,
                                },
                                ready,
                            ));
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn pod(name: &str) -> String {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{
            "name": "app", "image": "registry.k8s.io/pause:3.10",
            "ports": [{"containerPort": 8080}],
            "env": [{"name": "MODE", "value": "bench"}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}
        }]}
    })
    .to_string()
}

const PODS: &str = "/api/v1/namespaces/default/pods";

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `total` creates from `clients` clients, each at `rate / clients` per second; latencies,
/// and the send times by name when `sent` is given.
async fn paced_creates(
    server: &Server,
    prefix: &str,
    total: usize,
    rate: u64,
    clients: usize,
    sent: Option<Arc<Mutex<HashMap<String, Instant>>>>,
) -> Result<Vec<Duration>, Error> {
    let period = Duration::from_micros(1_000_000 * clients as u64 / rate.max(1));
    let mut tasks = Vec::new();
    for client in 0..clients {
        let mut sender = connect(server.address, &server.tls).await?;
        let address = server.address;
        let prefix = prefix.to_string();
        let sent = sent.clone();
        let count = total / clients;
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            // Spread the clients over the period.
            tokio::time::sleep(period * client as u32 / clients as u32).await;
            let mut latencies = Vec::with_capacity(count);
            for i in 0..count {
                ticks.tick().await;
                let name = format!("{prefix}-{client}-{i}");
                let body = pod(&name);
                let t = Instant::now();
                if let Some(sent) = &sent {
                    sent.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.clone(), t);
                }
                let (code, answer) = call(&mut sender, address, "POST", PODS, Some(body)).await?;
                if code != 201 {
                    return Err(format!(
                        "create {name}: {code} {}",
                        String::from_utf8_lossy(&answer)
                    )
                    .into());
                }
                latencies.push(t.elapsed());
            }
            Ok::<_, Error>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    latencies.sort();
    Ok(latencies)
}

/// Creates pods as fast as `concurrency` clients can until `total` exist from this call.
async fn fill(server: &Server, total: usize, concurrency: usize) -> Result<Duration, Error> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let mut sender = connect(server.address, &server.tls).await?;
        let address = server.address;
        tasks.push(tokio::spawn(async move {
            for i in (worker..total).step_by(concurrency) {
                let name = format!("fill-{i}");
                let (code, answer) =
                    call(&mut sender, address, "POST", PODS, Some(pod(&name))).await?;
                if code != 201 {
                    return Err::<(), Error>(
                        format!("create {name}: {code} {}", String::from_utf8_lossy(&answer))
                            .into(),
                    );
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(started.elapsed())
}

/// The name of the pod an ADDED watch line carries (the first `"name"` in its metadata: the
/// keys before it sort before it), without parsing the whole object.
fn added_name(line: &str) -> Option<&str> {
    // "type" comes last with sorted keys, first with serde_json's preserve_order.
    if !line.ends_with("\"type\":\"ADDED\"}") && !line.starts_with("{\"type\":\"ADDED\"") {
        return None;
    }
    let metadata = line.find("\"metadata\":{")?;
    let rest = &line[metadata..];
    let start = rest.find("\"name\":\"")? + 8;
    let end = rest[start..].find('"')?;
    Some(&rest[start..start + end])
}

/// Follows one watch, recording the delay between each bench pod's create being sent and its
/// ADDED event arriving, until `expected` arrived.
async fn watch_one(
    mut sender: Sender,
    address: SocketAddr,
    path: String,
    sent: Arc<Mutex<HashMap<String, Instant>>>,
    expected: usize,
) -> Result<Vec<Duration>, Error> {
    let request = Request::builder()
        .uri(format!("https://{address}{path}"))
        .body(Full::new(Bytes::new()))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let mut body = response.into_body();
    let mut buffer: Vec<u8> = Vec::new();
    let mut latencies = Vec::with_capacity(expected);
    while latencies.len() < expected {
        let Some(frame) = body.frame().await else {
            return Err(format!("watch ended after {} events", latencies.len()).into());
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let now = Instant::now();
        buffer.extend_from_slice(&data);
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            if let Some(name) = added_name(text.trim_end()) {
                let at = sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(name)
                    .copied();
                if let Some(at) = at {
                    latencies.push(now.duration_since(at));
                }
            }
        }
    }
    Ok(latencies)
}

async fn run(options: Options) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let (server, ready) = start(&options, &data_dir).await?;
    let pid = server.child.id();
    println!("start-up to /readyz ok (fresh data dir): {}", ms(ready));
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("idle RSS: {:.1} MiB", rss_mib(pid));

    let latencies = paced_creates(
        &server,
        "paced",
        options.creates,
        options.rate,
        options.clients,
        None,
    )
    .await?;
    println!(
        "pod create at {}/s from {} clients ({} creates): p50 {}, p99 {}, max {}",
        options.rate,
        options.clients,
        latencies.len(),
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.99)),
        ms(quantile(&latencies, 1.0)),
    );

    let remaining = options.pods.saturating_sub(latencies.len());
    let filled = fill(&server, remaining, 16).await?;
    println!(
        "filled to {} pods: {remaining} creates by 16 clients in {:.1} s ({:.0}/s)",
        options.pods,
        filled.as_secs_f64(),
        remaining as f64 / filled.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "RSS with {} pods stored: {:.1} MiB",
        options.pods,
        rss_mib(pid)
    );

    let mut sender = connect(server.address, &server.tls).await?;
    for (label, path) in [
        (
            "LIST (resourceVersion=\"\", from the store)",
            "/api/v1/pods".to_string(),
        ),
        ("LIST again", "/api/v1/pods".to_string()),
    ] {
        let peak = RssPeak::start(pid);
        let t = Instant::now();
        let (code, body) = call(&mut sender, server.address, "GET", &path, None).await?;
        let took = t.elapsed();
        let peak = peak.stop();
        let items = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["items"].as_array().map(Vec::len))
            .unwrap_or(0);
        println!(
            "{label} of {items} pods: {} ({code}, {:.1} MiB body), peak RSS {peak:.1} MiB, after {:.1} MiB",
            ms(took),
            body.len() as f64 / 1048576.0,
            rss_mib(pid)
        );
    }

    // Watchers from the current resourceVersion, spread over ten connections.
    let (_, listed) = call(
        &mut sender,
        server.address,
        "GET",
        &format!("{PODS}?limit=1"),
        None,
    )
    .await?;
    let rv = serde_json::from_slice::<serde_json::Value>(&listed)
        .ok()
        .and_then(|v| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default();
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let expected = (options.watch_creates / options.clients) * options.clients;
    let mut connections = Vec::new();
    for _ in 0..10 {
        connections.push(connect(server.address, &server.tls).await?);
    }
    let mut watchers = Vec::new();
    for w in 0..options.watchers {
        let path = format!("{PODS}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true");
        watchers.push(tokio::spawn(watch_one(
            connections[w % connections.len()].clone(),
            server.address,
            path,
            sent.clone(),
            expected,
        )));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_watchers = rss_mib(pid);
    let peak = RssPeak::start(pid);
    let creates = paced_creates(
        &server,
        "watched",
        options.watch_creates,
        options.rate,
        options.clients,
        Some(sent),
    )
    .await?;
    let mut delivery = Vec::new();
    for watcher in watchers {
        delivery.extend(watcher.await??);
    }
    let peak = peak.stop();
    delivery.sort();
    println!(
        "{} watchers of pods, {} creates at {}/s: delivery (create sent to ADDED received) p50 {}, p99 {}, max {}; create p50 {}, p99 {}; RSS {with_watchers:.1} MiB with the watchers idle, peak {peak:.1} MiB",
        options.watchers,
        creates.len(),
        options.rate,
        ms(quantile(&delivery, 0.5)),
        ms(quantile(&delivery, 0.99)),
        ms(quantile(&delivery, 1.0)),
        ms(quantile(&creates, 0.5)),
        ms(quantile(&creates, 0.99)),
    );
    let t = Instant::now();
    let (_, body) = call(
        &mut sender,
        server.address,
        "GET",
        "/api/v1/pods?resourceVersion=0",
        None,
    )
    .await?;
    println!(
        "LIST (resourceVersion=0, from the watch cache) of {:.1} MiB: {}",
        body.len() as f64 / 1048576.0,
        ms(t.elapsed())
    );
    println!("RSS at the end: {:.1} MiB", rss_mib(pid));
    drop(server);
    Ok(())
}

#[tokio::main]
async fn main() {
    if let Err(error) = run(options()).await {
        eprintln!("apiserver_bench: {error}");
        std::process::exit(1);
    }
}

//! The kubelet's secure endpoint (port 10250): HTTPS with a serving certificate, callers
//! authenticated by client certificate or bearer token and authorized on the node's
//! subresources ([`auth`]); it serves the read-only GET routes, `/runningpods/`, `/configz`,
//! `/logs/`, and exec, attach and port-forward ([`streams`]) that the API server proxies
//! `kubectl` to.

pub mod auth;
pub mod serving_cert;
pub mod streams;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

use self::auth::{Access, Auth, Caller};
use crate::endpoint::read_only::{self, Reply, reply};
use crate::pods::NodeContext;

/// How the endpoint is set up.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    /// Where it listens (`address` and `port`; port 0 picks a free one).
    pub address: SocketAddr,
    /// `tlsCertFile` and `tlsPrivateKeyFile`, else a self-signed pair in `cert_dir`.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// Where the self-signed pair is kept.
    pub cert_dir: PathBuf,
    /// The CAs that sign client certificates (`authentication.x509.clientCAFile`, else the
    /// cluster CA of the node's kubeconfig); none: client certificates are not asked for.
    pub client_cas: Vec<CertificateDer<'static>>,
    /// Who is let in and how they are checked.
    pub policy: auth::Policy,
    /// The node's addresses, for the self-signed certificate's names.
    pub addresses: Vec<String>,
    /// What the debugging routes serve.
    pub debugging: Debugging,
}

/// What the debugging routes serve besides the pods.
#[derive(Debug, Clone)]
pub struct Debugging {
    /// `/configz`'s document (see [`crate::config::configz`]).
    pub configz: serde_json::Value,
    /// The directory `/logs/` serves (/var/log).
    pub log_dir: PathBuf,
}

/// Everything a request is served with.
struct Served {
    ctx: Arc<NodeContext>,
    auth: Auth,
    debugging: Debugging,
}

/// The CA certificates of a PEM file (`authentication.x509.clientCAFile`).
pub fn read_client_cas(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The serving certificate or client CA could not be used.
    #[error("kubelet endpoint TLS: {0}")]
    Tls(String),
    /// The address could not be bound.
    #[error("kubelet endpoint {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds the endpoint and serves it on the current runtime; returns the bound address.
pub async fn start(
    ctx: Arc<NodeContext>,
    client: kube::Client,
    settings: &EndpointSettings,
) -> Result<SocketAddr, EndpointError> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(
        ctx.settings.node_name.as_str(),
        settings,
    )?));
    let listener = tokio::net::TcpListener::bind(settings.address)
        .await
        .map_err(|source| EndpointError::Bind {
            address: settings.address,
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| EndpointError::Bind {
            address: settings.address,
            source,
        })?;
    let served = Arc::new(Served {
        auth: Auth::new(client, &ctx.settings.node_name, settings.policy),
        ctx,
        debugging: settings.debugging.clone(),
    });
    tracing::info!(address = %bound, "kubelet endpoint listening");
    tokio::spawn(accept_loop(listener, acceptor, served));
    Ok(bound)
}

fn tls_config(
    node_name: &str,
    settings: &EndpointSettings,
) -> Result<rustls::ServerConfig, EndpointError> {
    let pair = match &settings.tls_files {
        Some((cert, key)) => serving_cert::load(cert, key),
        None => serving_cert::self_signed(&settings.cert_dir, node_name, &settings.addresses),
    }
    .map_err(EndpointError::Tls)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| EndpointError::Tls(e.to_string()))?;
    let builder = match settings.client_cas.as_slice() {
        [] => builder.with_no_client_auth(),
        cas => {
            let mut roots = RootCertStore::empty();
            for cert in cas {
                roots
                    .add(cert.clone())
                    .map_err(|e| EndpointError::Tls(format!("client CA: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| EndpointError::Tls(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(pair.chain, pair.key)
        .map_err(|e| EndpointError::Tls(format!("serving certificate: {e}")))?;
    // Upgrades (exec, port-forward) are HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    served: Arc<Served>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "kubelet endpoint accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let served = Arc::clone(&served);
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(error) => {
                    tracing::debug!(%peer, %error, "kubelet endpoint TLS handshake failed");
                    return;
                }
            };
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| Caller::from_certificate(leaf.as_ref()));
            let certificate = Arc::new(certificate);
            let service = hyper::service::service_fn(move |request| {
                let served = Arc::clone(&served);
                let certificate = Arc::clone(&certificate);
                async move {
                    Ok::<_, Infallible>(
                        handle(&served, certificate.as_ref().as_ref(), request).await,
                    )
                }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, %error, "kubelet endpoint connection ended");
            }
        });
    }
}

async fn handle(
    served: &Served,
    certificate: Option<&Caller>,
    request: Request<Incoming>,
) -> Reply {
    let (ctx, auth) = (&served.ctx, &served.auth);
    let authorization = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let path = request.uri().path().to_string();
    let access = Access::of(request.method(), &path);
    let checked = match auth.authenticate(certificate, authorization).await {
        Ok(caller) => auth.authorize(&caller, &access).await.map(|()| caller),
        Err(refusal) => Err(refusal),
    };
    let caller = match checked {
        Ok(caller) => caller,
        Err(refusal) => {
            let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
            tracing::debug!(%path, status = refusal.status, "kubelet endpoint request refused");
            return reply(status, "text/plain", refusal.message);
        }
    };
    tracing::debug!(%path, method = %request.method(), user = %caller.name, "kubelet endpoint request");
    let query = read_only::decode_query(request.uri().query());
    if let Some((kind, segments)) = streams::StreamKind::of(&path) {
        let segments: Vec<String> = segments.into_iter().map(str::to_string).collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        return streams::serve(ctx, kind, &segments, &query, request).await;
    }
    if request.method() != hyper::Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            format!("{} {path}: GET only", request.method()),
        );
    }
    if path == "/runningpods" || path == "/runningpods/" {
        return read_only::running_pods(ctx);
    }
    if path == "/configz" {
        return reply(
            StatusCode::OK,
            "application/json",
            served.debugging.configz.to_string(),
        );
    }
    if let Some(below) = path.strip_prefix("/logs") {
        if below.is_empty() || below.starts_with('/') {
            return crate::endpoint::var_log::serve(&served.debugging.log_dir, below).await;
        }
    }
    match read_only::get(ctx, &path, &query).await {
        Some(reply) => reply,
        None => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no endpoint {path}"),
        ),
    }
}

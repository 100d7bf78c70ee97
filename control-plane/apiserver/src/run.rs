//! `capstan control-plane`: the cluster's credentials, the store, the API server and its HTTPS
//! listener, put together from kube-apiserver-like options.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use capstan_store::Store;

use crate::authn::Authenticator;
use crate::authn::tokenfile::TokenFile;
use crate::pki::{ClusterCredentials, PkiOptions};
use crate::server::{ApiServer, Config};
use crate::tokens::TokenSettings;

/// kube-apiserver's endpoint reconciler interval and lease TTL.
pub const DEFAULT_ENDPOINT_RECONCILER: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_secs(10),
    std::time::Duration::from_secs(15),
);

/// What `capstan control-plane` is told, named after kube-apiserver's flags where it has them.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Certificates, keys, the admin kubeconfig and the embedded store live here.
    pub data_dir: PathBuf,
    /// `--bind-address`.
    pub bind_address: IpAddr,
    /// `--secure-port`; 0 picks a free port (tests), written into the admin kubeconfig.
    pub secure_port: u16,
    /// `--advertise-address`: this server's address in the `kubernetes` Service's endpoints;
    /// `None` for [`crate::kubernetes_service::default_advertise_address`] of the bind address.
    pub advertise_address: Option<IpAddr>,
    /// How often the `kubernetes` Service's endpoints are reconciled and this server's lease
    /// renewed, and how long the lease lasts (upstream: 10 s and 15 s; tests shorten them).
    pub endpoint_reconciler: (std::time::Duration, std::time::Duration),
    /// `--service-cluster-ip-range`.
    pub service_cluster_ip_range: ipnet::IpNet,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// Further serving-certificate SANs (`--tls-san`, as k3s names it).
    pub extra_sans: Vec<String>,
    /// `--etcd-servers`: empty for the embedded store.
    pub etcd_servers: Vec<String>,
    /// `--token-auth-file`.
    pub token_auth_file: Option<PathBuf>,
    /// `--anonymous-auth`.
    pub anonymous_auth: bool,
    /// `--service-account-issuer` (repeatable: the first issues, all are accepted); empty for
    /// `https://kubernetes.default.svc.<cluster domain>`.
    pub service_account_issuers: Vec<String>,
    /// `--api-audiences`; empty for the first issuer.
    pub api_audiences: Vec<String>,
    /// `--service-account-max-token-expiration`; `None` (or zero) for no limit.
    pub service_account_max_token_expiration: Option<std::time::Duration>,
    /// `--authorization-mode`, parsed by [`crate::authz::parse_modes`].
    pub authorization_modes: Vec<crate::authz::Mode>,
}

impl ControlPlaneOptions {
    /// kube-apiserver's defaults (those of `capstan control-plane`'s flags) over `data_dir`,
    /// serving on loopback at a port the kernel picks: what tests and embedders start from.
    pub fn loopback(data_dir: PathBuf) -> ControlPlaneOptions {
        ControlPlaneOptions {
            data_dir,
            bind_address: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            secure_port: 0,
            advertise_address: None,
            endpoint_reconciler: DEFAULT_ENDPOINT_RECONCILER,
            service_cluster_ip_range: ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(10, 96, 0, 0),
                12,
            )),
            cluster_domain: "cluster.local".into(),
            extra_sans: Vec::new(),
            etcd_servers: Vec::new(),
            token_auth_file: None,
            anonymous_auth: true,
            service_account_issuers: Vec::new(),
            api_audiences: Vec::new(),
            service_account_max_token_expiration: None,
            authorization_modes: vec![crate::authz::Mode::Rbac],
        }
    }
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The credentials could not be made or loaded.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// `--token-auth-file` is unreadable or malformed.
    #[error(transparent)]
    TokenFile(#[from] crate::authn::tokenfile::TokenFileError),
    /// The service-account token flags cannot be used.
    #[error(transparent)]
    Tokens(#[from] crate::tokens::TokenOptionsError),
    /// The store could not be opened or reached.
    #[error("storage: {0}")]
    Store(#[from] capstan_store::StoreError),
    /// The API server could not prepare the store (the system namespaces).
    #[error("API server start-up: {0}")]
    Api(String),
    /// The address could not be listened on.
    #[error("listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the control plane until `shutdown` completes. `ready` is told the address served
/// once requests are answered, with the server, for in-process clients (scheduler,
/// controllers) to reach through [`crate::InProcess`].
pub async fn run(
    options: ControlPlaneOptions,
    ready: impl FnOnce(SocketAddr, Arc<ApiServer>),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let started = Instant::now();
    // Bad flags fail before anything is made.
    let tokens = match &options.token_auth_file {
        Some(path) => Some(TokenFile::load(path)?),
        None => None,
    };
    let max_token_expiration = options
        .service_account_max_token_expiration
        .map(|d| d.as_secs() as i64)
        .filter(|s| *s != 0);
    if max_token_expiration
        .is_some_and(|s| !(3600..=crate::tokens::MAX_EXPIRATION_SECONDS).contains(&s))
    {
        return Err(crate::tokens::TokenOptionsError::MaxExpiration.into());
    }
    create_private_dir(&options.data_dir)?;
    // The port is known before the kubeconfig is written: bind first.
    let requested = SocketAddr::new(options.bind_address, options.secure_port);
    let listener = tokio::net::TcpListener::bind(requested)
        .await
        .map_err(|source| RunError::Listen {
            address: requested,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| RunError::Listen {
        address: requested,
        source,
    })?;
    let pki_options = PkiOptions {
        bind_address: options.bind_address,
        secure_port: address.port(),
        service_cluster_ip_range: options.service_cluster_ip_range,
        cluster_domain: options.cluster_domain.clone(),
        extra_sans: options.extra_sans.clone(),
    };
    let data_dir = options.data_dir.clone();
    let credentials = tokio::task::spawn_blocking(move || {
        ClusterCredentials::load_or_create(&data_dir, &pki_options)
    })
    .await
    .map_err(|e| RunError::Api(format!("credentials task: {e}")))??;
    let tls = Arc::new(crate::tls::server_config(&credentials)?);
    let kubelet_client = kubelet_client(&credentials)?;
    let issuers = if options.service_account_issuers.is_empty() {
        vec![format!(
            "https://kubernetes.default.svc.{}",
            options.cluster_domain
        )]
    } else {
        options.service_account_issuers.clone()
    };
    let token_settings = Arc::new(TokenSettings::new(
        Arc::clone(credentials.service_account_key()),
        issuers,
        options.api_audiences.clone(),
        max_token_expiration,
        credentials.server_url(),
    )?);
    let mut authenticator = Authenticator::new(credentials.ca_certificate().clone())
        .with_anonymous(options.anonymous_auth)
        .with_service_accounts(token_settings.verifier());
    if let Some(tokens) = tokens {
        authenticator = authenticator.with_token_file(tokens);
    }

    let authenticator = Arc::new(authenticator);
    let store = open_store(&options).await?;
    let config = Config {
        service_account_tokens: Some(token_settings),
        authorization_modes: options.authorization_modes.clone(),
        token_authenticator: Some(Arc::clone(&authenticator)),
        service_cluster_ip_range: options.service_cluster_ip_range,
        kubelet_client: Some(kubelet_client),
        ..Config::default()
    };
    let server = ApiServer::new(Arc::clone(&store), config)
        .await
        .map_err(|e| RunError::Api(e.message.clone()))?;
    let compactor = capstan_store::compactor::spawn(Arc::clone(&store), Default::default());
    let advertise = options.advertise_address.unwrap_or_else(|| {
        crate::kubernetes_service::default_advertise_address(options.bind_address)
    });
    let mut service_options = crate::kubernetes_service::KubernetesServiceOptions::new(
        SocketAddr::new(advertise, address.port()),
    );
    (service_options.interval, service_options.lease_ttl) = options.endpoint_reconciler;
    let reconciler = crate::kubernetes_service::start(&server, service_options);
    tracing::info!(
        address = %address,
        %advertise,
        storage = if options.etcd_servers.is_empty() { "embedded" } else { "etcd" },
        admin_kubeconfig = %credentials.paths().admin_kubeconfig.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "serving the Kubernetes API"
    );
    ready(address, Arc::clone(&server));
    crate::secure::serve_tls(listener, tls, server, authenticator, shutdown).await;
    reconciler.stop().await;
    compactor.abort();
    tracing::info!("control plane stopped");
    Ok(())
}

async fn open_store(options: &ControlPlaneOptions) -> Result<Arc<dyn Store>, RunError> {
    if options.etcd_servers.is_empty() {
        let data_dir = options.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || {
            capstan_store::sqlite::SqliteStore::open_in(&data_dir)
        })
        .await
        .map_err(|e| RunError::Api(format!("store task: {e}")))??;
        return Ok(Arc::new(store));
    }
    // The REST layer's keys already start with /registry, as kube-apiserver's do in etcd.
    let store = capstan_store::etcd::EtcdStore::connect(&options.etcd_servers, "").await?;
    Ok(Arc::new(store))
}

/// Makes the data directory, for root alone: it holds the cluster's keys and every object.
fn create_private_dir(dir: &std::path::Path) -> Result<(), RunError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.exists() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| RunError::Api(format!("create the data directory {}: {e}", dir.display())))
}

/// The API server's client for kubelet endpoints, with a client certificate issued from the
/// cluster CA at every start (the user kubeadm gives it, in `system:masters`).
fn kubelet_client(
    credentials: &ClusterCredentials,
) -> Result<crate::node_proxy::KubeletClient, RunError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let issued = credentials
        .issue_client_certificate(
            "kube-apiserver-kubelet-client",
            Some("system:masters"),
            std::time::Duration::from_secs(365 * 24 * 3600),
        )
        .map_err(|e| RunError::Api(format!("kubelet client certificate: {e}")))?;
    let bad = |e: rustls::pki_types::pem::Error| {
        RunError::Api(format!("kubelet client certificate: {e}"))
    };
    let chain = CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).map_err(bad)?;
    crate::node_proxy::KubeletClient::new(chain, key, None)
        .map_err(|e| RunError::Api(format!("kubelet client TLS: {e}")))
}

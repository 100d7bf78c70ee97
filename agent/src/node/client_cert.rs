//! A node client whose TLS client certificate can change under it: every new connection
//! presents the pair loaded last, so a rotated certificate is used from the next handshake on
//! without rebuilding the clients the agent's parts hold (connections already open keep the
//! old one, which is still valid: rotation happens well before expiry).

use std::path::Path;
use std::sync::{Arc, RwLock};

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tower::{BoxError, ServiceBuilder};

use super::join::{JoinError, kubeconfig_error, load_config};

/// The client certificate and key new connections present.
#[derive(Debug)]
pub struct CurrentPair {
    pair: RwLock<Arc<CertifiedKey>>,
}

impl CurrentPair {
    /// Loads the PEM pair (certificate chain, then key, as the kubelet stores it) at `file`.
    pub fn load(file: &Path) -> Result<Arc<CurrentPair>, String> {
        Ok(Arc::new(CurrentPair {
            pair: RwLock::new(read_pair(file)?),
        }))
    }

    /// Replaces the pair with the one at `file`.
    pub fn reload(&self, file: &Path) -> Result<(), String> {
        let pair = read_pair(file)?;
        match self.pair.write() {
            Ok(mut current) => *current = pair,
            Err(poisoned) => *poisoned.into_inner() = pair,
        }
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        match self.pair.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

impl ResolvesClientCert for CurrentPair {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn read_pair(file: &Path) -> Result<Arc<CertifiedKey>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: certificate: {e}", file.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", file.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: private key: {e}", file.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("{}: private key: {e}", file.display()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// A client for the API server `kubeconfig` names, authenticating with `pair` (whatever
/// client certificate the kubeconfig itself holds is not used).
pub async fn client(kubeconfig: &Path, pair: Arc<CurrentPair>) -> Result<kube::Client, JoinError> {
    let error = |reason: kube::Error| kubeconfig_error(kubeconfig, reason);
    let config = load_config(kubeconfig).await?;
    let mut tls = config.rustls_client_config().map_err(error)?;
    tls.client_auth_cert_resolver = pair;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let connections =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(error)?)
        .layer(config.extra_headers_layer().map_err(error)?)
        .map_err(BoxError::from)
        .service(connections);
    Ok(kube::Client::new(service, config.default_namespace))
}

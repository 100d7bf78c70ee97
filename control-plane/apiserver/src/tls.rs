//! The API server's TLS configuration: the serving certificate, TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`, and client certificates requested but optional.
//!
//! A presented client certificate must prove possession of its key during the handshake, but
//! its chain is judged by [`crate::authn`], not here: kube-apiserver does the same
//! (`tls.RequestClientCert`), so a certificate from another CA gets an HTTP 401 naming the
//! problem instead of a TLS alert, and a request that also carries a valid bearer token is
//! still served.

use std::sync::Arc;

use capstan_tls::HandshakeSignatures;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::pki::ClusterCredentials;

/// ALPN protocols offered, preferred first: kubectl speaks h2 for ordinary calls and
/// http/1.1 for upgrades (exec, attach, port-forward, WebSocket watch).
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA certificate was refused as a trust anchor.
    #[error("cluster CA certificate as client-certificate trust anchor: {0}")]
    TrustAnchor(rustls::Error),
    /// The client verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(rustls::server::VerifierBuilderError),
    /// The serving certificate or key was refused.
    #[error("serving certificate and key: {0}")]
    ServingCertificate(rustls::Error),
    /// The protocol versions were refused by the provider.
    #[error("TLS protocol versions: {0}")]
    Versions(rustls::Error),
}

/// The rustls server configuration for the API server.
pub fn server_config(credentials: &ClusterCredentials) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(credentials.ca_certificate().clone())
        .map_err(TlsError::TrustAnchor)?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(TlsError::Verifier)?;
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Versions)?
        .with_client_cert_verifier(Arc::new(RequestClientCert {
            inner,
            signatures: HandshakeSignatures::new(provider),
        }))
        .with_single_cert(credentials.serving_chain(), credentials.serving_key())
        .map_err(TlsError::ServingCertificate)?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Requests a client certificate (advertising the cluster CA as the acceptable issuer), checks
/// the handshake signature made with its key, and leaves the chain to the authenticator.
#[derive(Debug)]
struct RequestClientCert {
    inner: Arc<dyn ClientCertVerifier>,
    signatures: HandshakeSignatures,
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Only refuse what is not a certificate at all; trust is authn's decision.
        webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

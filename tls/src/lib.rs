//! TLS trust decisions that the API server and the node agent share.
//!
//! Two places take a peer's certificate without judging its chain: a kubelet's self-signed
//! serving certificate (kube-apiserver without `--kubelet-certificate-authority`), and a pod's
//! own HTTPS endpoint behind a probe or hook (the kubelet skips that check too). Both still
//! check that the peer holds the key of the certificate it shows, through the handshake
//! signature: that is what [`HandshakeSignatures`] does, and why the API server's client
//! certificate verifier uses it as well.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Checks TLS 1.2 and 1.3 handshake signatures with a crypto provider's algorithms.
#[derive(Debug, Clone)]
pub struct HandshakeSignatures {
    provider: Arc<CryptoProvider>,
}

impl HandshakeSignatures {
    /// Signatures checked with `provider`'s verification algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        HandshakeSignatures { provider }
    }

    /// A TLS 1.2 handshake signature made with `cert`'s key.
    pub fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    /// A TLS 1.3 handshake signature made with `cert`'s key.
    pub fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    /// The signature schemes the provider can check.
    pub fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Takes any server certificate while still checking the handshake signature made with its
/// key. For peers whose certificates the client has no means to judge.
#[derive(Debug)]
pub struct AnyServerCertificate {
    signatures: HandshakeSignatures,
}

impl AnyServerCertificate {
    /// A verifier checking signatures with `provider`.
    pub fn new(provider: Arc<CryptoProvider>) -> Arc<Self> {
        Arc::new(AnyServerCertificate {
            signatures: HandshakeSignatures::new(provider),
        })
    }
}

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ClientConfig, RootCertStore, ServerConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A server on loopback with a self-signed certificate whose key is `served_key`.
    async fn serve_self_signed(
        cert: CertificateDer<'static>,
        served_key: PrivateKeyDer<'static>,
    ) -> std::net::SocketAddr {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], served_key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let _ = tls.write_all(b"hello").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        address
    }

    async fn read_from(
        address: std::net::SocketAddr,
        config: ClientConfig,
    ) -> std::io::Result<Vec<u8>> {
        let tcp = TcpStream::connect(address).await?;
        let name = ServerName::try_from("kubelet.invalid").unwrap();
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let mut body = Vec::new();
        tls.read_to_end(&mut body).await?;
        Ok(body)
    }

    fn self_signed() -> rcgen::CertifiedKey<rcgen::KeyPair> {
        rcgen::generate_simple_self_signed(vec!["node.example".to_string()]).unwrap()
    }

    #[tokio::test]
    async fn any_server_certificate_takes_a_self_signed_one_that_webpki_refuses() {
        let key = self_signed();
        let der = key.cert.der().clone();
        let private = PrivateKeyDer::try_from(key.signing_key.serialize_der()).unwrap();
        let address = serve_self_signed(der, private).await;

        let unverified = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(AnyServerCertificate::new(provider()))
            .with_no_client_auth();
        assert_eq!(read_from(address, unverified).await.unwrap(), b"hello");

        let verified = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        assert!(read_from(address, verified).await.is_err());
    }

    #[tokio::test]
    async fn a_server_without_the_certificates_key_fails_the_signature_check() {
        // The server shows one certificate but signs with another key: only the handshake
        // signature can tell, and it must.
        let shown = self_signed();
        let other = self_signed();
        let other_key = PrivateKeyDer::try_from(other.signing_key.serialize_der()).unwrap();
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth();
        let certified = Arc::new(rustls::sign::CertifiedKey::new(
            vec![shown.cert.der().clone()],
            provider().key_provider.load_private_key(other_key).unwrap(),
        ));
        let config = config.with_cert_resolver(Arc::new(Fixed(certified)));
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(AnyServerCertificate::new(provider()))
            .with_no_client_auth();
        let error = read_from(address, client).await.unwrap_err();
        assert!(
            error.to_string().to_lowercase().contains("signature"),
            "unexpected error: {error}"
        );
    }

    /// Always serves the one certified key it holds, mismatched or not.
    #[derive(Debug)]
    struct Fixed(Arc<rustls::sign::CertifiedKey>);

    impl rustls::server::ResolvesServerCert for Fixed {
        fn resolve(
            &self,
            _hello: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            Some(Arc::clone(&self.0))
        }
    }
}

//! Chain verification of certificates against the cluster CA (rustls-webpki with ring's
//! algorithms), shared by the restart checks and the x509 authenticator.

use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, UnixTime};

/// What a certificate is checked to be good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server authentication (the serving certificate).
    Server,
    /// TLS client authentication (client certificates).
    Client,
}

/// Checks that `leaf` chains to `ca` (through `intermediates`), is valid at `now + margin` and
/// carries the extended key usage for `usage`. The margin lets a restart re-issue a
/// certificate before it expires rather than after.
pub fn verify_chain(
    ca: &CertificateDer<'_>,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    usage: Usage,
    margin: Duration,
) -> Result<(), webpki::Error> {
    let anchor = webpki::anchor_from_trusted_cert(ca)?;
    let cert = webpki::EndEntityCert::try_from(leaf)?;
    let at = SystemTime::now()
        .checked_add(margin)
        .unwrap_or_else(SystemTime::now);
    let at = UnixTime::since_unix_epoch(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let usage = match usage {
        Usage::Server => webpki::KeyUsage::server_auth(),
        Usage::Client => webpki::KeyUsage::client_auth(),
    };
    let algs = rustls::crypto::ring::default_provider()
        .signature_verification_algorithms
        .all;
    cert.verify_for_usage(algs, &[anchor], intermediates, at, usage, None, None)
        .map(|_| ())
}

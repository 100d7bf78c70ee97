//! Client certificate rotation (`rotateCertificates`), as the kubelet's certificate manager
//! does it: at a random point between 70% and 90% of the current certificate's lifetime the
//! node asks for a new one with its own credentials, stores it as the current pair and hands
//! it to the client for the next connections. A failed request is retried with back-off; the
//! old certificate stays in use meanwhile.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::client_cert::CurrentPair;
use super::tls_bootstrap::{CURRENT_PAIR, Credentials};

/// The longest wait between failed renewals.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// When a certificate valid from `not_before` to `not_after` is renewed: `fraction` (0.7 to
/// 0.9) of the way through its lifetime.
pub fn rotation_deadline(
    not_before: SystemTime,
    not_after: SystemTime,
    fraction: f64,
) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    not_before + lifetime.mul_f64(fraction.clamp(0.0, 1.0))
}

/// The kubelet's jitter: uniformly in [0.7, 0.9).
fn jittered_fraction() -> f64 {
    0.7 + 0.2 * rand::random::<f64>()
}

/// The validity of the certificate in the PEM pair at `file`.
pub fn validity(file: &Path) -> Result<(SystemTime, SystemTime), String> {
    let pem = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| format!("{}: not PEM: {e}", file.display()))?;
    let certificate = pem
        .parse_x509()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let at = |t: x509_parser::time::ASN1Time| {
        let seconds = u64::try_from(t.timestamp()).unwrap_or(0);
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    };
    Ok((
        at(certificate.validity().not_before),
        at(certificate.validity().not_after),
    ))
}

/// Renews the certificate of `credentials` before each expiry, for ever; `client` is the
/// node's own client and `pair` what its connections present.
pub async fn run(credentials: Credentials, client: kube::Client, pair: Arc<CurrentPair>) {
    let file = credentials.cert_dir.join(CURRENT_PAIR);
    let mut retry = Duration::from_secs(2);
    loop {
        match validity(&file) {
            Ok((not_before, not_after)) => {
                let deadline = rotation_deadline(not_before, not_after, jittered_fraction());
                let wait = deadline
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                tracing::info!(
                    pair = %file.display(),
                    expires_in = ?not_after.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO),
                    rotation_in = ?wait,
                    "client certificate rotation scheduled"
                );
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the client certificate; renewing it");
            }
        }
        let renewed = credentials
            .renew(&client)
            .await
            .map_err(|e| e.to_string())
            .and_then(|path| pair.reload(&path));
        match renewed {
            Ok(()) => retry = Duration::from_secs(2),
            Err(error) => {
                tracing::warn!(%error, "client certificate not renewed; retrying in {retry:?}");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_falls_between_seventy_and_ninety_percent_of_the_lifetime() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(1000);
        assert_eq!(
            rotation_deadline(start, end, 0.7),
            start + Duration::from_secs(700)
        );
        assert_eq!(
            rotation_deadline(start, end, 0.9),
            start + Duration::from_secs(900)
        );
        for _ in 0..100 {
            let fraction = jittered_fraction();
            assert!((0.7..0.9).contains(&fraction), "{fraction}");
        }
        // A certificate whose end is before its start is due at once.
        assert_eq!(rotation_deadline(end, start, 0.8), end);
    }
}

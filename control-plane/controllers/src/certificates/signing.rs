//! "csrsigning": signs approved requests for `kubernetes.io/kube-apiserver-client-kubelet`,
//! `kubernetes.io/kubelet-serving` and `kubernetes.io/kube-apiserver-client` with the cluster CA
//! (`--cluster-signing-cert-file` / `--cluster-signing-key-file`), for
//! `spec.expirationSeconds` (at least 600 s) capped by `--cluster-signing-duration` (one year)
//! and by the CA's own expiry, backdated five minutes against clock skew. The certificate
//! goes to `status.certificate` through the `status` subresource; a request that fails its
//! signer's checks gets a `Failed` condition (`SignerValidationFailure`) instead.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use serde_json::json;
use time::OffsetDateTime;

use super::request::{self, RequestError};
use super::{Error, has_condition};
use crate::context::{Context, SigningKeyPair};

/// `--cluster-signing-duration`: the longest certificate signed.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// The shortest `expirationSeconds` honoured.
pub const MIN_DURATION: Duration = Duration::from_secs(600);
/// How far notBefore is moved back, against clocks running behind.
const BACKDATE: Duration = Duration::from_secs(300);
/// Certificates shorter than this end `ttl` after now rather than after notBefore.
const SHORT: Duration = Duration::from_secs(8 * 3600);

/// The CA, loaded once.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl Signer {
    /// The CA from its PEM certificate and key.
    pub fn new(pair: &SigningKeyPair) -> Result<Signer, String> {
        let key = KeyPair::from_pem(&pair.key_pem).map_err(|e| format!("CA key: {e}"))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(pair.certificate_pem.as_bytes())
            .map_err(|e| format!("CA certificate: {e}"))?;
        let certificate = pem
            .parse_x509()
            .map_err(|e| format!("CA certificate: {e}"))?;
        let not_after = certificate.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_pem(&pair.certificate_pem, key)
            .map_err(|e| format!("CA certificate: {e}"))?;
        Ok(Signer { issuer, not_after })
    }

    /// Signs `pem` (a PKCS#10 request) for `usages`, valid for `wanted` clamped to
    /// [`MIN_DURATION`, `MAX_DURATION`]; the certificate as PEM.
    pub fn sign(
        &self,
        pem: &str,
        usages: &[String],
        wanted: Option<Duration>,
    ) -> Result<String, String> {
        let mut csr = CertificateSigningRequestParams::from_pem(pem).map_err(|e| e.to_string())?;
        let (key_usages, extended) = key_usages(usages)?;
        let ttl = wanted.map_or(MAX_DURATION, |w| w.clamp(MIN_DURATION, MAX_DURATION));
        let now = OffsetDateTime::now_utc();
        let params = &mut csr.params;
        params.not_before = now - BACKDATE;
        params.not_after = if ttl < SHORT {
            now + ttl
        } else {
            params.not_before + ttl
        };
        if params.not_after > self.not_after {
            params.not_after = self.not_after;
        }
        params.key_usages = key_usages;
        params.extended_key_usages = extended;
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&serial()));
        csr.signed_by(&self.issuer)
            .map(|certificate| certificate.pem())
            .map_err(|e| e.to_string())
    }
}

/// A positive 128-bit serial number, unique per CA in practice: the clock in nanoseconds, a
/// counter and the process id (rcgen's default would derive it from the public key, and so
/// repeat it when a kubelet renews with the same key).
fn serial() -> [u8; 16] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&nanos.to_be_bytes());
    bytes[8..].copy_from_slice(&(count ^ u64::from(std::process::id())).to_be_bytes());
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    bytes
}

/// The certificate API's usage names as X.509 key usages (upstream's keyUsagesFromStrings).
fn key_usages(
    usages: &[String],
) -> Result<(Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>), String> {
    let mut key = Vec::new();
    let mut extended = Vec::new();
    let mut unknown = Vec::new();
    for usage in usages {
        let k = match usage.as_str() {
            "signing" | "digital signature" => Some(KeyUsagePurpose::DigitalSignature),
            "content commitment" => Some(KeyUsagePurpose::ContentCommitment),
            "key encipherment" => Some(KeyUsagePurpose::KeyEncipherment),
            "key agreement" => Some(KeyUsagePurpose::KeyAgreement),
            "data encipherment" => Some(KeyUsagePurpose::DataEncipherment),
            "cert sign" => Some(KeyUsagePurpose::KeyCertSign),
            "crl sign" => Some(KeyUsagePurpose::CrlSign),
            "encipher only" => Some(KeyUsagePurpose::EncipherOnly),
            "decipher only" => Some(KeyUsagePurpose::DecipherOnly),
            _ => None,
        };
        let e = match usage.as_str() {
            "any" => Some(ExtendedKeyUsagePurpose::Any),
            "server auth" => Some(ExtendedKeyUsagePurpose::ServerAuth),
            "client auth" => Some(ExtendedKeyUsagePurpose::ClientAuth),
            "code signing" => Some(ExtendedKeyUsagePurpose::CodeSigning),
            "email protection" | "s/mime" => Some(ExtendedKeyUsagePurpose::EmailProtection),
            "timestamping" => Some(ExtendedKeyUsagePurpose::TimeStamping),
            "ocsp signing" => Some(ExtendedKeyUsagePurpose::OcspSigning),
            _ => None,
        };
        match (k, e) {
            (Some(k), _) if !key.contains(&k) => key.push(k),
            (Some(_), _) => {}
            (None, Some(e)) if !extended.contains(&e) => extended.push(e),
            (None, Some(_)) => {}
            (None, None) => unknown.push(usage.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(format!("unrecognized usage values: {unknown:?}"));
    }
    Ok((key, extended))
}

/// Starts the controller; it does nothing without a signing CA.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context))
}

struct State {
    client: kube::Client,
    signer: Signer,
}

async fn run(context: Context) {
    let Some(pair) = context.options.signing.clone() else {
        tracing::info!("CSR signing off: no cluster signing CA");
        return;
    };
    let signer = match Signer::new(&pair) {
        Ok(signer) => signer,
        Err(error) => {
            tracing::error!(%error, "CSR signing off");
            return;
        }
    };
    let client = context.client.clone();
    let state = Arc::new(State {
        client: client.clone(),
        signer,
    });
    Controller::new(
        Api::<CertificateSigningRequest>::all(client),
        watcher::Config::default(),
    )
    .run(reconcile, error_policy, state)
    .for_each(|_| async {})
    .await;
}

fn error_policy(_csr: Arc<CertificateSigningRequest>, error: &Error, _state: Arc<State>) -> Action {
    tracing::debug!(%error, "CSR signing retried");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    state: Arc<State>,
) -> Result<Action, Error> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let issued = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    if issued
        || !has_condition(&csr, "Approved")
        || has_condition(&csr, "Failed")
        || has_condition(&csr, "Denied")
    {
        return Ok(Action::await_change());
    }
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let parsed = request::parse(&csr.spec.request.0);
    let checked =
        parsed.and_then(
            |p| match request::validate_for(&csr.spec.signer_name, &p, &usages) {
                None => Ok(None),
                Some(result) => result.map(|()| Some(p)),
            },
        );
    let parsed = match checked {
        Ok(Some(parsed)) => parsed,
        // Another signer's request.
        Ok(None) => return Ok(Action::await_change()),
        Err(RequestError::Parse(error)) => {
            tracing::info!(csr = %name, %error, "CSR not signed: unparsable request");
            return Ok(Action::await_change());
        }
        Err(RequestError::Invalid(message)) => {
            fail(&state.client, &csr, &message).await?;
            return Ok(Action::await_change());
        }
    };
    let wanted = csr
        .spec
        .expiration_seconds
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
    let certificate = match state.signer.sign(&parsed.pem, &usages, wanted) {
        Ok(certificate) => certificate,
        Err(message) => {
            fail(&state.client, &csr, &message).await?;
            return Ok(Action::await_change());
        }
    };
    let api: Api<CertificateSigningRequest> = Api::all(state.client.clone());
    let patch =
        json!({"status": {"certificate": k8s_openapi::ByteString(certificate.into_bytes())}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(csr = %name, signer = %csr.spec.signer_name, "CSR signed");
    Ok(Action::await_change())
}

/// Marks the request Failed with the signer's reason (upstream's SignerValidationFailure).
async fn fail(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
    message: &str,
) -> Result<(), Error> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let mut conditions = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    conditions.push(
        k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition {
            type_: "Failed".into(),
            status: "True".into(),
            reason: Some("SignerValidationFailure".into()),
            message: Some(message.into()),
            last_update_time: Some(now.clone()),
            last_transition_time: Some(now),
        },
    );
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let patch = json!({
        "metadata": {"resourceVersion": csr.metadata.resource_version},
        "status": {"conditions": conditions},
    });
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(csr = %name, message, "CSR failed its signer's checks");
    Ok(())
}

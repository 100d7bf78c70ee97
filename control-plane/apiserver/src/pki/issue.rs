//! Certificate templates (the cluster CA, the API server's serving certificate, client
//! certificates) and the CA as an rcgen issuer, rebuilt from the CA certificate on disk.

use std::collections::BTreeSet;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use ring::rand::SecureRandom;

use super::PkiError;
use super::der::{self, AltName};

/// Common name of the cluster CA.
pub const CA_COMMON_NAME: &str = "capstan-ca";
/// Common name of the API server's serving certificate (kubeadm's).
pub const SERVING_COMMON_NAME: &str = "kube-apiserver";
/// How long the CA is valid: 10 years, as kubeadm's.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long leaf certificates are valid: 1 year, as kubeadm's.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this far in the past so a client whose clock lags slightly accepts them
/// (kubeadm backdates the same way).
const BACKDATE: time::Duration = time::Duration::minutes(5);

fn rcgen_error(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Generate { what, source }
}

/// A new ECDSA P-256 key: fast to generate and sign with, and accepted by every Kubernetes
/// client.
pub fn new_key(what: &'static str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rcgen_error(what))
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    // Positive, and always 16 bytes long, as RFC 5280 asks (at most 20 octets, non-negative).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn base_params(validity: Duration) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// The self-signed cluster CA.
pub fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut params = base_params(CA_VALIDITY)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    Ok(params)
}

/// The API server's serving certificate for `sans`.
pub fn serving_params(sans: &BTreeSet<AltName>) -> Result<CertificateParams, PkiError> {
    let mut params = base_params(LEAF_VALIDITY)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, SERVING_COMMON_NAME);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.subject_alt_names = sans
        .iter()
        .map(|san| match san {
            AltName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            AltName::Dns(name) => name
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(rcgen_error("serving certificate DNS SAN")),
        })
        .collect::<Result<_, _>>()?;
    Ok(params)
}

/// A client certificate for user `common_name` in group `organization` (Kubernetes reads CN as
/// the user and O as the groups).
pub fn client_params(
    common_name: &str,
    organization: Option<&str>,
    validity: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut params = base_params(validity)?;
    params.distinguished_name = DistinguishedName::new();
    // O before CN, in the order kubeadm's certificates list them.
    if let Some(org) = organization {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// The CA on disk as an issuer: its subject re-encoded attribute by attribute (same string
/// types, so issued certificates' issuer names match it byte for byte) and its own subject key
/// identifier, so authority key identifiers match too, even for a CA this crate did not make.
pub fn ca_issuer(ca_der: &[u8], key: KeyPair) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let fields = der::parse_certificate(ca_der).map_err(|e| PkiError::Parse {
        what: "CA certificate",
        reason: e.to_string(),
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    for attr in &fields.subject {
        let ty = DnType::from_oid(&attr.oid);
        if params.distinguished_name.get(&ty).is_some() {
            return Err(PkiError::Parse {
                what: "CA certificate",
                reason: format!(
                    "subject repeats attribute {:?}, which cannot be re-encoded",
                    attr.oid
                ),
            });
        }
        let value = match attr.tag {
            0x13 => DnValue::PrintableString(
                attr.value
                    .clone()
                    .try_into()
                    .map_err(rcgen_error("CA subject"))?,
            ),
            0x16 => DnValue::Ia5String(
                attr.value
                    .clone()
                    .try_into()
                    .map_err(rcgen_error("CA subject"))?,
            ),
            0x0c => DnValue::Utf8String(attr.value.clone()),
            other => {
                return Err(PkiError::Parse {
                    what: "CA certificate",
                    reason: format!(
                        "subject attribute {:?} has string type 0x{other:02x}, which cannot be re-encoded",
                        attr.oid
                    ),
                });
            }
        };
        params.distinguished_name.push(ty, value);
    }
    params.key_identifier_method = match fields.subject_key_id {
        Some(id) => KeyIdMethod::PreSpecified(id),
        None => KeyIdMethod::Sha256,
    };
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(Issuer::new(params, key))
}

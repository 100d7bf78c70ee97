//! Client certificate authentication: a certificate chaining to the cluster CA, valid now and
//! for client authentication, names the user in its CN and the groups in its O attributes, as
//! kube-apiserver's x509 authenticator reads them.

use rustls::pki_types::CertificateDer;

use super::{AUTHENTICATED_GROUP, AuthError, UserInfo};
use crate::pki::der::{self, OID_COMMON_NAME, OID_ORGANIZATION};
use crate::pki::verify::{self, Usage};

/// The `extra` key kube-apiserver 1.32+ puts a credential's identity under.
pub const CREDENTIAL_ID_KEY: &str = "authentication.kubernetes.io/credential-id";

/// The user of the TLS peer's `chain` (leaf first), verified against `ca`.
pub fn authenticate(
    ca: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
) -> Result<UserInfo, AuthError> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err(AuthError::Certificate(
            "no certificate presented".to_string(),
        ));
    };
    verify::verify_chain(
        ca,
        leaf,
        intermediates,
        Usage::Client,
        std::time::Duration::ZERO,
    )
    .map_err(|e| AuthError::Certificate(format!("not valid from the cluster CA: {e:?}")))?;
    let fields = der::parse_certificate(leaf).map_err(|e| AuthError::Certificate(e.to_string()))?;
    let name = fields
        .subject_values(OID_COMMON_NAME)
        .into_iter()
        .next()
        .filter(|cn| !cn.is_empty())
        .ok_or_else(|| AuthError::Certificate("the certificate's subject has no CN".to_string()))?;
    let mut groups = fields.subject_values(OID_ORGANIZATION);
    if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.to_string());
    }
    let fingerprint = ring::digest::digest(&ring::digest::SHA256, leaf);
    let mut extra = std::collections::BTreeMap::new();
    extra.insert(
        CREDENTIAL_ID_KEY.to_string(),
        vec![format!("X509SHA256={}", hex(fingerprint.as_ref()))],
    );
    Ok(UserInfo {
        name,
        uid: String::new(),
        groups,
        extra,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! The service-account token signing key: ECDSA P-256, so tokens are ES256 JWTs (ring signs
//! and verifies those; it cannot generate RSA keys, which RS256 would need).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};

use super::PkiError;

/// The key service-account tokens are signed with, and its public half.
pub struct ServiceAccountKey {
    signing: EcdsaKeyPair,
    verifying: VerifyingKey,
    rng: SystemRandom,
}

/// A public key service-account tokens are verified with.
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    /// The uncompressed P-256 point.
    point: Vec<u8>,
    /// The JWT `kid`: base64url(SHA-256(SubjectPublicKeyInfo DER)), as kube-apiserver derives it.
    key_id: String,
}

impl ServiceAccountKey {
    /// Builds the key from a PKCS#8 DER private key (what `sa.key` holds) and the
    /// SubjectPublicKeyInfo DER of its public half.
    pub fn from_pkcs8(pkcs8: &[u8], spki_der: &[u8]) -> Result<Self, PkiError> {
        let rng = SystemRandom::new();
        let signing =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                .map_err(|e| PkiError::Parse {
                    what: "service-account signing key",
                    reason: format!("not an ECDSA P-256 PKCS#8 key: {e}"),
                })?;
        let verifying = VerifyingKey {
            point: signing.public_key().as_ref().to_vec(),
            key_id: URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, spki_der)),
        };
        Ok(Self {
            signing,
            verifying,
            rng,
        })
    }

    /// The public half, for verifiers.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying
    }

    /// Signs `message` as ES256 does: the fixed-width r||s signature, 64 bytes.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, PkiError> {
        self.signing
            .sign(&self.rng, message)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| PkiError::Random)
    }
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("ServiceAccountKey")
            .field("key_id", &self.verifying.key_id)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// The JWT `kid` tokens signed with this key carry.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The uncompressed P-256 point (`04 || x || y`), for the JWKS.
    pub fn public_point(&self) -> &[u8] {
        &self.point
    }

    /// Whether `signature` is a valid ES256 signature of `message` by this key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.point)
            .verify(message, signature)
            .is_ok()
    }
}

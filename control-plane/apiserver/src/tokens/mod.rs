//! Service-account tokens as the API server hands them out: the TokenRequest subresource
//! (`serviceaccounts/<name>/token`), the OIDC discovery documents of the issuer, and the
//! storage lookups that kill a token with its service account or bound object.

pub mod lookup;
pub mod oidc;
pub mod request;

use std::sync::Arc;

use crate::authn::serviceaccount::{TokenIssuer, TokenVerifier};
use crate::pki::ServiceAccountKey;

/// The lifetime of tokens requested without `expirationSeconds`.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a TokenRequest may ask for.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The longest lifetime anything may ask for (kube: 2^32 seconds).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// The lifetime kube's projected volumes ask for; pod-bound tokens asking exactly this for the
/// API server's audiences live a year instead, with `warnafter` at the asked time.
pub const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
/// How long such extended tokens live.
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 60 * 60;

/// Why the token options cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenOptionsError {
    /// `--service-account-max-token-expiration` is out of range.
    #[error("the service-account-max-token-expiration must be between 1 hour and 2^32 seconds")]
    MaxExpiration,
    /// A duration flag does not parse.
    #[error("invalid duration {0:?}: {1}")]
    Duration(String, String),
}

/// How the server issues and accepts service-account tokens (kube-apiserver's
/// `--service-account-*` and `--api-audiences` flags).
#[derive(Debug)]
pub struct TokenSettings {
    /// Signs new tokens as the first issuer.
    pub issuer: TokenIssuer,
    /// `--service-account-issuer`: the first issues, all are accepted.
    pub issuers: Vec<String>,
    /// `--api-audiences`: what tokens requested without audiences are for, and what the
    /// server accepts.
    pub audiences: Vec<String>,
    /// `--service-account-max-token-expiration` in seconds; `None` for no limit.
    pub max_expiration_seconds: Option<i64>,
    /// `--service-account-extend-token-expiration`.
    pub extend_expiration: bool,
    /// The discovery document's `jwks_uri`.
    pub jwks_uri: String,
    key: Arc<ServiceAccountKey>,
}

impl TokenSettings {
    /// Settings signing with `key`; `issuers` must not be empty; empty `audiences` default to
    /// the first issuer, as kube-apiserver's do. `server_url` is where the JWKS is published.
    pub fn new(
        key: Arc<ServiceAccountKey>,
        issuers: Vec<String>,
        audiences: Vec<String>,
        max_expiration_seconds: Option<i64>,
        server_url: &str,
    ) -> Result<TokenSettings, TokenOptionsError> {
        if let Some(max) = max_expiration_seconds {
            if !(3600..=MAX_EXPIRATION_SECONDS).contains(&max) {
                return Err(TokenOptionsError::MaxExpiration);
            }
        }
        let first = issuers.first().cloned().unwrap_or_default();
        if !first.starts_with("https://") {
            // kube-apiserver skips the discovery endpoints then, and says so.
            tracing::warn!(issuer = %first, "the service-account issuer is not an https URL: the OIDC discovery documents are not served");
        }
        let audiences = if audiences.is_empty() {
            vec![first.clone()]
        } else {
            audiences
        };
        let issuer = TokenIssuer::new(Arc::clone(&key), first).with_audiences(audiences.clone());
        Ok(TokenSettings {
            issuer,
            issuers,
            audiences,
            max_expiration_seconds,
            extend_expiration: true,
            jwks_uri: format!("{}{}", server_url.trim_end_matches('/'), oidc::JWKS_PATH),
            key,
        })
    }

    /// The verifier accepting the tokens these settings issue.
    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::new(
            vec![self.key.verifying_key().clone()],
            self.issuers.clone(),
            self.audiences.clone(),
        )
    }

    /// The signing key.
    pub fn key(&self) -> &ServiceAccountKey {
        &self.key
    }
}

/// Parses a Go duration as kube-apiserver's flags take them: `1h`, `90m`, `3600s`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, TokenOptionsError> {
    let bad = |why: &str| TokenOptionsError::Duration(text.to_string(), why.to_string());
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| bad("missing unit"))?;
        let (number, tail) = rest.split_at(number_end);
        let value: f64 = number.parse().map_err(|_| bad("not a number"))?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad("unknown unit")),
        };
        total += value * scale;
        rest = tail;
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let secs = |t: &str| parse_duration(t).map(|d| d.as_secs()).ok();
        assert_eq!(secs("1h"), Some(3600));
        assert_eq!(secs("1h30m"), Some(5400));
        assert_eq!(secs("3600s"), Some(3600));
        assert_eq!(secs("0"), Some(0));
        assert_eq!(secs("10"), None);
        assert_eq!(secs("1d"), None);
    }
}

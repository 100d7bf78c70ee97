//! Authentication: who a request comes from, as kube-apiserver decides it. Client certificates
//! are tried first, then the bearer token (static token file, then ServiceAccount JWT); the
//! first that succeeds wins, and a request that presents nothing is anonymous. What anonymous
//! may reach is the caller's decision (kube-apiserver allows /healthz, /livez, /readyz and
//! /version through RBAC's defaults).

pub mod bootstrap;
pub mod serviceaccount;
pub mod tokenfile;
pub mod x509;

use std::collections::BTreeMap;

use rustls::pki_types::CertificateDer;

use bootstrap::BootstrapToken;
use serviceaccount::{ServiceAccountClaims, TokenVerifier};
use tokenfile::TokenFile;

/// The group every authenticated user is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The user of requests without credentials.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of requests without credentials.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";

/// Who a request comes from, as Kubernetes' `user.Info`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// The user name.
    pub name: String,
    /// The user's UID (empty when the credential has none, e.g. client certificates).
    pub uid: String,
    /// The groups, `system:authenticated` included for authenticated users.
    pub groups: Vec<String>,
    /// Further attributes (bound pod, credential ID), as `user.Info.GetExtra()`.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The anonymous user.
    pub fn anonymous() -> Self {
        Self {
            name: ANONYMOUS_USER.to_string(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED_GROUP.to_string()],
            extra: BTreeMap::new(),
        }
    }

    /// Whether this is the anonymous user.
    pub fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS_USER
    }
}

/// How a request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// A client certificate from the cluster CA.
    ClientCertificate,
    /// A token from `--token-auth-file`.
    StaticToken,
    /// A ServiceAccount token; the API server still has to run
    /// [`serviceaccount::check_still_valid`] on the claims.
    ServiceAccount(Box<ServiceAccountClaims>),
    /// A token of the bootstrap form, not yet checked: the API server still has to read its
    /// Secret (`StoreLookup::bootstrap_user`) and use the user that gives, never the
    /// placeholder (the name alone, no groups) found here.
    BootstrapToken(BootstrapToken),
    /// No credentials.
    Anonymous,
}

/// The outcome of authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// The user.
    pub user: UserInfo,
    /// How they were recognised.
    pub method: Method,
}

/// Why a request is refused with 401 Unauthorized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A client certificate was presented but is not acceptable.
    #[error("client certificate: {0}")]
    Certificate(String),
    /// A bearer token was presented but is not acceptable.
    #[error("bearer token: {0}")]
    Token(String),
    /// Several credentials were presented and none is acceptable.
    #[error("{0}; {1}")]
    Both(Box<AuthError>, Box<AuthError>),
    /// No credentials, and anonymous requests are disabled.
    #[error("no credentials, and anonymous requests are not allowed")]
    AnonymousDisabled,
    /// The service-account lookup failed (storage unavailable).
    #[error("service account lookup: {0}")]
    Lookup(String),
}

/// Decides who a request comes from.
#[derive(Debug, Clone)]
pub struct Authenticator {
    ca: CertificateDer<'static>,
    tokens: Option<TokenFile>,
    service_accounts: Option<TokenVerifier>,
    bootstrap_tokens: bool,
    anonymous: bool,
}

impl Authenticator {
    /// An authenticator accepting client certificates from `ca`, and anonymous requests.
    pub fn new(ca: CertificateDer<'static>) -> Self {
        Self {
            ca,
            tokens: None,
            service_accounts: None,
            bootstrap_tokens: true,
            anonymous: true,
        }
    }

    /// Whether bootstrap tokens are recognised (`--enable-bootstrap-token-auth`; on, as
    /// kubeadm runs kube-apiserver, so that nodes can join with `capstan token` tokens).
    pub fn with_bootstrap_tokens(mut self, enabled: bool) -> Self {
        self.bootstrap_tokens = enabled;
        self
    }

    /// Also accepts the static tokens of `tokens` (`--token-auth-file`).
    pub fn with_token_file(mut self, tokens: TokenFile) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Also accepts ServiceAccount tokens `verifier` accepts.
    pub fn with_service_accounts(mut self, verifier: TokenVerifier) -> Self {
        self.service_accounts = Some(verifier);
        self
    }

    /// Whether requests without credentials are anonymous (`--anonymous-auth`, default
    /// true) or refused.
    pub fn with_anonymous(mut self, allowed: bool) -> Self {
        self.anonymous = allowed;
        self
    }

    /// Who the request comes from: `peer_certificates` is the TLS peer's chain (leaf first)
    /// when it presented one, `authorization` the raw `Authorization` header value.
    pub fn authenticate(
        &self,
        peer_certificates: Option<&[CertificateDer<'_>]>,
        authorization: Option<&[u8]>,
    ) -> Result<Authenticated, AuthError> {
        let mut cert_error = None;
        if let Some(chain) = peer_certificates.filter(|c| !c.is_empty()) {
            match x509::authenticate(&self.ca, chain) {
                Ok(user) => {
                    return Ok(Authenticated {
                        user,
                        method: Method::ClientCertificate,
                    });
                }
                // kube-apiserver goes on to the token: a bad certificate with a good token
                // is served.
                Err(e) => cert_error = Some(e),
            }
        }
        let token_result =
            bearer_token(authorization).map(|token| token.and_then(|t| self.token(t)));
        match (cert_error, token_result) {
            (_, Ok(Some(Ok(found)))) => Ok(found),
            (Some(c), Ok(Some(Err(t)))) | (Some(c), Err(t)) => {
                Err(AuthError::Both(Box::new(c), Box::new(t)))
            }
            (None, Ok(Some(Err(t)))) | (None, Err(t)) => Err(t),
            (Some(c), Ok(None)) => Err(c),
            (None, Ok(None)) if self.anonymous => Ok(Authenticated {
                user: UserInfo::anonymous(),
                method: Method::Anonymous,
            }),
            (None, Ok(None)) => Err(AuthError::AnonymousDisabled),
        }
    }

    fn token(&self, token: &str) -> Option<Result<Authenticated, AuthError>> {
        if let Some(user) = self.tokens.as_ref().and_then(|t| t.lookup(token)) {
            return Some(Ok(Authenticated {
                user: user.clone(),
                method: Method::StaticToken,
            }));
        }
        if let Some(bootstrap) = BootstrapToken::parse(token).filter(|_| self.bootstrap_tokens) {
            return Some(Ok(Authenticated {
                user: UserInfo {
                    name: format!("{}{}", bootstrap::USER_PREFIX, bootstrap.id),
                    ..UserInfo::default()
                },
                method: Method::BootstrapToken(bootstrap),
            }));
        }
        let result = match &self.service_accounts {
            Some(verifier) if TokenVerifier::looks_like_jwt(token) => {
                verifier.verify(token).map(|claims| Authenticated {
                    user: claims.user(),
                    method: Method::ServiceAccount(Box::new(claims)),
                })
            }
            _ => Err(AuthError::Token("unknown token".to_string())),
        };
        Some(result)
    }
}

/// The token of a `Bearer` authorization header: `Ok(None)` when there is no bearer token
/// (no header, another scheme, an empty token: kube-apiserver ignores those too).
fn bearer_token(header: Option<&[u8]>) -> Result<Option<&str>, AuthError> {
    let Some(header) = header else {
        return Ok(None);
    };
    let header = std::str::from_utf8(header)
        .map_err(|_| AuthError::Token("Authorization header is not UTF-8".to_string()))?;
    let mut parts = header.trim().splitn(2, ' ');
    let (Some(scheme), Some(token)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = token.trim();
    Ok((!token.is_empty()).then_some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer_token(None).unwrap(), None);
        assert_eq!(bearer_token(Some(b"Bearer abc")).unwrap(), Some("abc"));
        assert_eq!(bearer_token(Some(b"bearer  abc ")).unwrap(), Some("abc"));
        assert_eq!(bearer_token(Some(b"Basic Zm9vOmJhcg==")).unwrap(), None);
        assert_eq!(bearer_token(Some(b"Bearer ")).unwrap(), None);
        assert!(bearer_token(Some(b"Bearer \xff")).is_err());
    }
}

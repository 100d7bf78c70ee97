//! ServiceAccount tokens: ES256 JWTs with the claims kube-apiserver's bound tokens carry (iss,
//! sub, aud, exp, iat, nbf, jti and the private `kubernetes.io` claim), issued with the
//! cluster's service-account key and verified back into a ServiceAccount user.
//!
//! Whether the service account (and the object a token is bound to) still exists is not known
//! here: the API server asks storage through [`ServiceAccountLookup`] after authentication, via
//! [`check_still_valid`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::BoxFuture;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use super::{AUTHENTICATED_GROUP, AuthError, UserInfo};
use crate::pki::{ServiceAccountKey, VerifyingKey};

/// The default issuer (`--service-account-issuer`), kube-apiserver's for kubeadm clusters.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Prefix of every service account's user name.
pub const USER_PREFIX: &str = "system:serviceaccount:";
/// Group of all service accounts.
pub const ALL_SERVICE_ACCOUNTS_GROUP: &str = "system:serviceaccounts";
/// `extra` key naming the pod a token is bound to.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// `extra` key carrying the UID of the pod a token is bound to.
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// `extra` key naming the node a token is bound to.
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// `extra` key carrying the UID of the node a token is bound to.
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
/// Leeway granted on `nbf` and `iat` for clocks of API servers sharing a key.
const CLOCK_SKEW: u64 = 60;
const ALGORITHM: &str = "ES256";

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// A field of the request cannot be used.
    #[error("token request: {0}")]
    Request(String),
    /// Signing or randomness failed.
    #[error("sign token: {0}")]
    Sign(#[from] crate::pki::PkiError),
}

/// The kind of object a token is bound to; the token dies with the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BoundKind {
    /// A Pod (the kubelet's projected tokens).
    Pod,
    /// A Secret.
    Secret,
    /// A Node.
    Node,
}

/// The object a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundObject {
    /// Its kind.
    pub kind: BoundKind,
    /// Its name (in the service account's namespace, except for nodes).
    pub name: String,
    /// Its UID.
    pub uid: String,
}

/// A name and UID, as the `kubernetes.io` claim carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The object's name.
    pub name: String,
    /// The object's UID (empty for the node of a pod-bound token when the node is not
    /// found, which upstream leaves out).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
}

/// The private `kubernetes.io` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesClaim {
    /// The service account's namespace.
    pub namespace: String,
    /// The node the token is bound to (directly or through its pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    /// The pod the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    /// The secret the token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    /// The service account.
    pub serviceaccount: ObjectRef,
    /// When a token whose lifetime the API server extended should have been refreshed
    /// (seconds since the epoch): clients past it are warned, not refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<u64>,
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Audiences {
    One(String),
    Many(Vec<String>),
}

/// The token's claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    aud: Audiences,
    exp: u64,
    iat: u64,
    iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaim,
    nbf: u64,
    sub: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

/// What a verified token says: who, bound to what, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountClaims {
    /// The private claim (namespace, service account, bound objects).
    pub kubernetes: KubernetesClaim,
    /// The token's ID (`jti`), when it has one.
    pub token_id: Option<String>,
    /// When it expires, seconds since the epoch.
    pub expires_at: u64,
}

/// Issues service-account tokens.
#[derive(Debug, Clone)]
pub struct TokenIssuer {
    key: Arc<ServiceAccountKey>,
    issuer: String,
    default_audiences: Vec<String>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn b64_json<T: Serialize>(value: &T) -> Result<String, IssueError> {
    let json = serde_json::to_vec(value).map_err(|e| IssueError::Request(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

fn random_id() -> Result<String, IssueError> {
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| IssueError::Sign(crate::pki::PkiError::Random))?;
    // A version-4 UUID, the form kube-apiserver's jti takes.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

impl TokenIssuer {
    /// An issuer signing with `key` as `issuer` (`--service-account-issuer`); tokens requested
    /// without audiences get `[issuer]`, as kube-apiserver's default `--api-audiences`.
    pub fn new(key: Arc<ServiceAccountKey>, issuer: impl Into<String>) -> Self {
        let issuer = issuer.into();
        Self {
            key,
            default_audiences: vec![issuer.clone()],
            issuer,
        }
    }

    /// Tokens requested without audiences get `audiences` (`--api-audiences`) instead.
    pub fn with_audiences(mut self, audiences: Vec<String>) -> Self {
        if !audiences.is_empty() {
            self.default_audiences = audiences;
        }
        self
    }

    /// A token for service account `namespace/name` (UID `uid`) valid for `expiry` from now,
    /// for `audiences` (empty: the default audiences), optionally bound to an object.
    pub fn issue(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
        audiences: &[String],
        expiry: Duration,
        bound: Option<&BoundObject>,
    ) -> Result<String, IssueError> {
        self.issue_at(
            SystemTime::now(),
            namespace,
            name,
            uid,
            audiences,
            expiry,
            bound,
        )
    }

    /// [`issue`](Self::issue) as if the time were `now` (for tests of expiry).
    #[allow(clippy::too_many_arguments)]
    pub fn issue_at(
        &self,
        now: SystemTime,
        namespace: &str,
        name: &str,
        uid: &str,
        audiences: &[String],
        expiry: Duration,
        bound: Option<&BoundObject>,
    ) -> Result<String, IssueError> {
        let object = |b: &BoundObject| ObjectRef {
            name: b.name.clone(),
            uid: b.uid.clone(),
        };
        let claim = KubernetesClaim {
            namespace: namespace.to_string(),
            node: bound.filter(|b| b.kind == BoundKind::Node).map(object),
            pod: bound.filter(|b| b.kind == BoundKind::Pod).map(object),
            secret: bound.filter(|b| b.kind == BoundKind::Secret).map(object),
            serviceaccount: ObjectRef {
                name: name.to_string(),
                uid: uid.to_string(),
            },
            warnafter: None,
        };
        self.issue_claim(now, claim, audiences, expiry)
    }

    /// A token carrying `claim` (the service account, its namespace and what it is bound to),
    /// issued at `now` and valid for `expiry`, for `audiences` (empty: the default ones).
    pub fn issue_claim(
        &self,
        now: SystemTime,
        claim: KubernetesClaim,
        audiences: &[String],
        expiry: Duration,
    ) -> Result<String, IssueError> {
        if claim.namespace.is_empty() || claim.serviceaccount.name.is_empty() {
            return Err(IssueError::Request(
                "namespace and service account name must not be empty".to_string(),
            ));
        }
        if expiry.is_zero() {
            return Err(IssueError::Request("expiry must be positive".to_string()));
        }
        let iat = unix(now);
        let sub = format!(
            "{USER_PREFIX}{}:{}",
            claim.namespace, claim.serviceaccount.name
        );
        let claims = Claims {
            aud: Audiences::Many(if audiences.is_empty() {
                self.default_audiences.clone()
            } else {
                audiences.to_vec()
            }),
            exp: iat.saturating_add(expiry.as_secs().max(1)),
            iat,
            iss: self.issuer.clone(),
            jti: Some(random_id()?),
            kubernetes: claim,
            nbf: iat,
            sub,
        };
        let header = Header {
            alg: ALGORITHM.to_string(),
            kid: Some(self.key.verifying_key().key_id().to_string()),
        };
        let signing_input = format!("{}.{}", b64_json(&header)?, b64_json(&claims)?);
        let signature = self.key.sign(signing_input.as_bytes())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// Verifies service-account tokens.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    keys: Vec<VerifyingKey>,
    issuers: Vec<String>,
    audiences: Vec<String>,
}

fn invalid(reason: impl Into<String>) -> AuthError {
    AuthError::Token(reason.into())
}

impl TokenVerifier {
    /// A verifier accepting tokens signed by any of `keys`, from any of `issuers`, for at least
    /// one of `audiences` (`--api-audiences`; kube-apiserver defaults them to the issuer).
    pub fn new(keys: Vec<VerifyingKey>, issuers: Vec<String>, audiences: Vec<String>) -> Self {
        Self {
            keys,
            issuers,
            audiences,
        }
    }

    /// Whether `token` looks like a JWT at all (three dot-separated parts), so other
    /// authenticators' tokens are not reported as bad JWTs.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3
    }

    /// The claims of `token` when it is valid now.
    pub fn verify(&self, token: &str) -> Result<ServiceAccountClaims, AuthError> {
        self.verify_at(token, SystemTime::now())
    }

    /// The claims of `token` when it is valid at `now`.
    pub fn verify_at(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<ServiceAccountClaims, AuthError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a JWT"));
        };
        let header: Header = URL_SAFE_NO_PAD
            .decode(header_b64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| invalid("malformed JWT header"))?;
        if header.alg != ALGORITHM {
            return Err(invalid(format!(
                "JWT algorithm {:?} is not accepted (only {ALGORITHM})",
                header.alg
            )));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(sig_b64)
            .map_err(|_| invalid("malformed JWT signature"))?;
        let signing_input = &token[..header_b64.len() + 1 + claims_b64.len()];
        // Keys with the token's kid first; a kid is a hint, not a promise, so try the rest too.
        let verified = self
            .keys
            .iter()
            .filter(|k| header.kid.as_deref().is_none_or(|kid| kid == k.key_id()))
            .chain(self.keys.iter())
            .any(|k| k.verify(signing_input.as_bytes(), &signature));
        if !verified {
            return Err(invalid(
                "JWT signature does not verify with the service-account keys",
            ));
        }
        let claims: Claims = URL_SAFE_NO_PAD
            .decode(claims_b64)
            .map_err(|_| invalid("malformed JWT claims"))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| invalid(format!("JWT claims: {e}")))
            })?;
        if !self.issuers.contains(&claims.iss) {
            return Err(invalid(format!("issuer {:?} is not accepted", claims.iss)));
        }
        let now = unix(now);
        if now >= claims.exp {
            return Err(invalid("token has expired"));
        }
        if now.saturating_add(CLOCK_SKEW) < claims.nbf
            || now.saturating_add(CLOCK_SKEW) < claims.iat
        {
            return Err(invalid("token is not valid yet"));
        }
        let auds = match &claims.aud {
            Audiences::One(a) => std::slice::from_ref(a),
            Audiences::Many(a) => a.as_slice(),
        };
        if !auds.iter().any(|a| self.audiences.contains(a)) {
            return Err(invalid(format!(
                "token audiences {auds:?} are not accepted"
            )));
        }
        let k = &claims.kubernetes;
        let expected_sub = format!("{USER_PREFIX}{}:{}", k.namespace, k.serviceaccount.name);
        if k.namespace.is_empty() || k.serviceaccount.name.is_empty() || claims.sub != expected_sub
        {
            return Err(invalid(
                "token subject does not match its kubernetes.io claim",
            ));
        }
        Ok(ServiceAccountClaims {
            kubernetes: claims.kubernetes,
            token_id: claims.jti,
            expires_at: claims.exp,
        })
    }
}

impl ServiceAccountClaims {
    /// The user these claims make: `system:serviceaccount:<ns>:<name>` in the service-account
    /// groups, with the bound pod and node in `extra` as kube-apiserver puts them.
    pub fn user(&self) -> UserInfo {
        let k = &self.kubernetes;
        let mut extra = BTreeMap::new();
        if let Some(pod) = &k.pod {
            extra.insert(EXTRA_POD_NAME.to_string(), vec![pod.name.clone()]);
            extra.insert(EXTRA_POD_UID.to_string(), vec![pod.uid.clone()]);
        }
        if let Some(node) = &k.node {
            extra.insert(EXTRA_NODE_NAME.to_string(), vec![node.name.clone()]);
            extra.insert(EXTRA_NODE_UID.to_string(), vec![node.uid.clone()]);
        }
        if let Some(jti) = &self.token_id {
            extra.insert(
                super::x509::CREDENTIAL_ID_KEY.to_string(),
                vec![format!("JTI={jti}")],
            );
        }
        UserInfo {
            name: format!("{USER_PREFIX}{}:{}", k.namespace, k.serviceaccount.name),
            uid: k.serviceaccount.uid.clone(),
            groups: vec![
                ALL_SERVICE_ACCOUNTS_GROUP.to_string(),
                format!("{ALL_SERVICE_ACCOUNTS_GROUP}:{}", k.namespace),
                AUTHENTICATED_GROUP.to_string(),
            ],
            extra,
        }
    }
}

/// An error from the lookup's backing store.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// What the API server's storage answers about the objects tokens name; implemented by the
/// API server over its store, not here.
pub trait ServiceAccountLookup: Send + Sync {
    /// The UID of service account `namespace/name`, `None` when it does not exist (or is
    /// being deleted).
    fn service_account_uid<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, LookupError>>;

    /// The UID of the bound object (`namespace` is ignored for nodes), `None` when it does not
    /// exist (or is being deleted).
    fn bound_object_uid<'a>(
        &'a self,
        kind: BoundKind,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, LookupError>>;
}

/// Checks that the service account and the objects a verified token is bound to still exist
/// with the UIDs the token names, as kube-apiserver does (`--service-account-lookup`): a token
/// dies with its service account or pod even before it expires.
pub async fn check_still_valid(
    claims: &ServiceAccountClaims,
    lookup: &dyn ServiceAccountLookup,
) -> Result<(), AuthError> {
    let k = &claims.kubernetes;
    let lookup_failed = |e: LookupError| AuthError::Lookup(e.0);
    let sa = &k.serviceaccount;
    match lookup
        .service_account_uid(&k.namespace, &sa.name)
        .await
        .map_err(lookup_failed)?
    {
        Some(uid) if uid == sa.uid => {}
        Some(_) => {
            return Err(invalid(format!(
                "service account {}/{} has been deleted and recreated",
                k.namespace, sa.name
            )));
        }
        None => {
            return Err(invalid(format!(
                "service account {}/{} does not exist",
                k.namespace, sa.name
            )));
        }
    }
    // The node of a pod-bound token only says where the pod ran; upstream checks it for
    // node-bound tokens alone.
    let node = if k.pod.is_some() { &None } else { &k.node };
    for (kind, object) in [
        (BoundKind::Pod, &k.pod),
        (BoundKind::Secret, &k.secret),
        (BoundKind::Node, node),
    ] {
        let Some(object) = object else { continue };
        let current = lookup
            .bound_object_uid(kind, &k.namespace, &object.name)
            .await
            .map_err(lookup_failed)?;
        if current.as_deref() != Some(object.uid.as_str()) {
            return Err(invalid(format!(
                "the {kind:?} {:?} the token is bound to no longer exists",
                object.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<ServiceAccountKey> {
        let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = rcgen::PublicKeyData::subject_public_key_info(&k);
        Arc::new(ServiceAccountKey::from_pkcs8(&k.serialize_der(), &spki).unwrap())
    }

    fn verifier(key: &ServiceAccountKey) -> TokenVerifier {
        TokenVerifier::new(
            vec![key.verifying_key().clone()],
            vec![DEFAULT_ISSUER.to_string()],
            vec![DEFAULT_ISSUER.to_string()],
        )
    }

    fn reason(e: AuthError) -> String {
        e.to_string()
    }

    #[test]
    fn claims_are_kube_shaped() {
        let key = key();
        let token = TokenIssuer::new(key.clone(), DEFAULT_ISSUER)
            .issue("ns", "sa", "u", &[], Duration::from_secs(600), None)
            .unwrap();
        let mut parts = token.split('.');
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap())
                .unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], key.verifying_key().key_id());
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap())
                .unwrap();
        assert_eq!(claims["iss"], DEFAULT_ISSUER);
        assert_eq!(claims["sub"], "system:serviceaccount:ns:sa");
        assert_eq!(claims["aud"], serde_json::json!([DEFAULT_ISSUER]));
        assert_eq!(claims["kubernetes.io"]["namespace"], "ns");
        assert_eq!(
            claims["kubernetes.io"]["serviceaccount"],
            serde_json::json!({"name": "sa", "uid": "u"})
        );
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            600
        );
        assert_eq!(claims["nbf"], claims["iat"]);
        assert!(claims["jti"].as_str().unwrap().len() == 36);
    }

    #[test]
    fn refuses_what_kube_refuses() {
        let key = key();
        let issuer = TokenIssuer::new(key.clone(), DEFAULT_ISSUER);
        let v = verifier(&key);
        let now = SystemTime::now();
        let token = issuer
            .issue("ns", "sa", "u", &[], Duration::from_secs(600), None)
            .unwrap();
        assert!(v.verify_at(&token, now).is_ok());
        assert!(
            reason(
                v.verify_at(&token, now + Duration::from_secs(601))
                    .unwrap_err()
            )
            .contains("expired")
        );
        assert!(
            reason(
                v.verify_at(&token, now - Duration::from_secs(300))
                    .unwrap_err()
            )
            .contains("not valid yet")
        );

        // alg "none" with the same claims.
        let claims_part = token.split('.').nth(1).unwrap();
        let none = format!(
            "{}.{claims_part}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#)
        );
        assert!(reason(v.verify(&none).unwrap_err()).contains("not accepted"));

        // Another issuer, another key.
        let other_issuer = TokenIssuer::new(key.clone(), "https://elsewhere")
            .issue("ns", "sa", "u", &[], Duration::from_secs(600), None)
            .unwrap();
        assert!(reason(v.verify(&other_issuer).unwrap_err()).contains("issuer"));
        let other_key = TokenIssuer::new(self::key(), DEFAULT_ISSUER)
            .issue("ns", "sa", "u", &[], Duration::from_secs(600), None)
            .unwrap();
        assert!(reason(v.verify(&other_key).unwrap_err()).contains("signature"));
        assert!(v.verify("a.b").is_err());
    }

    struct Store {
        sa_uid: Option<&'static str>,
        pod_uid: Option<&'static str>,
    }

    impl ServiceAccountLookup for Store {
        fn service_account_uid<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Option<String>, LookupError>> {
            Box::pin(async move { Ok(self.sa_uid.map(str::to_string)) })
        }
        fn bound_object_uid<'a>(
            &'a self,
            kind: BoundKind,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Option<String>, LookupError>> {
            assert_eq!(kind, BoundKind::Pod);
            Box::pin(async move { Ok(self.pod_uid.map(str::to_string)) })
        }
    }

    #[test]
    fn lookup_kills_tokens_of_deleted_objects() {
        let key = key();
        let pod = BoundObject {
            kind: BoundKind::Pod,
            name: "p".into(),
            uid: "pod-1".into(),
        };
        let token = TokenIssuer::new(key.clone(), DEFAULT_ISSUER)
            .issue(
                "ns",
                "sa",
                "sa-1",
                &[],
                Duration::from_secs(600),
                Some(&pod),
            )
            .unwrap();
        let claims = verifier(&key).verify(&token).unwrap();
        let check = |sa_uid, pod_uid| {
            futures::executor::block_on(check_still_valid(&claims, &Store { sa_uid, pod_uid }))
        };
        assert!(check(Some("sa-1"), Some("pod-1")).is_ok());
        assert!(reason(check(None, Some("pod-1")).unwrap_err()).contains("does not exist"));
        assert!(reason(check(Some("sa-2"), Some("pod-1")).unwrap_err()).contains("recreated"));
        assert!(
            reason(check(Some("sa-1"), Some("pod-2")).unwrap_err()).contains("no longer exists")
        );
        assert!(reason(check(Some("sa-1"), None).unwrap_err()).contains("no longer exists"));
    }
}

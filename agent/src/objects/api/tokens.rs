//! Service account tokens for projected volumes, from the TokenRequest API
//! (`serviceaccounts/<name>/token`), bound to the pod, cached per pod and request, and renewed
//! as the kubelet's token manager renews them: once 80% of the lifetime has passed, or the
//! token is 24 hours old.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection};
use kube::api::{Api, PostParams};

/// The API server's default when a projection names no lifetime (it defaults the field too).
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The kubelet renews every token at least this often, however long it is valid.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// A TokenRequest that takes longer fails: the pod's sync waits for it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a token is requested for: the same key gets the same cached token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's service account.
    pub account: String,
    /// The audience asked for; empty for the API server's own.
    pub audience: String,
    /// The lifetime asked for.
    pub expiration_seconds: i64,
    /// The pod the token is bound to.
    pub pod_name: String,
    /// Its UID.
    pub pod_uid: String,
}

impl TokenKey {
    /// The token `projection` of `pod` asks for.
    pub fn of(pod: &Pod, projection: &ServiceAccountTokenProjection) -> Self {
        let spec = pod.spec.as_ref();
        let account = spec
            .and_then(|s| s.service_account_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        TokenKey {
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            account,
            audience: projection.audience.clone().unwrap_or_default(),
            expiration_seconds: projection
                .expiration_seconds
                .unwrap_or(DEFAULT_EXPIRATION_SECONDS),
            pod_name: pod.metadata.name.clone().unwrap_or_default(),
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }
}

/// A token as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The JWT.
    pub value: String,
    /// When the agent got it.
    pub issued: SystemTime,
    /// When the API server says it expires.
    pub expires: SystemTime,
}

impl Token {
    /// Whether the token is due for renewal at `now`.
    pub fn needs_refresh(&self, now: SystemTime) -> bool {
        let lifetime = self.expires.duration_since(self.issued).unwrap_or_default();
        now >= self.issued + MAX_TTL || now >= self.issued + lifetime.mul_f64(0.8)
    }

    /// Whether it is still accepted at `now`.
    pub fn valid(&self, now: SystemTime) -> bool {
        now < self.expires
    }
}

/// Asks the API server for the token `key` names.
pub async fn request(client: &kube::Client, key: &TokenKey) -> Result<Token, String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &key.namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: if key.audience.is_empty() {
                Vec::new()
            } else {
                vec![key.audience.clone()]
            },
            expiration_seconds: Some(key.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(key.pod_name.clone()),
                uid: Some(key.pod_uid.clone()),
            }),
        },
        ..Default::default()
    };
    let issued = SystemTime::now();
    let answer = tokio::time::timeout(
        REQUEST_TIMEOUT,
        api.create_token_request(&key.account, &PostParams::default(), &request),
    )
    .await
    .map_err(|_| format!("failed to fetch token: no answer within {REQUEST_TIMEOUT:?}"))?
    .map_err(|e| match e {
        // The API server's own words, as the kubelet's message carries them.
        kube::Error::Api(status) => format!("failed to fetch token: {}", status.message),
        other => format!("failed to fetch token: {other}"),
    })?;
    let status = answer
        .status
        .ok_or_else(|| "failed to fetch token: the answer has no status".to_string())?;
    if status.token.is_empty() {
        return Err("failed to fetch token: the answer has no token".into());
    }
    let expires = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            u64::try_from(status.expiration_timestamp.0.as_second()).unwrap_or(0),
        );
    Ok(Token {
        value: status.token,
        issued,
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(lifetime: Duration) -> Token {
        let issued = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        Token {
            value: "t".into(),
            issued,
            expires: issued + lifetime,
        }
    }

    #[test]
    fn renewed_at_80_percent_or_after_a_day() {
        let hour = token(Duration::from_secs(3600));
        assert!(!hour.needs_refresh(hour.issued + Duration::from_secs(2879)));
        assert!(hour.needs_refresh(hour.issued + Duration::from_secs(2880)));
        assert!(hour.valid(hour.issued + Duration::from_secs(3599)));
        assert!(!hour.valid(hour.expires));
        // An extended token (a year for kube-api-access's 3607 s) still goes after 24 h.
        let year = token(Duration::from_secs(365 * 24 * 3600));
        assert!(!year.needs_refresh(year.issued + Duration::from_secs(23 * 3600)));
        assert!(year.needs_refresh(year.issued + MAX_TTL));
    }

    #[test]
    fn the_key_binds_the_pod_and_defaults_account_and_lifetime() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": []}
        }))
        .unwrap();
        let key = TokenKey::of(&pod, &ServiceAccountTokenProjection::default());
        assert_eq!(key.account, "default");
        assert_eq!(key.expiration_seconds, 3600);
        assert_eq!((key.pod_name.as_str(), key.pod_uid.as_str()), ("p", "u1"));
        assert_eq!(key.audience, "");
    }
}

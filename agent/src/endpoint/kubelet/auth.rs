//! Who calls the kubelet endpoint and whether they may: a verified client certificate (the
//! API server's kubelet-client one) or a bearer token reviewed by the API server
//! (TokenReview), then a SubjectAccessReview on the node's subresource the path maps to, as
//! the kubelet's webhook authenticator and authorizer do. Answers are cached for the
//! kubelet's default times (2 minutes for tokens, 5 minutes allowed, 30 s refused).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::Method;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

const TOKEN_TTL: Duration = Duration::from_secs(120);
const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
/// Entries kept per cache before the stale ones are swept.
const CACHE_SWEEP_AT: usize = 1024;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// User name.
    pub name: String,
    /// User UID, when the authenticator gave one.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes (a token's pod binding, say).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Caller {
    /// The caller a verified client certificate names: CN the user, O the groups.
    pub fn from_certificate(der: &[u8]) -> Option<Caller> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())?
            .to_string();
        let mut groups: Vec<String> = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        groups.push("system:authenticated".into());
        Some(Caller {
            name,
            uid: String::new(),
            groups,
            extra: BTreeMap::new(),
        })
    }

    fn anonymous() -> Caller {
        Caller {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
            extra: BTreeMap::new(),
        }
    }
}

/// Why a request is refused, with the kubelet's status and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401, 403 or 500.
    pub status: u16,
    /// The body.
    pub message: String,
}

/// What a request asks of the node, as the kubelet maps it for authorization.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    /// get, create, update, patch, delete.
    pub verb: String,
    /// The `nodes` subresource: proxy, log, stats, metrics, pods, healthz, configz, spec.
    pub subresource: String,
}

impl Access {
    /// The access `method` on `path` needs.
    pub fn of(method: &Method, path: &str) -> Access {
        let verb = match *method {
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "get",
        };
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        let subresource = match first {
            "stats" => "stats",
            "metrics" => "metrics",
            "logs" => "log",
            "spec" => "spec",
            "checkpoint" => "checkpoint",
            "pods" => "pods",
            "healthz" => "healthz",
            "configz" => "configz",
            _ => "proxy",
        };
        Access {
            verb: verb.into(),
            subresource: subresource.into(),
        }
    }

    /// The check that also admits the request when this one is refused: the kubelet's
    /// fine-grained subresources fall back to `nodes/proxy`, as in 1.33.
    fn fallback(&self) -> Option<Access> {
        matches!(self.subresource.as_str(), "pods" | "healthz" | "configz").then(|| Access {
            verb: self.verb.clone(),
            subresource: "proxy".into(),
        })
    }
}

/// Who is let in and how they are checked (the KubeletConfiguration's `authentication` and
/// `authorization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Requests without credentials pass as `system:anonymous`, then face authorization.
    pub anonymous: bool,
    /// Bearer tokens are reviewed by the API server; off, they are refused.
    pub webhook_tokens: bool,
    /// Every authenticated caller is allowed (mode AlwaysAllow) instead of asking the API
    /// server (mode Webhook).
    pub always_allow: bool,
}

/// The endpoint's authenticator and authorizer, with their caches.
pub struct Auth {
    client: kube::Client,
    node_name: String,
    policy: Policy,
    tokens: Mutex<HashMap<String, (Option<Caller>, Instant)>>,
    decisions: Mutex<HashMap<(Caller, Access), (bool, Instant)>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

fn fresh<V: Clone>(entry: Option<&(V, Instant)>, ttl: impl Fn(&V) -> Duration) -> Option<V> {
    entry
        .filter(|(value, at)| at.elapsed() < ttl(value))
        .map(|(value, _)| value.clone())
}

fn remember<K: Eq + std::hash::Hash, V>(cache: &Mutex<HashMap<K, (V, Instant)>>, key: K, value: V) {
    if let Ok(mut map) = cache.lock() {
        if map.len() >= CACHE_SWEEP_AT {
            map.retain(|_, (_, at)| at.elapsed() < ALLOWED_TTL);
        }
        map.insert(key, (value, Instant::now()));
    }
}

impl Auth {
    /// Checks callers of node `node_name` under `policy`, through the API server `client`
    /// talks to.
    pub fn new(client: kube::Client, node_name: &str, policy: Policy) -> Auth {
        Auth {
            client,
            node_name: node_name.to_string(),
            policy,
            tokens: Mutex::default(),
            decisions: Mutex::default(),
        }
    }

    /// The caller of a request: its certificate's, else its bearer token's, else anonymous
    /// when allowed.
    pub async fn authenticate(
        &self,
        certificate: Option<&Caller>,
        authorization: Option<&str>,
    ) -> Result<Caller, Refusal> {
        let unauthorized = || Refusal {
            status: 401,
            message: "Unauthorized".into(),
        };
        if let Some(caller) = certificate {
            return Ok(caller.clone());
        }
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return if self.policy.anonymous {
                Ok(Caller::anonymous())
            } else {
                Err(unauthorized())
            };
        };
        if !self.policy.webhook_tokens {
            return Err(unauthorized());
        }
        let cached = self
            .tokens
            .lock()
            .ok()
            .and_then(|map| fresh(map.get(token), |_| TOKEN_TTL));
        let reviewed = match cached {
            Some(answer) => answer,
            None => {
                let answer = self.review_token(token).await?;
                remember(&self.tokens, token.to_string(), answer.clone());
                answer
            }
        };
        reviewed.ok_or_else(unauthorized)
    }

    async fn review_token(&self, token: &str) -> Result<Option<Caller>, Refusal> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Refusal {
                status: 500,
                message: format!("token review failed: {e}"),
            })?;
        let Some(status) = answer.status.filter(|s| s.authenticated == Some(true)) else {
            return Ok(None);
        };
        let user = status.user.unwrap_or_default();
        Ok(Some(Caller {
            name: user.username.unwrap_or_default(),
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default().into_iter().collect(),
        }))
    }

    /// Whether `caller` may do `access` on this node; refused with the kubelet's text.
    pub async fn authorize(&self, caller: &Caller, access: &Access) -> Result<(), Refusal> {
        if self.policy.always_allow {
            return Ok(());
        }
        if self.allowed(caller, access).await? {
            return Ok(());
        }
        if let Some(fallback) = access.fallback()
            && self.allowed(caller, &fallback).await?
        {
            return Ok(());
        }
        Err(Refusal {
            status: 403,
            message: format!(
                "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
                caller.name, access.verb, access.subresource
            ),
        })
    }

    async fn allowed(&self, caller: &Caller, access: &Access) -> Result<bool, Refusal> {
        let key = (caller.clone(), access.clone());
        let cached = self.decisions.lock().ok().and_then(|map| {
            fresh(map.get(&key), |allowed| {
                if *allowed { ALLOWED_TTL } else { DENIED_TTL }
            })
        });
        if let Some(allowed) = cached {
            return Ok(allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.name.clone()),
                uid: (!caller.uid.is_empty()).then(|| caller.uid.clone()),
                groups: Some(caller.groups.clone()),
                extra: (!caller.extra.is_empty())
                    .then(|| caller.extra.clone().into_iter().collect()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(access.verb.clone()),
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(access.subresource.clone()),
                    name: Some(self.node_name.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| Refusal {
                status: 500,
                message: format!("authorization check failed: {e}"),
            })?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        remember(&self.decisions, key, allowed);
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_the_kubelets_subresources() {
        let of = |m: Method, p: &str| Access::of(&m, p);
        assert_eq!(of(Method::GET, "/stats/summary").subresource, "stats");
        assert_eq!(of(Method::GET, "/metrics/resource").subresource, "metrics");
        assert_eq!(of(Method::GET, "/logs/syslog").subresource, "log");
        assert_eq!(of(Method::GET, "/containerLogs/a/b/c").subresource, "proxy");
        let exec = of(Method::POST, "/exec/default/p/c");
        assert_eq!(
            (exec.verb.as_str(), exec.subresource.as_str()),
            ("create", "proxy")
        );
        let pods = of(Method::GET, "/pods");
        assert_eq!(pods.fallback().map(|a| a.subresource), Some("proxy".into()));
        assert_eq!(exec.fallback(), None);
    }
}

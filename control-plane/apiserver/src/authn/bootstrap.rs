//! Bootstrap tokens (`--enable-bootstrap-token-auth`, as kubeadm runs kube-apiserver): a
//! bearer token `<id>.<secret>` (6 and 16 of `[a-z0-9]`) authenticates as
//! `system:bootstrap:<id>` in `system:bootstrappers` (and its secret's `auth-extra-groups`)
//! when the Secret `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`
//! holds that id and secret, allows authentication and has not expired. The Secret is read
//! by the caller (the API server's storage); this module only judges it.

use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{AUTHENTICATED_GROUP, AuthError, UserInfo};

/// The group every bootstrap token user is in.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Where bootstrap token Secrets live.
pub const NAMESPACE: &str = "kube-system";
/// The user name prefix of bootstrap token users.
pub const USER_PREFIX: &str = "system:bootstrap:";

/// A token of the bootstrap form; the secret half is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public id (the Secret's name suffix).
    pub id: String,
    secret: String,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn token_chars(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl BootstrapToken {
    /// The token, if `token` has the bootstrap form.
    pub fn parse(token: &str) -> Option<BootstrapToken> {
        let (id, secret) = token.split_once('.')?;
        (token_chars(id, 6) && token_chars(secret, 16)).then(|| BootstrapToken {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The name of its Secret in kube-system.
    pub fn secret_name(&self) -> String {
        format!("bootstrap-token-{}", self.id)
    }

    /// The user `secret` (the stored Secret, `None` when there is none) makes of this token
    /// at `now`, or why it does not authenticate.
    pub fn user(&self, secret: Option<&Value>, now: DateTime<Utc>) -> Result<UserInfo, AuthError> {
        let refuse = |why: &str| {
            Err(AuthError::Token(format!(
                "bootstrap token {}: {why}",
                self.id
            )))
        };
        let Some(secret) = secret else {
            return refuse("no such token");
        };
        if secret
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|t| !t.is_null())
        {
            return refuse("its secret is being deleted");
        }
        if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
            return refuse("its secret is not of type bootstrap.kubernetes.io/token");
        }
        let data = |key: &str| {
            secret
                .pointer(&format!("/data/{key}"))
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
        };
        let stored = data("token-secret").unwrap_or_default();
        if !constant_time_eq(stored.as_bytes(), self.secret.as_bytes()) {
            return refuse("wrong secret");
        }
        if data("token-id").as_deref() != Some(self.id.as_str()) {
            return refuse("its secret names another token id");
        }
        if let Some(expiration) = data("expiration") {
            match DateTime::parse_from_rfc3339(expiration.trim()) {
                Ok(at) if at.with_timezone(&Utc) > now => {}
                _ => return refuse("expired"),
            }
        }
        if data("usage-bootstrap-authentication").as_deref() != Some("true") {
            return refuse("not usable for authentication");
        }
        let mut groups = vec![BOOTSTRAPPERS_GROUP.to_string()];
        for group in data("auth-extra-groups")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
        {
            if !valid_extra_group(group) {
                return refuse("an auth-extra-groups entry is not a system:bootstrappers: group");
            }
            if !groups.iter().any(|g| g == group) {
                groups.push(group.to_string());
            }
        }
        groups.push(AUTHENTICATED_GROUP.to_string());
        Ok(UserInfo {
            name: format!("{USER_PREFIX}{}", self.id),
            uid: String::new(),
            groups,
            extra: Default::default(),
        })
    }
}

/// `system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]`, upstream's check of extra groups.
fn valid_extra_group(group: &str) -> bool {
    let Some(rest) = group.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !rest.is_empty()
        && rest.len() <= 256
        && rest.bytes().all(|b| allowed(b) || b == b':' || b == b'-')
        && rest.bytes().last().is_some_and(allowed)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(extra: serde_json::Map<String, Value>) -> Value {
        let mut data = serde_json::Map::new();
        data.insert("token-id".into(), json!(b64("abcdef")));
        data.insert("token-secret".into(), json!(b64("0123456789abcdef")));
        data.insert("usage-bootstrap-authentication".into(), json!(b64("true")));
        data.insert(
            "auth-extra-groups".into(),
            json!(b64("system:bootstrappers:kubeadm:default-node-token")),
        );
        data.extend(extra);
        json!({"type": SECRET_TYPE, "metadata": {"name": "bootstrap-token-abcdef"}, "data": data})
    }

    #[test]
    fn parses_only_the_bootstrap_form() {
        assert!(BootstrapToken::parse("abcdef.0123456789abcdef").is_some());
        assert!(BootstrapToken::parse("abcdef.0123456789ABCDEF").is_none());
        assert!(BootstrapToken::parse("abcde.0123456789abcdef").is_none());
        assert!(BootstrapToken::parse("eyJhbGciOi.x.y").is_none());
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        assert!(!format!("{token:?}").contains("0123456789abcdef"));
        assert_eq!(token.secret_name(), "bootstrap-token-abcdef");
    }

    #[test]
    fn a_valid_secret_makes_a_bootstrapper() {
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let user = token
            .user(Some(&secret(Default::default())), Utc::now())
            .unwrap();
        assert_eq!(user.name, "system:bootstrap:abcdef");
        assert_eq!(
            user.groups,
            [
                "system:bootstrappers",
                "system:bootstrappers:kubeadm:default-node-token",
                "system:authenticated"
            ]
        );
    }

    #[test]
    fn refusals() {
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let wrong = BootstrapToken::parse("abcdef.0000000000000000").unwrap();
        let now = Utc::now();
        let ok = secret(Default::default());
        assert!(token.user(None, now).is_err());
        assert!(wrong.user(Some(&ok), now).is_err());
        let with = |key: &str, value: &str| {
            let mut extra = serde_json::Map::new();
            extra.insert(key.into(), json!(b64(value)));
            secret(extra)
        };
        assert!(
            token
                .user(Some(&with("expiration", "2020-01-01T00:00:00Z")), now)
                .is_err()
        );
        assert!(
            token
                .user(Some(&with("expiration", "2999-01-01T00:00:00Z")), now)
                .is_ok()
        );
        assert!(
            token
                .user(Some(&with("usage-bootstrap-authentication", "false")), now)
                .is_err()
        );
        assert!(
            token
                .user(Some(&with("auth-extra-groups", "system:masters")), now)
                .is_err()
        );
        let mut opaque = ok.clone();
        opaque["type"] = json!("Opaque");
        assert!(token.user(Some(&opaque), now).is_err());
    }
}

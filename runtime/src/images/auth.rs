//! Registry credentials (from the CRI request or a docker config.json) and the
//! `WWW-Authenticate` challenges registries answer with.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use capstan_proto::AuthConfig;

/// Credentials for one registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// User name for Basic auth or the token exchange.
    pub username: String,
    /// Password.
    pub password: String,
    /// A ready bearer token, used as is.
    pub registry_token: String,
}

impl std::fmt::Debug for Credentials {
    // Never print secrets into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from a CRI `AuthConfig`: username/password, the base64 `auth` pair, or a
    /// registry token. `None` when it carries nothing.
    pub fn from_cri(auth: &AuthConfig) -> Result<Option<Self>, String> {
        let mut credentials = Credentials {
            username: auth.username.clone(),
            password: auth.password.clone(),
            registry_token: auth.registry_token.clone(),
        };
        if !auth.auth.is_empty() {
            let (user, password) =
                decode_pair(&auth.auth).map_err(|e| format!("auth.auth: {e}"))?;
            credentials.username = user;
            credentials.password = password;
        }
        if !auth.identity_token.is_empty() && credentials.registry_token.is_empty() {
            credentials.registry_token = auth.identity_token.clone();
        }
        Ok((!credentials.is_empty()).then_some(credentials))
    }

    /// Credentials for `host` from a docker `config.json` (`auths.<host>.auth` or
    /// username/password). An unreadable file yields none, logged.
    pub fn from_docker_config(path: &Path, host: &str) -> Option<Self> {
        let text = std::fs::read_to_string(path)
            .inspect_err(
                |e| tracing::warn!(path = %path.display(), error = %e, "cannot read docker config"),
            )
            .ok()?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .inspect_err(
                |e| tracing::warn!(path = %path.display(), error = %e, "docker config is not JSON"),
            )
            .ok()?;
        let auths = config.get("auths")?.as_object()?;
        let candidates = [
            host.to_string(),
            format!("https://{host}"),
            format!("http://{host}"),
            if host == "docker.io" {
                "https://index.docker.io/v1/".to_string()
            } else {
                String::new()
            },
        ];
        let entry = candidates.iter().find_map(|key| auths.get(key))?;
        let field = |name: &str| {
            entry
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let mut credentials = Credentials {
            username: field("username"),
            password: field("password"),
            registry_token: field("registrytoken"),
        };
        let pair = field("auth");
        if !pair.is_empty() {
            match decode_pair(&pair) {
                Ok((user, password)) => {
                    credentials.username = user;
                    credentials.password = password;
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), host, error = %e, "bad auth entry")
                }
            }
        }
        (!credentials.is_empty()).then_some(credentials)
    }

    /// Whether there is nothing to authenticate with.
    pub fn is_empty(&self) -> bool {
        self.username.is_empty() && self.password.is_empty() && self.registry_token.is_empty()
    }

    /// The `Authorization` value for Basic auth.
    pub fn basic(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

fn decode_pair(encoded: &str) -> Result<(String, String), String> {
    let bytes = STANDARD
        .decode(encoded.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| "not of the form user:password".to_string())?;
    Ok((user.to_string(), password.to_string()))
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `bearer` or `basic`, lower-cased.
    pub scheme: String,
    /// Parameters such as realm, service and scope.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// Parses `Scheme key="value", key=value, ...`; quoted values may hold commas.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.is_empty() {
            return None;
        }
        let mut params = BTreeMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if key.is_empty() {
                break;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        (_, c) => {
                            value.push(c);
                            escaped = false;
                        }
                    }
                }
            } else {
                while let Some(c) = chars.peek() {
                    if *c == ',' {
                        break;
                    }
                    value.push(*c);
                    chars.next();
                }
            }
            params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Challenge, Credentials};
    use capstan_proto::AuthConfig;

    #[test]
    fn bearer_challenge_with_commas_in_scope() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        assert_eq!(
            Challenge::parse("Basic realm=reg").unwrap().params["realm"],
            "reg"
        );
    }

    #[test]
    fn cri_auth_pair_is_decoded_and_bad_pairs_named() {
        let auth = AuthConfig {
            auth: "dXNlcjpwYXNz".into(), // user:pass
            ..Default::default()
        };
        let c = Credentials::from_cri(&auth).unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("user", "pass"));
        assert_eq!(Credentials::from_cri(&AuthConfig::default()).unwrap(), None);
        let bad = AuthConfig {
            auth: "!!".into(),
            ..Default::default()
        };
        assert!(
            Credentials::from_cri(&bad)
                .unwrap_err()
                .contains("auth.auth")
        );
    }

    #[test]
    fn docker_config_entries_are_found_by_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpwYXNz"},"https://index.docker.io/v1/":{"username":"hub","password":"pw"}}}"#,
        )
        .unwrap();
        let local = Credentials::from_docker_config(&path, "127.0.0.1:5000").unwrap();
        assert_eq!(local.username, "user");
        let hub = Credentials::from_docker_config(&path, "docker.io").unwrap();
        assert_eq!(hub.password, "pw");
        assert!(Credentials::from_docker_config(&path, "other.example").is_none());
        assert!(
            !format!("{local:?}").contains("pass"),
            "secrets must not be printed"
        );
    }
}

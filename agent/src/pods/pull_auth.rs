//! Registry credentials from a pod's image pull secrets, matched to an image as the kubelet's
//! credential keyring matches them: `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`,
//! `{"auths": {...}}`) and `kubernetes.io/dockercfg` (`.dockercfg`) secrets, each entry keyed
//! by a registry location (`host[:port][/path]`, an optional scheme and `/v1/` or `/v2/`
//! ignored, `*` globs in host labels). The most specific matching location comes first; an
//! image on Docker Hub also matches `index.docker.io` entries. Each matching credential is
//! tried in turn.

use std::collections::BTreeMap;

use capstan_proto::AuthConfig;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;

/// The Docker Hub location credentials are filed under.
const DEFAULT_REGISTRY: &str = "index.docker.io";

#[derive(Debug, Default, Deserialize)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
}

#[derive(Debug, Default, Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

/// The credentials of `secrets` (in order) by location, for [`lookup`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Keyring {
    /// Locations as `host[/path]`, each with its credentials in the order found.
    entries: BTreeMap<String, Vec<AuthConfig>>,
}

impl Keyring {
    /// The keyring of `secrets`; secrets of other types and unreadable data are skipped.
    pub fn from_secrets(secrets: &[Secret]) -> Self {
        let mut keyring = Keyring::default();
        for secret in secrets {
            let data = secret.data.as_ref();
            let config = if let Some(json) = data.and_then(|d| d.get(".dockerconfigjson")) {
                serde_json::from_slice::<ConfigJson>(&json.0).map(|c| c.auths)
            } else if let Some(cfg) = data.and_then(|d| d.get(".dockercfg")) {
                serde_json::from_slice::<BTreeMap<String, Entry>>(&cfg.0)
            } else {
                continue;
            };
            let Ok(config) = config else {
                tracing::warn!(secret = ?secret.metadata.name, "image pull secret is not a docker config; skipped");
                continue;
            };
            for (location, entry) in config {
                let Some(key) = location_key(&location) else {
                    continue;
                };
                let host = key.split('/').next().unwrap_or_default().to_string();
                keyring.entries.entry(key).or_default().push(AuthConfig {
                    username: entry.username,
                    password: entry.password,
                    auth: entry.auth,
                    server_address: host,
                    ..Default::default()
                });
            }
        }
        keyring
    }

    /// Whether it holds no credentials at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credentials to try for `image`, most specific location first; empty when none
    /// match (the pull goes without).
    pub fn lookup(&self, image: &str) -> Vec<AuthConfig> {
        let repository = repository(image);
        // Reverse order puts `host/a/b` before `host/a` before `host`.
        let found: Vec<AuthConfig> = self
            .entries
            .iter()
            .rev()
            .filter(|(location, _)| matches(location, &repository))
            .flat_map(|(_, creds)| creds.iter().cloned())
            .collect();
        if !found.is_empty() {
            return found;
        }
        if is_docker_hub(&repository) {
            return self
                .entries
                .get(DEFAULT_REGISTRY)
                .cloned()
                .unwrap_or_default();
        }
        Vec::new()
    }
}

/// A config location as the keyring files it: the scheme dropped, `/v1/` and `/v2/` meaning
/// the host, `host[:port][/path]`.
fn location_key(location: &str) -> Option<String> {
    let rest = location
        .strip_prefix("https://")
        .or_else(|| location.strip_prefix("http://"))
        .unwrap_or(location);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    let path = path
        .strip_prefix("/v2/")
        .or_else(|| path.strip_prefix("/v1/"))
        .map(|p| format!("/{p}"))
        .unwrap_or_else(|| path.to_string());
    let path = path.trim_end_matches('/');
    Some(format!("{host}{path}"))
}

/// The image's repository, normalized as the kubelet parses image names: no tag or digest,
/// Docker Hub's `docker.io[/library]` spelled out.
pub fn repository(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rfind(':') {
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    };
    let first = name.split('/').next().unwrap_or_default();
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_domain {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

fn is_docker_hub(repository: &str) -> bool {
    let first = repository.split('/').next().unwrap_or_default();
    first == "docker.io" || !repository.contains('/') || !first.contains(['.', ':'])
}

/// Whether the location `glob` (`host[:port][/path]`, `*` in host labels) covers `target`:
/// same number of host labels each matching, the same port, and the glob's path a prefix of
/// the target's.
fn matches(glob: &str, target: &str) -> bool {
    let split = |s: &'_ str| -> (String, String) {
        match s.find('/') {
            Some(i) => (s[..i].to_string(), s[i..].to_string()),
            None => (s.to_string(), String::new()),
        }
    };
    let (glob_host, glob_path) = split(glob);
    let (target_host, target_path) = split(target);
    let port = |h: &str| -> (String, String) {
        match h.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), port.to_string()),
            None => (h.to_string(), String::new()),
        }
    };
    let (glob_name, glob_port) = port(&glob_host);
    let (target_name, target_port) = port(&target_host);
    if glob_port != target_port {
        return false;
    }
    let glob_labels: Vec<&str> = glob_name.split('.').collect();
    let target_labels: Vec<&str> = target_name.split('.').collect();
    if glob_labels.len() != target_labels.len() {
        return false;
    }
    if !glob_labels
        .iter()
        .zip(&target_labels)
        .all(|(g, t)| label_matches(g, t))
    {
        return false;
    }
    target_path.starts_with(&glob_path)
}

/// `*` matches any run of characters within one label.
fn label_matches(glob: &str, label: &str) -> bool {
    match glob.split_once('*') {
        None => glob == label,
        Some((prefix, rest)) => {
            let Some(tail) = label.strip_prefix(prefix) else {
                return false;
            };
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| label_matches(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn secret(key: &str, json: &str) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                key.to_string(),
                ByteString(json.as_bytes().to_vec()),
            )])),
            ..Default::default()
        }
    }

    fn users(auths: &[AuthConfig]) -> Vec<String> {
        auths
            .iter()
            .map(|a| {
                if a.auth.is_empty() {
                    a.username.clone()
                } else {
                    a.auth.clone()
                }
            })
            .collect()
    }

    #[test]
    fn locations_match_as_the_kubelet_keyring_matches_them() {
        let keyring = Keyring::from_secrets(&[
            secret(
                ".dockerconfigjson",
                r#"{"auths": {
                    "https://index.docker.io/v1/": {"username": "hub"},
                    "registry.example.com:5000": {"auth": "dXNlcjpwYXNz"},
                    "quay.io/team": {"username": "team"},
                    "quay.io": {"username": "quay"},
                    "*.gcr.io": {"username": "glob"}
                }}"#,
            ),
            secret(".dockercfg", r#"{"quay.io": {"username": "second"}}"#),
            secret("other", "{}"),
        ]);
        assert_eq!(users(&keyring.lookup("busybox")), ["hub"]);
        assert_eq!(users(&keyring.lookup("library/busybox:1.36")), ["hub"]);
        assert_eq!(
            users(&keyring.lookup("docker.io/me/app@sha256:00")),
            ["hub"]
        );
        assert_eq!(
            users(&keyring.lookup("registry.example.com:5000/app:1")),
            ["dXNlcjpwYXNz"]
        );
        assert!(
            keyring.lookup("registry.example.com/app").is_empty(),
            "the port must match"
        );
        assert!(
            keyring.lookup("registry.example.com:5001/app").is_empty(),
            "the port must match"
        );
        assert_eq!(
            users(&keyring.lookup("quay.io/team/app:1")),
            ["team", "quay", "second"],
            "most specific first, then each secret's in order"
        );
        assert_eq!(
            users(&keyring.lookup("quay.io/other/app")),
            ["quay", "second"]
        );
        assert_eq!(users(&keyring.lookup("eu.gcr.io/p/app")), ["glob"]);
        assert!(
            keyring.lookup("a.eu.gcr.io/p/app").is_empty(),
            "a glob is one label"
        );
        assert!(keyring.lookup("ghcr.io/x/y").is_empty());
        assert_eq!(
            keyring.lookup("registry.example.com:5000/app")[0].server_address,
            "registry.example.com:5000"
        );
    }

    #[test]
    fn images_are_normalized() {
        assert_eq!(repository("busybox"), "docker.io/library/busybox");
        assert_eq!(repository("busybox:1.36"), "docker.io/library/busybox");
        assert_eq!(repository("me/app"), "docker.io/me/app");
        assert_eq!(repository("localhost/app:1"), "localhost/app");
        assert_eq!(repository("127.0.0.1:5000/shell:1"), "127.0.0.1:5000/shell");
        assert_eq!(repository("host:5000/app@sha256:ab"), "host:5000/app");
    }

    #[test]
    fn bad_secrets_give_no_credentials() {
        let keyring = Keyring::from_secrets(&[secret(".dockerconfigjson", "not json")]);
        assert!(keyring.is_empty());
        assert!(keyring.lookup("busybox").is_empty());
    }
}

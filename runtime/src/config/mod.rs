//! The runtime's configuration file (TOML): registries, mirrors, credentials, CNI, log limits.
//!
//! ```toml
//! [registry]
//! insecure = ["127.0.0.1:5000"]          # reached over plain http
//! docker_config = "/root/.docker/config.json"
//!
//! [registry.mirrors."registry.k8s.io"]
//! endpoints = ["http://127.0.0.1:5000"]  # tried in order, then the registry itself
//!
//! [cni]
//! conf_dir = "/etc/cni/net.d"
//! bin_dirs = ["/opt/cni/bin"]
//! conf_template = "/etc/capstan/cni.conflist"  # rendered on UpdateRuntimeConfig's pod CIDR
//!
//! [logs]
//! max_size = "10Mi"  # bytes or a quantity; the live log file never grows beyond it
//! max_files = 5      # the live file included; at least 2
//! ```

mod logs;

pub use logs::{ByteSize, LogsConfig, parse_quantity};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Everything the runtime reads from its configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Registry access.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// Pod networking.
    #[serde(default)]
    pub cni: crate::network::CniConfig,
    /// Container log rotation.
    #[serde(default)]
    pub logs: LogsConfig,
}

/// How registries are reached.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registry hosts (`host` or `host:port`) spoken to over plain http.
    #[serde(default)]
    pub insecure: Vec<String>,
    /// Mirrors per registry host; `*` applies to every host without its own entry.
    #[serde(default)]
    pub mirrors: BTreeMap<String, MirrorConfig>,
    /// A docker `config.json` whose `auths` supply credentials a pull request does not carry.
    #[serde(default)]
    pub docker_config: Option<PathBuf>,
}

/// The endpoints serving one registry host.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Base URLs (`http://127.0.0.1:5000`, `https://mirror.example`), tried in order.
    pub endpoints: Vec<String>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("read runtime config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("runtime config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        message: String,
    },
}

impl RuntimeConfig {
    /// Loads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: RuntimeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.logs.validate()?;
        for (host, mirror) in &config.registry.mirrors {
            for endpoint in &mirror.endpoints {
                let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
                if !scheme_ok {
                    return Err(format!(
                        "registry.mirrors.\"{host}\".endpoints: {endpoint:?} must start with \
                         http:// or https://"
                    ));
                }
            }
        }
        Ok(config)
    }
}

impl RegistryConfig {
    /// Base URLs to try for registry `host`, in order: its mirrors, then the host itself.
    pub fn endpoints(&self, host: &str) -> Vec<String> {
        let mirrors = self
            .mirrors
            .get(host)
            .or_else(|| self.mirrors.get("*"))
            .map(|m| m.endpoints.clone())
            .unwrap_or_default();
        let upstream = match host {
            // Docker Hub's API lives on another host than its name.
            "docker.io" => "https://registry-1.docker.io".to_string(),
            _ if self.insecure.iter().any(|h| h == host) => format!("http://{host}"),
            _ => format!("https://{host}"),
        };
        let mut all: Vec<String> = mirrors
            .into_iter()
            .map(|e| e.trim_end_matches('/').to_string())
            .collect();
        if !all.contains(&upstream) {
            all.push(upstream);
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::RuntimeConfig;

    #[test]
    fn mirrors_come_before_the_registry_and_insecure_hosts_use_http() {
        let config = RuntimeConfig::parse(
            r#"
            [registry]
            insecure = ["10.0.0.1:5000"]
            [registry.mirrors."registry.k8s.io"]
            endpoints = ["http://127.0.0.1:5000/"]
            "#,
        )
        .unwrap();
        assert_eq!(
            config.registry.endpoints("registry.k8s.io"),
            ["http://127.0.0.1:5000", "https://registry.k8s.io"]
        );
        assert_eq!(
            config.registry.endpoints("10.0.0.1:5000"),
            ["http://10.0.0.1:5000"]
        );
        assert_eq!(
            config.registry.endpoints("docker.io"),
            ["https://registry-1.docker.io"]
        );
    }

    #[test]
    fn unknown_fields_and_bad_endpoints_are_named() {
        let err = RuntimeConfig::parse("[registry]\ninsecur = []\n").unwrap_err();
        assert!(err.contains("insecur"), "{err}");
        let err = RuntimeConfig::parse(
            "[registry.mirrors.\"docker.io\"]\nendpoints = [\"mirror:5000\"]\n",
        )
        .unwrap_err();
        assert!(
            err.contains("registry.mirrors.\"docker.io\".endpoints"),
            "{err}"
        );
    }

    #[test]
    fn log_limits_take_bytes_or_quantities_and_are_validated() {
        let config = RuntimeConfig::parse("[logs]\nmax_size = \"4Ki\"\nmax_files = 3\n").unwrap();
        assert_eq!(config.logs.rotation().max_size, 4096);
        assert_eq!(config.logs.rotation().max_files, 3);
        let config = RuntimeConfig::parse("[logs]\nmax_size = 4096\n").unwrap();
        assert_eq!(config.logs.rotation().max_size, 4096);
        assert_eq!(config.logs.rotation().max_files, 5, "default kept");
        assert_eq!(
            RuntimeConfig::default().logs.rotation(),
            crate::monitor::logs::Rotation::default()
        );
        let err = RuntimeConfig::parse("[logs]\nmax_files = 1\n").unwrap_err();
        assert!(err.contains("logs.max_files"), "{err}");
        let err = RuntimeConfig::parse("[logs]\nmax_size = 100\n").unwrap_err();
        assert!(err.contains("logs.max_size"), "{err}");
        let err = RuntimeConfig::parse("[logs]\nmax_size = \"10MB\"\n").unwrap_err();
        assert!(err.contains("logs.max_size"), "{err}");
        let err = RuntimeConfig::parse("[logs]\nmax_size = -1\n").unwrap_err();
        assert!(err.contains("logs.max_size"), "{err}");
    }

    #[test]
    fn cni_conf_template_is_optional() {
        let config = RuntimeConfig::parse("[cni]\nconf_template = \"/etc/t.conflist\"\n").unwrap();
        assert_eq!(
            config.cni.conf_template.as_deref(),
            Some(std::path::Path::new("/etc/t.conflist"))
        );
        assert!(RuntimeConfig::default().cni.conf_template.is_none());
    }
}

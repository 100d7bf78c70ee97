//! Pod networking through CNI: the runtime side of the spec. It finds the network's
//! configuration list, executes each plugin binary with the CNI_* environment and the config on
//! stdin, chains results, caches the ADD result for DEL, and reports plugin errors with their
//! code and message. Third-party plugins work the same as Capstan's own.

pub mod host_ports;

use std::path::{Path, PathBuf};

use capstan_cni::config::ConfList;
use capstan_cni::result::CniResult;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Where the network configuration and plugins are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CniConfig {
    /// Directory of network configs; the first `.conflist`, `.conf` or `.json` by name wins.
    #[serde(default = "default_conf_dir")]
    pub conf_dir: PathBuf,
    /// Directories searched for plugin executables, in order.
    #[serde(default = "default_bin_dirs")]
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: default_conf_dir(),
            bin_dirs: default_bin_dirs(),
        }
    }
}

fn default_conf_dir() -> PathBuf {
    PathBuf::from("/etc/cni/net.d")
}

fn default_bin_dirs() -> Vec<PathBuf> {
    vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
}

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No usable configuration.
    #[error("no CNI network configured: {0}")]
    NotConfigured(String),
    /// A plugin executable is missing.
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginMissing {
        /// Plugin type.
        plugin: String,
        /// Where it was looked for.
        dirs: String,
    },
    /// A plugin failed.
    #[error("CNI plugin {plugin} {command} failed (code {code}): {message}")]
    Plugin {
        /// Plugin type.
        plugin: String,
        /// ADD, DEL, ...
        command: String,
        /// The spec's error code (0 when the plugin printed none).
        code: u64,
        /// Its message and details.
        message: String,
    },
    /// A local file or process operation failed.
    #[error("{0}")]
    Io(String),
}

/// One pod's attachment to the network.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The sandbox ID (CNI_CONTAINERID).
    pub container_id: String,
    /// The pod's network namespace file.
    pub netns: PathBuf,
    /// Interface name inside the pod.
    pub ifname: String,
    /// Pod name, namespace and UID for CNI_ARGS.
    pub pod: (String, String, String),
}

/// Runs the configured network's plugins.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    config: CniConfig,
    cache_dir: PathBuf,
}

impl PodNetwork {
    /// A network using `config`, caching results under `cache_dir`.
    pub fn new(config: CniConfig, cache_dir: &Path) -> Self {
        PodNetwork {
            config,
            cache_dir: cache_dir.to_path_buf(),
        }
    }

    /// The network configuration in force: the first config file by name.
    pub fn load(&self) -> Result<(PathBuf, ConfList), NetworkError> {
        let dir = &self.config.conf_dir;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| NetworkError::NotConfigured(format!("{}: {e}", dir.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
            })
            .collect();
        files.sort();
        let path = files.into_iter().next().ok_or_else(|| {
            NetworkError::NotConfigured(format!("no config file in {}", dir.display()))
        })?;
        let bytes = std::fs::read(&path)
            .map_err(|e| NetworkError::NotConfigured(format!("{}: {e}", path.display())))?;
        let list = if path.extension().is_some_and(|e| e == "conflist") {
            ConfList::from_slice(&bytes)
        } else {
            single_plugin_list(&bytes)
        }
        .map_err(|e| NetworkError::NotConfigured(format!("{}: {}", path.display(), e.msg)))?;
        Ok((path, list))
    }

    /// Whether pods can be networked now: a config loads and its plugins exist.
    pub fn ready(&self) -> Result<(), NetworkError> {
        let (_, list) = self.load()?;
        for plugin in &list.plugins {
            self.plugin_path(plugin_type(plugin))?;
        }
        Ok(())
    }

    /// Runs ADD through the chain and caches the final result; returns it.
    pub async fn add(&self, attachment: &Attachment) -> Result<CniResult, NetworkError> {
        let (_, list) = self.load()?;
        let mut previous: Option<Value> = None;
        for index in 0..list.plugins.len() {
            let config = list
                .plugin_config(index, previous.as_ref())
                .ok_or_else(|| NetworkError::Io(format!("plugins[{index}] is not an object")))?;
            let output = self.exec("ADD", &config, attachment).await?;
            previous = Some(output);
        }
        let result_value = previous.unwrap_or_else(|| json!({ "cniVersion": list.cni_version }));
        let cache = json!({ "kind": "cniCacheV1", "config": list, "result": result_value });
        let path = self.cache_path(&list.name, attachment);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| NetworkError::Io(format!("{}: {e}", dir.display())))?;
        }
        std::fs::write(&path, cache.to_string())
            .map_err(|e| NetworkError::Io(format!("cache {}: {e}", path.display())))?;
        CniResult::from_value(&result_value).map_err(|e| NetworkError::Plugin {
            plugin: "(chain)".into(),
            command: "ADD".into(),
            code: e.code as u64,
            message: e.msg,
        })
    }

    /// Runs DEL through the chain in reverse with the cached result; succeeds when there is
    /// nothing to delete.
    pub async fn del(&self, attachment: &Attachment) -> Result<(), NetworkError> {
        let current = self.load();
        // The list the pod was added with, from the cache, wins over today's config.
        let (list, cached_result) = match &current {
            Ok((_, list)) => {
                let path = self.cache_path(&list.name, attachment);
                match std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                {
                    Some(cache) => {
                        let list = serde_json::from_value::<ConfList>(cache["config"].clone())
                            .unwrap_or_else(|_| list.clone());
                        (list, Some(cache["result"].clone()))
                    }
                    None => (list.clone(), None),
                }
            }
            Err(_) => return Ok(()),
        };
        for index in (0..list.plugins.len()).rev() {
            let config = list
                .plugin_config(index, cached_result.as_ref())
                .ok_or_else(|| NetworkError::Io(format!("plugins[{index}] is not an object")))?;
            self.exec("DEL", &config, attachment).await?;
        }
        let _ = std::fs::remove_file(self.cache_path(&list.name, attachment));
        Ok(())
    }

    fn cache_path(&self, network: &str, attachment: &Attachment) -> PathBuf {
        self.cache_dir.join("results").join(format!(
            "{network}-{}-{}",
            attachment.container_id, attachment.ifname
        ))
    }

    fn plugin_path(&self, plugin: &str) -> Result<PathBuf, NetworkError> {
        if plugin.is_empty() || plugin.contains('/') {
            return Err(NetworkError::NotConfigured(format!(
                "plugin type {plugin:?} is not a plain name"
            )));
        }
        self.config
            .bin_dirs
            .iter()
            .map(|dir| dir.join(plugin))
            .find(|path| path.is_file())
            .ok_or_else(|| NetworkError::PluginMissing {
                plugin: plugin.to_string(),
                dirs: self.search_path(),
            })
    }

    fn search_path(&self) -> String {
        let dirs: Vec<String> = self
            .config
            .bin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.join(":")
    }

    async fn exec(
        &self,
        command: &str,
        config: &Value,
        attachment: &Attachment,
    ) -> Result<Value, NetworkError> {
        let plugin = plugin_type(config).to_string();
        let path = self.plugin_path(&plugin)?;
        let (name, namespace, uid) = &attachment.pod;
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};\
             K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={uid}",
            attachment.container_id
        );
        let mut child = tokio::process::Command::new(&path)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &attachment.container_id)
            .env("CNI_NETNS", &attachment.netns)
            .env("CNI_IFNAME", &attachment.ifname)
            .env("CNI_ARGS", args)
            .env("CNI_PATH", self.search_path())
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| NetworkError::Io(format!("run {}: {e}", path.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(config.to_string().as_bytes())
                .await
                .map_err(|e| NetworkError::Io(format!("write config to {plugin}: {e}")))?;
        }
        let output = child
            .wait_with_output()
            .await
            .map_err(|e| NetworkError::Io(format!("wait for {plugin}: {e}")))?;
        let stdout: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        if !output.status.success() {
            let details = stdout["details"].as_str().unwrap_or_default();
            let mut message = stdout["msg"].as_str().unwrap_or_default().to_string();
            if !details.is_empty() {
                message = format!("{message}: {details}");
            }
            if message.is_empty() {
                message = String::from_utf8_lossy(&output.stderr).trim().to_string();
            }
            return Err(NetworkError::Plugin {
                plugin,
                command: command.into(),
                code: stdout["code"].as_u64().unwrap_or(0),
                message,
            });
        }
        tracing::debug!(%plugin, command, container = %attachment.container_id, "CNI plugin succeeded");
        Ok(stdout)
    }
}

fn plugin_type(config: &Value) -> &str {
    config.get("type").and_then(Value::as_str).unwrap_or("")
}

/// A single-plugin `.conf` as a one-plugin list.
fn single_plugin_list(bytes: &[u8]) -> Result<ConfList, capstan_cni::error::CniError> {
    let value: Value = capstan_cni::config::from_slice(bytes)?;
    let list = json!({
        "cniVersion": value.get("cniVersion").cloned().unwrap_or(json!("1.0.0")),
        "name": value.get("name").cloned().unwrap_or(json!("")),
        "plugins": [value],
    });
    ConfList::from_slice(list.to_string().as_bytes())
}

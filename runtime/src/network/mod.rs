//! Pod networking through CNI: the runtime side of the spec. It finds the network's
//! configuration list, refuses it unless every plugin's VERSION lists its cniVersion, executes
//! each plugin binary with the CNI_* environment and the config on stdin, chains results,
//! caches the ADD result for DEL and CHECK, asks STATUS for readiness, runs GC with the
//! attachments still in use, and renders the config from a template once the pod CIDR is
//! known. Third-party plugins work the same as Capstan's own.

mod cache;
mod exec;
pub mod host_ports;
pub mod template;
mod versions;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use capstan_cni::config::ConfList;
use capstan_cni::result::CniResult;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use exec::Invocation;
use versions::{CHECK_SINCE, STATUS_GC_SINCE, VersionCache};

/// The file UpdateRuntimeConfig renders `conf_template` into, in `conf_dir`.
pub const RENDERED_CONF: &str = "10-capstan.conflist";

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
    /// A conflist template rendered into `conf_dir` when UpdateRuntimeConfig brings the pod
    /// CIDR (see [`template`] for its placeholders).
    #[serde(default)]
    pub conf_template: Option<PathBuf>,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: default_conf_dir(),
            bin_dirs: default_bin_dirs(),
            conf_template: None,
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
    /// A plugin does not speak the config's spec version.
    #[error(
        "CNI plugin {plugin} ({path}) supports cniVersion {supported}, not {version} \
         as {config} requires",
        path = path.display(),
        supported = supported.join(", "),
        config = config.display()
    )]
    IncompatibleVersion {
        /// Plugin type.
        plugin: String,
        /// Its executable.
        path: PathBuf,
        /// What its VERSION listed.
        supported: Vec<String>,
        /// The config's cniVersion.
        version: String,
        /// The config file (or cache entry) naming it.
        config: PathBuf,
    },
    /// A pod CIDR is not a CIDR.
    #[error("{field}: {value:?} is not a CIDR: {reason}")]
    InvalidCidr {
        /// The request field.
        field: &'static str,
        /// The offending value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The config template cannot be used.
    #[error("conf_template {}: {message}", path.display())]
    Template {
        /// The template file.
        path: PathBuf,
        /// What is wrong with it or its rendering.
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
    versions: Arc<VersionCache>,
    /// The pod CIDRs last applied by UpdateRuntimeConfig, as given.
    pod_cidr: Arc<Mutex<Option<String>>>,
}

/// What CHECK concluded about one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Every plugin confirmed the attachment.
    Passed,
    /// CHECK was not run, for the reason given.
    Skipped(String),
}

/// What GC did.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Cached attachments no sandbox owns, deleted (container IDs).
    pub stale_deleted: Vec<String>,
    /// Why the plugins' GC did not run, if it did not.
    pub plugins_skipped: Option<String>,
    /// Problems met on the way; GC goes on past each.
    pub errors: Vec<String>,
}

/// What UpdateRuntimeConfig changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodCidrUpdate {
    /// No CIDR given, or the same as before.
    Unchanged,
    /// Recorded; there is no template to render.
    Recorded,
    /// The template was rendered into this file.
    Rendered(PathBuf),
}

impl PodNetwork {
    /// A network using `config`, caching results under `cache_dir`.
    pub fn new(config: CniConfig, cache_dir: &Path) -> Self {
        PodNetwork {
            config,
            cache_dir: cache_dir.to_path_buf(),
            versions: Arc::default(),
            pod_cidr: Arc::default(),
        }
    }

    /// The network configuration in force: the first config file by name.
    pub fn load(&self) -> Result<(PathBuf, ConfList), NetworkError> {
        let dir = &self.config.conf_dir;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| self.not_configured(format!("{}: {e}", dir.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "conflist" || e == "conf" || e == "json")
            })
            .collect();
        files.sort();
        let path = files
            .into_iter()
            .next()
            .ok_or_else(|| self.not_configured(format!("no config file in {}", dir.display())))?;
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

    /// A missing config, saying what will provide it when a template is configured.
    fn not_configured(&self, problem: String) -> NetworkError {
        match &self.config.conf_template {
            Some(template) => NetworkError::NotConfigured(format!(
                "{problem}; conf_template {} is rendered once UpdateRuntimeConfig sets the pod CIDR",
                template.display()
            )),
            None => NetworkError::NotConfigured(problem),
        }
    }

    /// Whether pods can be networked now: a config loads, every plugin exists and lists its
    /// cniVersion, and (from spec 1.1.0 on) every plugin's STATUS succeeds.
    pub async fn ready(&self) -> Result<(), NetworkError> {
        let (file, list) = self.load()?;
        self.ensure_versions(&file, &list).await?;
        if !versions::has(&list.cni_version, STATUS_GC_SINCE) {
            return Ok(());
        }
        for index in 0..list.plugins.len() {
            let config = plugin_config(&list, index, None)?;
            self.run("STATUS", &config, None).await?;
        }
        Ok(())
    }

    /// Refuses `list` (from `file`) unless each of its plugins, IPAM delegates included, lists
    /// the list's cniVersion in its VERSION answer.
    async fn ensure_versions(&self, file: &Path, list: &ConfList) -> Result<(), NetworkError> {
        let mut types: Vec<&str> = Vec::new();
        for plugin in &list.plugins {
            let ipam = plugin
                .get("ipam")
                .and_then(|i| i.get("type"))
                .and_then(Value::as_str);
            for name in std::iter::once(plugin_type(plugin)).chain(ipam) {
                if !types.contains(&name) {
                    types.push(name);
                }
            }
        }
        let cni_path = self.search_path();
        let checks = types.into_iter().map(|plugin| {
            let cni_path = &cni_path;
            async move {
                let path = self.plugin_path(plugin)?;
                let supported = self
                    .versions
                    .supported(plugin, &path, &list.cni_version, cni_path)
                    .await?;
                if versions::lists(&supported, &list.cni_version) {
                    Ok(())
                } else {
                    Err(NetworkError::IncompatibleVersion {
                        plugin: plugin.to_string(),
                        path,
                        supported: supported.to_vec(),
                        version: list.cni_version.clone(),
                        config: file.to_path_buf(),
                    })
                }
            }
        });
        // All asked at once (a cold cache costs one exec's time, not one per plugin), but the
        // first failure in list order is the one reported, so the message is stable.
        futures::future::join_all(checks)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
    }

    /// Runs ADD through the chain and caches the final result; returns it.
    pub async fn add(&self, attachment: &Attachment) -> Result<CniResult, NetworkError> {
        let (file, list) = self.load()?;
        let started = std::time::Instant::now();
        self.ensure_versions(&file, &list).await?;
        tracing::debug!(
            container = %attachment.container_id,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "CNI plugin versions checked"
        );
        // Recorded before the chain runs, with no result yet: if the runtime dies half-way
        // through ADD, no sandbox record names the attachment, and this entry is what lets the
        // start-up GC run DEL for it (whatever the list's version) so no address leaks.
        let path = cache::path(&self.cache_dir, &list.name, attachment);
        cache::write(
            &path,
            &cache::Entry::new(attachment, list.clone(), Value::Null),
        )?;
        let mut previous: Option<Value> = None;
        for index in 0..list.plugins.len() {
            let config = plugin_config(&list, index, previous.as_ref())?;
            let output = self.run("ADD", &config, Some(attachment)).await?;
            previous = Some(output);
        }
        let result_value = previous.unwrap_or_else(|| json!({ "cniVersion": list.cni_version }));
        let result = CniResult::from_value(&result_value).map_err(|e| NetworkError::Plugin {
            plugin: "(chain)".into(),
            command: "ADD".into(),
            code: e.code as u64,
            message: e.msg,
        });
        cache::write(&path, &cache::Entry::new(attachment, list, result_value))?;
        result
    }

    /// Runs DEL through the chain in reverse with the cached result; succeeds when there is
    /// nothing to delete.
    pub async fn del(&self, attachment: &Attachment) -> Result<(), NetworkError> {
        // The list the pod was added with, from the cache, wins over today's config.
        let (list, prev_result, cached) = match cache::find(&self.cache_dir, attachment) {
            Some((path, entry)) => (entry.config, Some(entry.result), Some(path)),
            None => match self.load() {
                Ok((_, list)) => (list, None, None),
                Err(_) => return Ok(()),
            },
        };
        self.del_chain(&list, prev_result.as_ref(), attachment)
            .await?;
        if let Some(path) = cached {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    async fn del_chain(
        &self,
        list: &ConfList,
        prev_result: Option<&Value>,
        attachment: &Attachment,
    ) -> Result<(), NetworkError> {
        // An entry written before ADD finished has no result to pass on.
        let prev_result = prev_result.filter(|result| !result.is_null());
        for index in (0..list.plugins.len()).rev() {
            let config = plugin_config(list, index, prev_result)?;
            self.run("DEL", &config, Some(attachment)).await?;
        }
        Ok(())
    }

    /// The cached ADD result of `attachment` (the last plugin's output), if it was added.
    pub fn cached_result(&self, attachment: &Attachment) -> Option<Value> {
        cache::find(&self.cache_dir, attachment)
            .map(|(_, entry)| entry.result)
            .filter(|result| !result.is_null())
    }

    /// Runs CHECK through the chain with the cached ADD result as prevResult, when the list
    /// the pod was added with allows it (cniVersion 0.4.0 or later, no `disableCheck`).
    pub async fn check(&self, attachment: &Attachment) -> Result<CheckOutcome, NetworkError> {
        let Some((file, entry)) = cache::find(&self.cache_dir, attachment) else {
            return Ok(CheckOutcome::Skipped("no cached ADD result".into()));
        };
        let list = &entry.config;
        if entry.result.is_null() {
            return Ok(CheckOutcome::Skipped("ADD did not finish".into()));
        }
        if !versions::has(&list.cni_version, CHECK_SINCE) {
            return Ok(CheckOutcome::Skipped(format!(
                "cniVersion {} predates CHECK",
                list.cni_version
            )));
        }
        if list.disable_check {
            return Ok(CheckOutcome::Skipped("the list sets disableCheck".into()));
        }
        self.ensure_versions(&file, list).await?;
        for index in 0..list.plugins.len() {
            let config = plugin_config(list, index, Some(&entry.result))?;
            self.run("CHECK", &config, Some(attachment)).await?;
        }
        Ok(CheckOutcome::Passed)
    }

    /// Releases what attachments outside `valid` still hold: cached attachments get a DEL
    /// (and lose their cache entry), then, for a list of cniVersion 1.1.0 or later without
    /// `disableGC`, each plugin runs GC with `cni.dev/valid-attachments`.
    pub async fn gc(&self, valid: &[Attachment]) -> GcReport {
        let keep: HashSet<(String, String)> = valid
            .iter()
            .map(|a| (a.container_id.clone(), a.ifname.clone()))
            .collect();
        let mut report = GcReport::default();
        for (path, entry) in cache::all(&self.cache_dir) {
            let key = entry.as_ref().and_then(|e| e.key(&path));
            if key.as_ref().is_some_and(|k| keep.contains(k)) {
                continue;
            }
            if let (Some(entry), Some((container_id, ifname))) = (entry, key) {
                let stale = Attachment {
                    container_id: container_id.clone(),
                    netns: entry.netns.clone(),
                    ifname,
                    pod: Default::default(),
                };
                match self
                    .del_chain(&entry.config, Some(&entry.result), &stale)
                    .await
                {
                    Ok(()) => report.stale_deleted.push(container_id),
                    Err(e) => report
                        .errors
                        .push(format!("DEL of stale attachment {container_id}: {e}")),
                }
            }
            // An entry no sandbox owns is of no further use, whether or not its DEL worked:
            // the plugins' GC below releases what DEL could not.
            if let Err(e) = std::fs::remove_file(&path) {
                report
                    .errors
                    .push(format!("remove cache {}: {e}", path.display()));
            }
        }
        if let Err(skipped) = self.gc_plugins(valid, &mut report.errors).await {
            report.plugins_skipped = Some(skipped);
        }
        report
    }

    /// The plugins' GC; the reason when it is not run.
    async fn gc_plugins(
        &self,
        valid: &[Attachment],
        errors: &mut Vec<String>,
    ) -> Result<(), String> {
        let (file, list) = self.load().map_err(|e| e.to_string())?;
        if !versions::has(&list.cni_version, STATUS_GC_SINCE) {
            return Err(format!("cniVersion {} predates GC", list.cni_version));
        }
        if list.disable_gc {
            return Err("the list sets disableGC".into());
        }
        self.ensure_versions(&file, &list)
            .await
            .map_err(|e| e.to_string())?;
        let attachments: Vec<Value> = valid
            .iter()
            .map(|a| json!({ "containerID": a.container_id, "ifname": a.ifname }))
            .collect();
        for index in 0..list.plugins.len() {
            let mut config = plugin_config(&list, index, None).map_err(|e| e.to_string())?;
            if let Some(object) = config.as_object_mut() {
                object.insert(
                    "cni.dev/valid-attachments".into(),
                    Value::from(attachments.clone()),
                );
            }
            if let Err(e) = self.run("GC", &config, None).await {
                errors.push(e.to_string());
            }
        }
        Ok(())
    }

    /// Applies UpdateRuntimeConfig's pod CIDRs (comma-separated): validates them and, with a
    /// `conf_template`, renders it into `conf_dir`. Nothing is recorded unless it all worked.
    pub fn update_pod_cidr(&self, value: &str) -> Result<PodCidrUpdate, NetworkError> {
        let cidrs = template::parse_pod_cidrs(value)?;
        if cidrs.is_empty() {
            return Ok(PodCidrUpdate::Unchanged);
        }
        let value = value.trim().to_string();
        let mut applied = self
            .pod_cidr
            .lock()
            .map_err(|_| NetworkError::Io("the pod CIDR lock is poisoned".into()))?;
        if applied.as_deref() == Some(value.as_str()) {
            return Ok(PodCidrUpdate::Unchanged);
        }
        let Some(template_path) = &self.config.conf_template else {
            *applied = Some(value);
            return Ok(PodCidrUpdate::Recorded);
        };
        let template_error = |message: String| NetworkError::Template {
            path: template_path.clone(),
            message,
        };
        let text = std::fs::read_to_string(template_path)
            .map_err(|e| template_error(format!("cannot read it: {e}")))?;
        let rendered = template::render(&text, &cidrs);
        ConfList::from_slice(rendered.as_bytes()).map_err(|e| {
            template_error(format!("the rendered config is not a conflist: {}", e.msg))
        })?;
        let target = self.config.conf_dir.join(RENDERED_CONF);
        if std::fs::read_to_string(&target).ok().as_deref() != Some(rendered.as_str()) {
            write_atomically(&target, rendered.as_bytes())?;
        }
        *applied = Some(value);
        Ok(PodCidrUpdate::Rendered(target))
    }

    /// Runs `command` of the plugin `config` names.
    async fn run(
        &self,
        command: &str,
        config: &Value,
        attachment: Option<&Attachment>,
    ) -> Result<Value, NetworkError> {
        let plugin = plugin_type(config);
        let path = self.plugin_path(plugin)?;
        exec::run(Invocation {
            command,
            plugin,
            path: &path,
            stdin: config,
            attachment,
            cni_path: &self.search_path(),
        })
        .await
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
}

/// The config plugin `index` of `list` gets.
fn plugin_config(
    list: &ConfList,
    index: usize,
    prev_result: Option<&Value>,
) -> Result<Value, NetworkError> {
    list.plugin_config(index, prev_result)
        .ok_or_else(|| NetworkError::NotConfigured(format!("plugins[{index}] is not an object")))
}

/// Writes `path` through a temporary file and a rename, so the runtime never loads half a
/// config.
fn write_atomically(path: &Path, data: &[u8]) -> Result<(), NetworkError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| NetworkError::Io(format!("create {}: {e}", dir.display())))?;
    // A name the loader skips (no .conflist extension) while it is incomplete.
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, data)
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| NetworkError::Io(format!("write {}: {e}", path.display())))
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
        "disableCheck": value.get("disableCheck").cloned().unwrap_or(json!(false)),
        "disableGC": value.get("disableGC").cloned().unwrap_or(json!(false)),
    });
    ConfList::from_slice(list.to_string().as_bytes())
}

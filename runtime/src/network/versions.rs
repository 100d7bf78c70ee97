//! VERSION: which spec versions a plugin binary speaks. The answer is cached per executable
//! path and modification time, because pod start latency must not pay one more exec per
//! plugin per pod, while an upgraded binary must be asked again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde_json::{Value, json};

use super::NetworkError;
use super::exec::{self, Invocation};

/// The spec versions of the commands the runtime uses beyond ADD and DEL.
pub(super) const CHECK_SINCE: (u32, u32, u32) = (0, 4, 0);
/// STATUS and GC exist from this version on.
pub(super) const STATUS_GC_SINCE: (u32, u32, u32) = (1, 1, 0);

/// One binary's answer, valid while its modification time is unchanged.
type Answer = (SystemTime, Arc<Vec<String>>);

/// VERSION answers by executable.
#[derive(Debug, Default)]
pub(super) struct VersionCache {
    entries: Mutex<HashMap<PathBuf, Answer>>,
}

impl VersionCache {
    /// The versions `path` (plugin type `plugin`) supports, asking it unless its current
    /// binary already answered.
    pub(super) async fn supported(
        &self,
        plugin: &str,
        path: &Path,
        cni_version: &str,
        cni_path: &str,
    ) -> Result<Arc<Vec<String>>, NetworkError> {
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| NetworkError::Io(format!("stat {}: {e}", path.display())))?;
        if let Some(versions) = self.cached(path, modified) {
            return Ok(versions);
        }
        let stdin = json!({ "cniVersion": cni_version });
        let reply = exec::run(Invocation {
            command: "VERSION",
            plugin,
            path,
            stdin: &stdin,
            attachment: None,
            cni_path,
        })
        .await?;
        let versions = Arc::new(parse_reply(&reply).map_err(|problem| NetworkError::Plugin {
            plugin: plugin.to_string(),
            command: "VERSION".into(),
            code: 0,
            message: problem,
        })?);
        tracing::debug!(%plugin, path = %path.display(), versions = ?versions, "CNI plugin versions");
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(path.to_path_buf(), (modified, Arc::clone(&versions)));
        }
        Ok(versions)
    }

    fn cached(&self, path: &Path, modified: SystemTime) -> Option<Arc<Vec<String>>> {
        let entries = self.entries.lock().ok()?;
        entries
            .get(path)
            .filter(|(when, _)| *when == modified)
            .map(|(_, versions)| Arc::clone(versions))
    }
}

/// The `supportedVersions` of a VERSION reply, naming what is wrong with a bad one.
pub(super) fn parse_reply(reply: &Value) -> Result<Vec<String>, String> {
    let list = reply
        .get("supportedVersions")
        .ok_or_else(|| format!("VERSION reply has no field `supportedVersions`: {reply}"))?
        .as_array()
        .ok_or_else(|| "VERSION reply field `supportedVersions` is not an array".to_string())?;
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().map(str::to_string).ok_or_else(|| {
                format!("VERSION reply field `supportedVersions[{i}]` is not a string")
            })
        })
        .collect()
}

/// Whether `supported` lists `version`, comparing numerically so "1.0" matches "1.0.0".
pub(super) fn lists(supported: &[String], version: &str) -> bool {
    let wanted = capstan_cni::version::parse(version);
    supported
        .iter()
        .any(|v| v == version || (wanted.is_some() && capstan_cni::version::parse(v) == wanted))
}

/// Whether a list of `version` has the command introduced in `since`.
pub(super) fn has(version: &str, since: (u32, u32, u32)) -> bool {
    capstan_cni::version::at_least(version, since)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_versions_are_read() {
        let reply = json!({"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]});
        assert_eq!(parse_reply(&reply).unwrap(), vec!["0.4.0", "1.0.0"]);
    }

    #[test]
    fn bad_replies_name_the_field() {
        let err = parse_reply(&json!({"cniVersion":"1.0.0"})).unwrap_err();
        assert!(err.contains("supportedVersions"), "{err}");
        let err = parse_reply(&json!({"supportedVersions":"1.0.0"})).unwrap_err();
        assert!(err.contains("not an array"), "{err}");
        let err = parse_reply(&json!({"supportedVersions":["1.0.0", 2]})).unwrap_err();
        assert!(err.contains("supportedVersions[1]"), "{err}");
        assert!(parse_reply(&Value::Null).is_err());
    }

    #[test]
    fn versions_match_numerically() {
        let supported = vec!["0.4.0".to_string(), "1.0.0".to_string()];
        assert!(lists(&supported, "1.0.0"));
        assert!(lists(&supported, "1.0"));
        assert!(!lists(&supported, "1.1.0"));
        assert!(!lists(&supported, "garbage"));
    }

    #[test]
    fn commands_follow_the_list_version() {
        assert!(has("0.4.0", CHECK_SINCE));
        assert!(!has("0.3.1", CHECK_SINCE));
        assert!(has("1.1.0", STATUS_GC_SINCE));
        assert!(!has("1.0.0", STATUS_GC_SINCE));
    }

    #[tokio::test]
    async fn answers_are_cached_per_binary() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("plugin");
        let count = dir.path().join("count");
        let script = format!(
            "#!/bin/sh\necho x >> {}\necho '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"1.0.0\"]}}'\n",
            count.display()
        );
        std::fs::write(&plugin, script).unwrap();
        std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let cache = VersionCache::default();
        let runs = || {
            std::fs::read_to_string(&count)
                .unwrap_or_default()
                .lines()
                .count()
        };
        for _ in 0..3 {
            let versions = cache.supported("p", &plugin, "1.0.0", "/").await.unwrap();
            assert_eq!(*versions, vec!["1.0.0".to_string()]);
        }
        assert_eq!(runs(), 1, "the second and third call must use the cache");
        // A new binary (new mtime) is asked again.
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&plugin)
            .unwrap()
            .set_modified(later)
            .unwrap();
        cache.supported("p", &plugin, "1.0.0", "/").await.unwrap();
        assert_eq!(runs(), 2);
    }
}

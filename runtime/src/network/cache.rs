//! The result cache: what ADD returned for each attachment and the list it ran, one JSON file
//! each. DEL, CHECK and GC need both after a restart or a config change.

use std::path::{Path, PathBuf};

use capstan_cni::config::ConfList;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Attachment, NetworkError};

/// One cached attachment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    /// Format marker, as libcni writes it.
    pub kind: String,
    /// CNI_CONTAINERID of the ADD (empty in entries written before it was recorded).
    #[serde(rename = "containerId", default)]
    pub container_id: String,
    /// CNI_IFNAME of the ADD.
    #[serde(rename = "ifName", default)]
    pub ifname: String,
    /// CNI_NETNS of the ADD.
    #[serde(rename = "netns", default)]
    pub netns: PathBuf,
    /// The list ADD ran.
    pub config: ConfList,
    /// The chain's final result.
    pub result: Value,
}

impl Entry {
    /// An entry for `attachment` added with `config`.
    pub(super) fn new(attachment: &Attachment, config: ConfList, result: Value) -> Self {
        Entry {
            kind: "cniCacheV1".into(),
            container_id: attachment.container_id.clone(),
            ifname: attachment.ifname.clone(),
            netns: attachment.netns.clone(),
            config,
            result,
        }
    }

    /// Container ID and interface of the entry at `path`; older entries only have them in
    /// their file name (`<network>-<containerID>-<ifname>`).
    pub(super) fn key(&self, path: &Path) -> Option<(String, String)> {
        if !self.container_id.is_empty() {
            return Some((self.container_id.clone(), self.ifname.clone()));
        }
        let name = path.file_name()?.to_str()?;
        let rest = name.strip_prefix(&format!("{}-", self.config.name))?;
        let (id, ifname) = rest.rsplit_once('-')?;
        Some((id.to_string(), ifname.to_string()))
    }
}

/// The directory of entries under the runtime's CNI cache directory.
pub(super) fn dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join("results")
}

/// Where the entry of `attachment` on network `network` lives.
pub(super) fn path(cache_dir: &Path, network: &str, attachment: &Attachment) -> PathBuf {
    dir(cache_dir).join(format!(
        "{network}-{}-{}",
        attachment.container_id, attachment.ifname
    ))
}

/// Writes `entry` atomically, so a crash never leaves half an entry for DEL to trip on.
pub(super) fn write(path: &Path, entry: &Entry) -> Result<(), NetworkError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| NetworkError::Io(format!("create {}: {e}", dir.display())))?;
    }
    let data = serde_json::to_vec(entry)
        .map_err(|e| NetworkError::Io(format!("serialise cache {}: {e}", path.display())))?;
    // Appended rather than replacing an extension: network names may contain dots.
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    std::fs::write(&temp, data)
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| NetworkError::Io(format!("write cache {}: {e}", path.display())))
}

/// The entry of `attachment` on whichever network it was added to (the config may have
/// changed since), with its path.
pub(super) fn find(cache_dir: &Path, attachment: &Attachment) -> Option<(PathBuf, Entry)> {
    let suffix = format!("-{}-{}", attachment.container_id, attachment.ifname);
    all(cache_dir)
        .into_iter()
        .filter(|(path, _)| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix))
        })
        .find_map(|(path, entry)| entry.map(|e| (path, e)))
}

/// Every entry file, with its content when it parses.
pub(super) fn all(cache_dir: &Path) -> Vec<(PathBuf, Option<Entry>)> {
    let Ok(entries) = std::fs::read_dir(dir(cache_dir)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_none_or(|e| e != "tmp"))
        .map(|path| {
            let entry = std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            (path, entry)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(name: &str) -> ConfList {
        ConfList::from_slice(
            format!(r#"{{"cniVersion":"1.1.0","name":"{name}","plugins":[{{"type":"x"}}]}}"#)
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn old_entries_are_keyed_by_file_name() {
        let entry = Entry {
            kind: "cniCacheV1".into(),
            container_id: String::new(),
            ifname: String::new(),
            netns: PathBuf::new(),
            config: list("my-net"),
            result: Value::Null,
        };
        let key = entry.key(Path::new("/c/results/my-net-abc123-eth0"));
        assert_eq!(key, Some(("abc123".into(), "eth0".into())));
    }

    #[test]
    fn entries_are_found_whatever_their_network() {
        let dir = tempfile::tempdir().unwrap();
        let attachment = Attachment {
            container_id: "abc".into(),
            netns: "/run/x".into(),
            ifname: "eth0".into(),
            pod: Default::default(),
        };
        let path = path(dir.path(), "old-net", &attachment);
        write(
            &path,
            &Entry::new(&attachment, list("old-net"), Value::Null),
        )
        .unwrap();
        let (found, entry) = find(dir.path(), &attachment).unwrap();
        assert_eq!(found, path);
        assert_eq!(entry.key(&found), Some(("abc".into(), "eth0".into())));
        let other = Attachment {
            container_id: "abcd".into(),
            ..attachment
        };
        assert!(find(dir.path(), &other).is_none());
    }
}

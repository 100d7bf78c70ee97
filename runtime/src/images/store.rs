//! Image records: what each pulled image is made of and the names it goes by, one JSON file per
//! image under `images/`, written atomically so a crash never leaves half a record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{ImageError, Result};
use super::reference::{Reference, validate_digest};

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the compressed blob.
    pub digest: String,
    /// Digest of the uncompressed tar (the snapshot's key).
    pub diff_id: String,
    /// The blob's media type.
    pub media_type: String,
    /// The blob's size.
    pub size: u64,
}

/// A local image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image ID: the config digest.
    pub id: String,
    /// `name:tag` references.
    pub repo_tags: Vec<String>,
    /// `name@digest` references.
    pub repo_digests: Vec<String>,
    /// Digest of the platform manifest.
    pub manifest_digest: String,
    /// Every blob the image needs kept: index, manifest, config and layers.
    pub blobs: Vec<String>,
    /// Layers, lowest first.
    pub layers: Vec<LayerRecord>,
    /// Bytes of content (config, manifest, compressed layers).
    pub size: u64,
    /// The config's `User`.
    pub user: String,
    /// Kept by image garbage collection whatever its use.
    #[serde(default)]
    pub pinned: bool,
}

/// Every local image, in memory and on disk.
#[derive(Debug)]
pub struct ImageStore {
    dir: PathBuf,
    images: BTreeMap<String, ImageRecord>,
    /// The records directory's mtime when loaded: another process (`capstan images import`)
    /// changing it makes this copy stale.
    loaded_at: Option<std::time::SystemTime>,
}

impl ImageStore {
    /// Loads the records under `dir`; an unreadable record is logged and skipped (its content
    /// is then collected as garbage).
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(ImageError::io("create", dir))?;
        let loaded_at = dir_mtime(dir);
        let mut images = BTreeMap::new();
        for entry in std::fs::read_dir(dir)
            .map_err(ImageError::io("list", dir))?
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|data| {
                    serde_json::from_slice::<ImageRecord>(&data).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(record) => {
                    images.insert(record.id.clone(), record);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping a broken image record")
                }
            }
        }
        Ok(ImageStore {
            dir: dir.to_path_buf(),
            images,
            loaded_at,
        })
    }

    /// Whether the records on disk changed since they were loaded.
    pub fn is_stale(&self) -> bool {
        dir_mtime(&self.dir) != self.loaded_at
    }

    /// The records directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds or merges `record`. Tags it takes over are removed from other images, and an image
    /// left with no name is dropped, as containerd does; returns the dropped IDs.
    pub fn put(&mut self, mut record: ImageRecord) -> Result<Vec<String>> {
        let mut dropped = Vec::new();
        let others: Vec<String> = self
            .images
            .keys()
            .filter(|id| **id != record.id)
            .cloned()
            .collect();
        for id in others {
            let Some(other) = self.images.get_mut(&id) else {
                continue;
            };
            let before = other.repo_tags.len();
            other
                .repo_tags
                .retain(|tag| !record.repo_tags.contains(tag));
            if other.repo_tags.len() == before {
                continue;
            }
            if other.repo_tags.is_empty() && other.repo_digests.is_empty() {
                self.remove(&id)?;
                dropped.push(id);
            } else {
                let other = other.clone();
                self.persist(&other)?;
            }
        }
        if let Some(existing) = self.images.get(&record.id) {
            for tag in &existing.repo_tags {
                if !record.repo_tags.contains(tag) {
                    record.repo_tags.push(tag.clone());
                }
            }
            for digest in &existing.repo_digests {
                if !record.repo_digests.contains(digest) {
                    record.repo_digests.push(digest.clone());
                }
            }
            record.pinned |= existing.pinned;
        }
        self.persist(&record)?;
        self.images.insert(record.id.clone(), record);
        Ok(dropped)
    }

    /// Finds an image by ID (full, bare hex, or a unique prefix of at least 6 hex digits), by
    /// `name:tag` or by `name@digest`, names normalised.
    pub fn resolve(&self, query: &str) -> Option<&ImageRecord> {
        let query = query.trim();
        if validate_digest(query).is_ok() {
            return self.images.get(query);
        }
        let hex_only = !query.is_empty() && query.bytes().all(|b| b.is_ascii_hexdigit());
        if hex_only && query.len() >= 6 {
            let prefix = format!("sha256:{query}");
            let mut matches = self.images.values().filter(|i| i.id.starts_with(&prefix));
            if let (Some(found), None) = (matches.next(), matches.next()) {
                return Some(found);
            }
        }
        let reference = Reference::parse(query).ok()?;
        match &reference.digest {
            Some(digest) => {
                let wanted = reference.with_digest(digest);
                self.images
                    .values()
                    .find(|i| i.repo_digests.contains(&wanted))
            }
            None => {
                let wanted = reference.tagged()?;
                self.images.values().find(|i| i.repo_tags.contains(&wanted))
            }
        }
    }

    /// Removes an image record.
    pub fn remove(&mut self, id: &str) -> Result<Option<ImageRecord>> {
        let removed = self.images.remove(id);
        if removed.is_some() {
            let path = self.record_path(id);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ImageError::io("remove image record", path)(e));
                }
                _ => {}
            }
        }
        Ok(removed)
    }

    /// Every image.
    pub fn list(&self) -> impl Iterator<Item = &ImageRecord> {
        self.images.values()
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", id.trim_start_matches("sha256:")))
    }

    fn persist(&self, record: &ImageRecord) -> Result<()> {
        let path = self.record_path(&record.id);
        let temp = path.with_extension("tmp");
        let data = serde_json::to_vec_pretty(record)
            .map_err(|e| ImageError::Malformed(format!("serialise image record: {e}")))?;
        std::fs::write(&temp, data).map_err(ImageError::io("write", &temp))?;
        std::fs::rename(&temp, &path).map_err(ImageError::io("commit image record", &path))
    }

    /// Notes that the directory's current state is this copy's own doing.
    pub fn mark_fresh(&mut self) {
        self.loaded_at = dir_mtime(&self.dir);
    }
}

fn dir_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(dir).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::{ImageRecord, ImageStore};

    fn record(id_char: char, tags: &[&str]) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{}", id_char.to_string().repeat(64)),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![],
            manifest_digest: String::new(),
            blobs: vec![],
            layers: vec![],
            size: 1,
            user: String::new(),
            pinned: false,
        }
    }

    #[test]
    fn a_moved_tag_drops_the_image_it_left_nameless() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = ImageStore::open(dir.path()).unwrap();
        store
            .put(record('a', &["docker.io/library/app:1"]))
            .unwrap();
        let dropped = store
            .put(record('b', &["docker.io/library/app:1"]))
            .unwrap();
        assert_eq!(dropped, vec![format!("sha256:{}", "a".repeat(64))]);
        assert_eq!(store.list().count(), 1);
        // Records survive a reload.
        let reloaded = ImageStore::open(dir.path()).unwrap();
        let found = reloaded.resolve("app:1").expect("resolve by short name");
        assert!(found.id.ends_with('b'));
        assert!(reloaded.resolve("bbbbbbbbbbbb").is_some(), "ID prefix");
        assert!(reloaded.resolve("app:2").is_none());
    }
}

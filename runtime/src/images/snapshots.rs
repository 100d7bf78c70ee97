//! Unpacked layers, one directory per diff ID under `snapshots/`, shared by every image and
//! container that uses the layer. A snapshot appears under its final name only when complete.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{ImageError, Result};
use super::media::Compression;
use super::reference::validate_digest;
use super::unpack::unpack_layer;

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);
const TEMP_PREFIX: &str = ".tmp-";

/// The snapshot directories.
#[derive(Debug)]
pub struct SnapshotStore {
    root: PathBuf,
}

impl SnapshotStore {
    /// Opens (creating) the store, removing half-unpacked layers a crash left behind.
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(ImageError::io("create", root))?;
        for entry in std::fs::read_dir(root)
            .map_err(ImageError::io("list", root))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                tracing::info!(path = %entry.path().display(), "removing an interrupted unpack");
                std::fs::remove_dir_all(entry.path())
                    .map_err(ImageError::io("remove", entry.path()))?;
            }
        }
        Ok(SnapshotStore {
            root: root.to_path_buf(),
        })
    }

    /// A handle on an existing store, without the start-up clean-up.
    pub(crate) fn at(root: &Path) -> Self {
        SnapshotStore {
            root: root.to_path_buf(),
        }
    }

    /// The directory of the layer with `diff_id`.
    pub fn path(&self, diff_id: &str) -> Result<PathBuf> {
        validate_digest(diff_id).map_err(ImageError::Malformed)?;
        Ok(self.root.join(&diff_id["sha256:".len()..]))
    }

    /// Whether the layer is unpacked.
    pub fn contains(&self, diff_id: &str) -> bool {
        self.path(diff_id).map(|p| p.is_dir()).unwrap_or(false)
    }

    /// Unpacks `blob` as layer `diff_id` unless it already is (blocking: call from a blocking
    /// thread).
    pub fn prepare(&self, diff_id: &str, blob: &Path, compression: Compression) -> Result<PathBuf> {
        let target = self.path(diff_id)?;
        if target.is_dir() {
            return Ok(target);
        }
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .root
            .join(format!("{TEMP_PREFIX}{}-{seq}", std::process::id()));
        std::fs::create_dir(&temp).map_err(ImageError::io("create", &temp))?;
        let outcome = unpack_layer(blob, compression, &temp, diff_id).and_then(|()| {
            match std::fs::rename(&temp, &target) {
                Ok(()) => Ok(()),
                // Another pull unpacked the same layer first.
                Err(_) if target.is_dir() => Ok(()),
                Err(e) => Err(ImageError::io("commit snapshot", &target)(e)),
            }
        });
        if temp.exists() {
            let _ = std::fs::remove_dir_all(&temp);
        }
        outcome.map(|()| target)
    }

    /// Removes a snapshot; a missing one is not an error.
    pub fn remove(&self, diff_id: &str) -> Result<()> {
        let path = self.path(diff_id)?;
        super::content::ignore_missing(std::fs::remove_dir_all(&path))
            .map_err(ImageError::io("remove snapshot", path))
    }

    /// Diff IDs of every snapshot.
    pub fn list(&self) -> Vec<String> {
        super::content::digests_named_in(&self.root)
    }
}

//! The content store: blobs addressed by digest under `content/blobs/sha256/`, written through
//! `content/ingest/` and renamed into place only once their digest and size are verified.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::error::{ImageError, Result};
use super::reference::validate_digest;

/// Blobs on disk.
#[derive(Debug)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

static INGEST_SEQ: AtomicU64 = AtomicU64::new(0);

impl ContentStore {
    /// Opens (creating) the store under `root`, discarding ingests a crash left behind.
    pub fn open(root: &Path) -> Result<Self> {
        let blobs = root.join("blobs").join("sha256");
        let ingest = root.join("ingest");
        std::fs::create_dir_all(&blobs).map_err(ImageError::io("create", &blobs))?;
        if ingest.exists() {
            let stale = std::fs::read_dir(&ingest).map(|d| d.count()).unwrap_or(0);
            if stale > 0 {
                tracing::info!(count = stale, "removing interrupted downloads");
            }
            std::fs::remove_dir_all(&ingest).map_err(ImageError::io("clean", &ingest))?;
        }
        std::fs::create_dir_all(&ingest).map_err(ImageError::io("create", &ingest))?;
        Ok(ContentStore { blobs, ingest })
    }

    /// Where blob `digest` lives (whether or not it is present).
    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        validate_digest(digest).map_err(ImageError::Malformed)?;
        Ok(self.blobs.join(&digest["sha256:".len()..]))
    }

    /// Whether the blob is present.
    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// Reads a whole blob (manifests and configs: small).
    pub fn read(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.path(digest)?;
        std::fs::read(&path).map_err(ImageError::io("read blob", path))
    }

    /// Stores bytes already in memory after checking them against `digest`.
    pub fn put(&self, digest: &str, data: &[u8]) -> Result<()> {
        let actual = sha256_digest(data);
        if actual != digest {
            return Err(ImageError::Mismatch {
                what: "blob digest".into(),
                expected: digest.into(),
                actual,
            });
        }
        let target = self.path(digest)?;
        if target.is_file() {
            return Ok(());
        }
        let temp = self.ingest_path();
        std::fs::write(&temp, data).map_err(ImageError::io("write", &temp))?;
        std::fs::rename(&temp, &target).map_err(ImageError::io("commit blob", &target))
    }

    /// Streams a blob into the store, verifying size (when known) and digest before it becomes
    /// visible. Nothing is left behind when verification or the stream fails.
    pub async fn write_stream<S, B, E>(
        &self,
        digest: &str,
        expected_size: Option<u64>,
        mut chunks: S,
    ) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let target = self.path(digest)?;
        let temp = self.ingest_path();
        // Removes the partial file however this ends: error, or the future being dropped.
        let _cleanup = RemoveOnDrop(temp.clone());
        async {
            let mut file = tokio::fs::File::create(&temp)
                .await
                .map_err(ImageError::io("create", &temp))?;
            let mut hasher = Sha256::new();
            let mut written: u64 = 0;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|e| ImageError::Registry {
                    endpoint: digest.to_string(),
                    message: format!("download interrupted: {e}"),
                })?;
                let chunk = chunk.as_ref();
                written += chunk.len() as u64;
                if let Some(size) = expected_size
                    && written > size
                {
                    return Err(ImageError::Mismatch {
                        what: format!("size of {digest}"),
                        expected: size.to_string(),
                        actual: format!("more than {size}"),
                    });
                }
                hasher.update(chunk);
                file.write_all(chunk)
                    .await
                    .map_err(ImageError::io("write", &temp))?;
            }
            file.flush().await.map_err(ImageError::io("flush", &temp))?;
            if let Some(size) = expected_size
                && written != size
            {
                return Err(ImageError::Mismatch {
                    what: format!("size of {digest}"),
                    expected: size.to_string(),
                    actual: written.to_string(),
                });
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != digest {
                return Err(ImageError::Mismatch {
                    what: "blob digest".into(),
                    expected: digest.into(),
                    actual,
                });
            }
            tokio::fs::rename(&temp, &target)
                .await
                .map_err(ImageError::io("commit blob", &target))?;
            Ok(written)
        }
        .await
    }

    /// Removes a blob; a missing one is not an error.
    pub fn remove(&self, digest: &str) -> Result<()> {
        let path = self.path(digest)?;
        ignore_missing(std::fs::remove_file(&path)).map_err(ImageError::io("remove blob", path))
    }

    /// Digests of every stored blob.
    pub fn list(&self) -> Vec<String> {
        digests_named_in(&self.blobs)
    }

    fn ingest_path(&self) -> PathBuf {
        let seq = INGEST_SEQ.fetch_add(1, Ordering::Relaxed);
        self.ingest.join(format!("{}-{seq}", std::process::id()))
    }
}

/// Deletes a path when dropped, unless it was renamed away meanwhile (then nothing is there).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The OCI digest of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl ContentStore {
    /// Moves a file into the store after checking that it hashes to `digest` (same file
    /// system: a rename).
    pub fn adopt(&self, digest: &str, source: &Path) -> Result<()> {
        let mut file = std::fs::File::open(source).map_err(ImageError::io("open", source))?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(ImageError::io("read", source))?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            return Err(ImageError::Mismatch {
                what: format!("blob {}", source.display()),
                expected: digest.into(),
                actual,
            });
        }
        let target = self.path(digest)?;
        std::fs::rename(source, &target).map_err(ImageError::io("commit blob", &target))
    }
}

/// The `sha256:<hex>` digests that name the entries of `dir` (other names are ignored).
pub(crate) fn digests_named_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                .filter(|d| validate_digest(d).is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A removal of something already gone succeeds.
pub(crate) fn ignore_missing(outcome: std::io::Result<()>) -> std::io::Result<()> {
    match outcome {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

//! Deterministic image layers: a tar built in memory, gzip-compressed, with its diff ID (digest
//! of the uncompressed tar) and its blob digest.

use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::digest::sha256;
use crate::error::{Error, Result};

/// Fixed modification time of every entry, so the same content always gives the same digest.
const MTIME: u64 = 1_700_000_000;

/// A finished layer.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The gzip-compressed tar, as pushed.
    pub compressed: Vec<u8>,
    /// Digest of `compressed`.
    pub digest: String,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: String,
    /// The uncompressed tar.
    pub tar: Vec<u8>,
}

/// Builds a layer entry by entry.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    /// An empty layer.
    pub fn new() -> Self {
        LayerBuilder {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, mode: u32, owner: (u64, u64)) -> Result<&mut Self> {
        let mut header = header(tar::EntryType::Directory, mode, owner);
        self.append(&mut header, path, &[][..])
    }

    /// Adds a regular file.
    pub fn file(
        &mut self,
        path: &str,
        contents: &[u8],
        mode: u32,
        owner: (u64, u64),
    ) -> Result<&mut Self> {
        let mut header = header(tar::EntryType::Regular, mode, owner);
        header.set_size(contents.len() as u64);
        self.append(&mut header, path, contents)
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self> {
        let mut header = header(tar::EntryType::Symlink, 0o777, (0, 0));
        self.tar
            .append_link(&mut header, path, target)
            .map_err(|e| Error::Image(format!("add symlink {path}: {e}")))?;
        Ok(self)
    }

    /// Marks `path` deleted from the layers below (an OCI whiteout).
    pub fn whiteout(&mut self, path: &str) -> Result<&mut Self> {
        let path = Path::new(path);
        let name = path
            .file_name()
            .ok_or_else(|| Error::Image(format!("whiteout of {} has no name", path.display())))?;
        let marker = path.with_file_name(format!(".wh.{}", name.to_string_lossy()));
        self.file(&marker.to_string_lossy(), b"", 0o644, (0, 0))
    }

    /// Hides everything the layers below hold in directory `dir` (an opaque whiteout).
    pub fn opaque(&mut self, dir: &str) -> Result<&mut Self> {
        let marker = format!("{}/.wh..wh..opq", dir.trim_end_matches('/'));
        self.file(&marker, b"", 0o644, (0, 0))
    }

    /// Finishes the tar and compresses it.
    pub fn finish(self) -> Result<Layer> {
        let tar = self
            .tar
            .into_inner()
            .map_err(|e| Error::Image(format!("finish tar: {e}")))?;
        let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
        gzip.write_all(&tar)
            .map_err(|e| Error::Image(format!("gzip layer: {e}")))?;
        let compressed = gzip
            .finish()
            .map_err(|e| Error::Image(format!("gzip layer: {e}")))?;
        Ok(Layer {
            digest: sha256(&compressed),
            diff_id: sha256(&tar),
            compressed,
            tar,
        })
    }

    fn append(&mut self, header: &mut tar::Header, path: &str, data: &[u8]) -> Result<&mut Self> {
        self.tar
            .append_data(header, path, data)
            .map_err(|e| Error::Image(format!("add {path}: {e}")))?;
        Ok(self)
    }
}

fn header(kind: tar::EntryType, mode: u32, (uid, gid): (u64, u64)) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(uid);
    header.set_gid(gid);
    header.set_mtime(MTIME);
    header.set_size(0);
    header
}

#[cfg(test)]
mod tests {
    use super::LayerBuilder;

    fn sample() -> super::Layer {
        let mut layer = LayerBuilder::new();
        layer.dir("etc", 0o755, (0, 0)).unwrap();
        layer.file("etc/hostname", b"box\n", 0o644, (0, 0)).unwrap();
        layer.symlink("etc/alias", "hostname").unwrap();
        layer.whiteout("etc/old").unwrap();
        layer.opaque("var/cache").unwrap();
        layer.finish().unwrap()
    }

    #[test]
    fn same_content_same_digests() {
        let (a, b) = (sample(), sample());
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.diff_id, b.diff_id);
        assert_ne!(
            a.digest, a.diff_id,
            "digest must be of the compressed bytes"
        );
    }

    #[test]
    fn entries_and_whiteout_markers_are_in_the_tar() {
        let layer = sample();
        let mut archive = tar::Archive::new(&layer.tar[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "etc",
                "etc/hostname",
                "etc/alias",
                "etc/.wh.old",
                "var/cache/.wh..wh..opq"
            ]
        );
    }
}

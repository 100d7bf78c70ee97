//! Applies one layer blob to an empty directory in the form overlayfs reads as a lower layer:
//! OCI whiteouts become overlay whiteouts (a 0:0 character device) and opaque markers become
//! the `trusted.overlay.opaque` attribute. The uncompressed stream is hashed on the way through
//! and must match the layer's diff ID.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use sha2::{Digest, Sha256};

use super::error::{ImageError, Result};
use super::media::Compression;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Unpacks `blob` (compressed as declared) into `dest` and checks the diff ID.
pub fn unpack_layer(
    blob: &Path,
    compression: Compression,
    dest: &Path,
    diff_id: &str,
) -> Result<()> {
    let file = File::open(blob).map_err(ImageError::io("open layer", blob))?;
    let mut input = BufReader::new(file);
    let magic = {
        use std::io::BufRead;
        input
            .fill_buf()
            .map_err(ImageError::io("read layer", blob))?
            .to_vec()
    };
    let detected = sniff(&magic);
    if detected != compression
        && !(compression == Compression::None && detected == Compression::None)
    {
        return Err(ImageError::Malformed(format!(
            "layer {}: declared {compression:?} but the data is {detected:?}",
            blob.display()
        )));
    }
    let decoded: Box<dyn Read> = match compression {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            Box::new(ruzstd::decoding::StreamingDecoder::new(input).map_err(|e| {
                ImageError::Malformed(format!("layer {}: zstd: {e}", blob.display()))
            })?)
        }
    };
    let mut hashing = HashingReader {
        inner: decoded,
        hasher: Sha256::new(),
    };
    apply_tar(&mut hashing, dest, blob)?;
    // tar stops reading at the end-of-archive blocks; the diff ID covers every byte.
    std::io::copy(&mut hashing, &mut std::io::sink())
        .map_err(|e| ImageError::Malformed(format!("layer {}: {e}", blob.display())))?;
    let actual = format!("sha256:{}", hex::encode(hashing.hasher.finalize()));
    if actual != diff_id {
        return Err(ImageError::Mismatch {
            what: format!("diff ID of layer {}", blob.display()),
            expected: diff_id.into(),
            actual,
        });
    }
    Ok(())
}

fn sniff(magic: &[u8]) -> Compression {
    match magic {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        _ => Compression::None,
    }
}

fn apply_tar(input: &mut dyn Read, dest: &Path, blob: &Path) -> Result<()> {
    let malformed =
        |e: std::io::Error| ImageError::Malformed(format!("layer {}: {e}", blob.display()));
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        let path = entry.path().map_err(malformed)?.into_owned();
        let Some(relative) = confined(&path) else {
            tracing::warn!(layer = %blob.display(), path = %path.display(), "skipping an entry outside the layer root");
            continue;
        };
        let name = relative
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = dest.join(relative.parent().unwrap_or(Path::new("")));
        if name == OPAQUE_MARKER {
            std::fs::create_dir_all(&parent).map_err(ImageError::io("create", &parent))?;
            xattr::set(&parent, OPAQUE_XATTR, b"y")
                .map_err(ImageError::io("mark opaque", &parent))?;
        } else if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            std::fs::create_dir_all(&parent).map_err(ImageError::io("create", &parent))?;
            let target = parent.join(hidden);
            remove_any(&target)?;
            mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(|e| ImageError::io("create whiteout", &target)(e.into()))?;
        } else if !entry.unpack_in(dest).map_err(malformed)? {
            tracing::warn!(layer = %blob.display(), path = %path.display(), "skipping an entry that escapes the layer root");
        }
    }
    Ok(())
}

/// The entry's path with `.` removed, or `None` when it is absolute or climbs out with `..`.
fn confined(path: &Path) -> Option<PathBuf> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!clean.as_os_str().is_empty()).then_some(clean)
}

fn remove_any(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            std::fs::remove_dir_all(path).map_err(ImageError::io("remove", path))
        }
        Ok(_) => std::fs::remove_file(path).map_err(ImageError::io("remove", path)),
        Err(_) => Ok(()),
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::confined;
    use std::path::{Path, PathBuf};

    #[test]
    fn entries_cannot_escape_the_layer_root() {
        assert_eq!(
            confined(Path::new("./etc/passwd")),
            Some(PathBuf::from("etc/passwd"))
        );
        assert_eq!(confined(Path::new("../etc/passwd")), None);
        assert_eq!(confined(Path::new("/etc/passwd")), None);
        assert_eq!(confined(Path::new("a/../../b")), None);
        assert_eq!(confined(Path::new(".")), None);
    }
}

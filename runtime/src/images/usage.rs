//! Disk usage of the image store, as ImageFsInfo reports it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bytes and inodes used below a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsUsage {
    /// Bytes allocated on disk.
    pub bytes: u64,
    /// Files, directories and links.
    pub inodes: u64,
}

/// Walks `root` without following symlinks or crossing into other file systems; hard links are
/// counted once per link, as `du --count-links` does.
pub fn measure(root: &Path) -> FsUsage {
    let mut usage = FsUsage::default();
    let Ok(top) = std::fs::symlink_metadata(root) else {
        return usage;
    };
    let device = top.dev();
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            usage.inodes += 1;
            usage.bytes += meta.blocks() * 512;
            if meta.is_dir() && meta.dev() == device {
                pending.push(entry.path());
            }
        }
    }
    usage
}

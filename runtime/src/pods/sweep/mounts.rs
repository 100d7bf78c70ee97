//! Mounts below a directory, so that removing it never reaches into a mounted file system.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, umount2};

use crate::pods::mountinfo::unescape;

/// Mount points at or below `dir`, deepest first, from this process's mount table.
pub(super) fn mounted_below(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape(field)))
        .filter(|point| point.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// Detaches every mount at or below `dir`, deepest first, logging each. Returns whether
/// nothing is mounted there any more: only then may the directory be removed.
pub(super) fn unmount_below(dir: &Path) -> bool {
    for point in mounted_below(dir) {
        match umount2(&point, MntFlags::MNT_DETACH) {
            Ok(()) => tracing::info!(mount = %point.display(), "unmounted crash debris"),
            Err(e) => {
                tracing::warn!(mount = %point.display(), error = %e, "cannot unmount crash debris")
            }
        }
    }
    mounted_below(dir).is_empty()
}

//! Volume ownership for a pod's `securityContext.fsGroup`, as the kubelet's
//! SetVolumeOwnership applies it: everything in the volume belongs to the group, files gain
//! group read (and write, unless the volume is read-only), directories gain group access and the
//! setgid bit so files created later inherit the group.

use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, lchown};
use std::path::Path;

const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;
const EXEC_MASK: u32 = 0o110;
const SETGID: u32 = 0o2000;

fn change(path: &Path, gid: u32, read_only: bool) -> io::Result<()> {
    lchown(path, None, Some(gid))?;
    let meta = fs::symlink_metadata(path)?;
    // Symlinks have no permissions of their own.
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mut mask = if read_only { RO_MASK } else { RW_MASK };
    if meta.is_dir() {
        mask |= SETGID | EXEC_MASK;
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode | mask != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode | mask))?;
    }
    Ok(())
}

/// Gives `dir` and everything below it (symlinks not followed) to group `gid`.
pub fn apply_fs_group(dir: &Path, gid: u32, read_only: bool) -> io::Result<()> {
    change(dir, gid, read_only)?;
    if !fs::symlink_metadata(dir)?.is_dir() {
        return Ok(());
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            apply_fs_group(&path, gid, read_only)?;
        } else {
            change(&path, gid, read_only)?;
        }
    }
    Ok(())
}

//! Temporary mounts for root tests, unmounted and removed when the guard drops.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use tempfile::TempDir;

use crate::error::{Error, Result};

/// A mount on a fresh temporary directory.
#[derive(Debug)]
pub struct TempMount {
    dir: TempDir,
}

impl TempMount {
    /// Mounts a tmpfs of `size_bytes`.
    pub fn tmpfs(size_bytes: u64) -> Result<Self> {
        let dir = mount_point()?;
        let options = format!("size={size_bytes},mode=0755");
        mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(Error::sys(format!(
            "mount tmpfs on {}",
            dir.path().display()
        )))?;
        Ok(TempMount { dir })
    }

    /// Bind-mounts `source`, read-only when asked (which takes a second remount on Linux).
    pub fn bind(source: &Path, read_only: bool) -> Result<Self> {
        let dir = mount_point()?;
        let what = format!("bind {} on {}", source.display(), dir.path().display());
        mount(
            Some(source),
            dir.path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(Error::sys(what.clone()))?;
        let mounted = TempMount { dir };
        if read_only {
            mount(
                None::<&str>,
                mounted.path(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(Error::sys(format!("{what} read-only")))?;
        }
        Ok(mounted)
    }

    /// Mounts a read-only overlay of `lowers` (uppermost first), as a container's image layers
    /// would be stacked.
    pub fn overlay(lowers: &[&Path]) -> Result<Self> {
        let dir = mount_point()?;
        let joined: Vec<String> = lowers.iter().map(|p| p.display().to_string()).collect();
        let options = format!("lowerdir={}", joined.join(":"));
        mount(
            Some("overlay"),
            dir.path(),
            Some("overlay"),
            MsFlags::MS_RDONLY,
            Some(options.as_str()),
        )
        .map_err(Error::sys(format!(
            "mount overlay on {}",
            dir.path().display()
        )))?;
        Ok(TempMount { dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        // Detach so a process still using it cannot keep the test's mount table dirty; the
        // TempDir field then removes the empty directory.
        match umount2(self.dir.path(), MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) => {}
            Err(e) => eprintln!(
                "capstan-testkit: leaked mount {}: {e}",
                self.dir.path().display()
            ),
        }
    }
}

fn mount_point() -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix("capstan-mnt-")
        .tempdir()
        .map_err(Error::io("create a mount point in", std::env::temp_dir()))
}

/// Mount points currently in this process's mount namespace that lie at or below `prefix`.
pub fn mounted_under(prefix: &Path) -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    table
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(unescape_mount_path)
        .filter(|path| path.starts_with(prefix))
        .collect()
}

/// /proc/self/mounts escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(field: &str) -> PathBuf {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(pos) = rest.find('\\') {
        out.push_str(&rest[..pos]);
        let code = rest
            .get(pos + 1..pos + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[pos + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    PathBuf::from(out)
}

#[cfg(test)]
mod tests {
    use super::unescape_mount_path;
    use std::path::PathBuf;

    #[test]
    fn octal_escapes_are_decoded() {
        assert_eq!(
            unescape_mount_path(r"/tmp/a\040b\011c"),
            PathBuf::from("/tmp/a b\tc")
        );
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
    }
}

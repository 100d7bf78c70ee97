//! Running code inside a container's network namespace.
//!
//! Work runs on a short-lived thread that joins the namespace and then exits, so the calling
//! thread never changes namespace and there is no "switch back" step that could fail and leave
//! the plugin configuring the wrong namespace.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use crate::error::{CniError, ErrorCode};

/// An open handle on a network namespace (e.g. `/run/netns/NAME` or `/proc/PID/ns/net`).
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens the namespace at `path`; a missing path is "container unknown" (code 3).
    pub fn open(path: &Path) -> Result<Self, CniError> {
        let file = File::open(path).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorCode::UnknownContainer
            } else {
                ErrorCode::InvalidEnvironment
            };
            CniError::new(
                code,
                format!("CNI_NETNS {}: cannot open the namespace", path.display()),
            )
            .with_details(e)
        })?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open namespace file (e.g. to move a link into it by fd).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Runs `f` on a thread inside this namespace and returns its output.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, CniError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                        CniError::internal(format!(
                            "cannot enter network namespace {}",
                            self.path.display()
                        ))
                        .with_details(e)
                    })?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(CniError::internal(format!(
                        "worker thread in namespace {} panicked",
                        self.path.display()
                    )))
                })
        })
    }
}

/// Writes a sysctl in the namespace of the calling thread; `key` is slash-separated
/// (`net/ipv4/ip_forward`) because interface names may contain dots.
pub fn write_sysctl(key: &str, value: &str) -> Result<(), CniError> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).map_err(|e| CniError::io(format!("cannot set sysctl {key}"), e))
}

/// Reads a slash-separated sysctl in the namespace of the calling thread.
pub fn read_sysctl(key: &str) -> Result<String, CniError> {
    let path = format!("/proc/sys/{key}");
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| CniError::io(format!("cannot read sysctl {key}"), e))
}

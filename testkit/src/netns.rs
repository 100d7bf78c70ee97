//! Network namespaces for root tests: uniquely named, pinned under `/run/netns` (so `ip netns`
//! sees them too) and removed when the guard drops, also while a failing test unwinds.

use std::fs::{File, OpenOptions};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::error::{Error, Result};
use crate::names::unique;

/// The directory iproute2 uses for named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// A named network namespace that exists as long as this guard does.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    path: PathBuf,
}

impl NetNs {
    /// Creates a fresh network namespace named `<prefix>-<unique suffix>` (at most 15 bytes, so
    /// the name also fits where an interface name must).
    pub fn new(prefix: &str) -> Result<Self> {
        std::fs::create_dir_all(NETNS_DIR).map_err(Error::io("create", NETNS_DIR))?;
        let name = unique(prefix, 15);
        let path = Path::new(NETNS_DIR).join(&name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .map_err(Error::io("create", &path))?;
        // From here on Drop removes the file, whether or not the mount below succeeds.
        let netns = NetNs { name, path };
        let target = netns.path.clone();
        // unshare(CLONE_NEWNET) moves only the calling thread, so a short-lived thread creates
        // the namespace and the bind mount keeps it alive after the thread ends.
        std::thread::spawn(move || -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(Error::sys("unshare(CLONE_NEWNET)"))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(Error::sys(format!(
                "bind-mount netns on {}",
                target.display()
            )))
        })
        .join()
        .map_err(|_| Error::Command("the netns creator thread panicked".into()))??;
        Ok(netns)
    }

    /// The namespace's name, as `ip netns` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pinned namespace file, usable as CNI_NETNS.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A command that runs inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        let ns: std::result::Result<OwnedFd, i32> = File::open(&self.path)
            .map(OwnedFd::from)
            .map_err(|e| e.raw_os_error().unwrap_or(Errno::ENOENT as i32));
        // SAFETY: the closure only calls setns(2), which is async-signal-safe, on a descriptor
        // opened before the fork.
        unsafe {
            command.pre_exec(move || match &ns {
                Ok(fd) => setns(fd, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from),
                Err(code) => Err(std::io::Error::from_raw_os_error(*code)),
            });
        }
        command
    }

    /// Runs `work` on a thread that has entered this namespace, and returns its result.
    pub fn run<T: Send>(&self, work: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(&self.path).map_err(Error::io("open", &self.path))?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(&file, CloneFlags::CLONE_NEWNET).map_err(Error::sys("setns"))?;
                    Ok(work())
                })
                .join()
                .map_err(|_| Error::Command("work inside the netns panicked".into()))?
        })
    }

    /// Brings the namespace's loopback interface up.
    pub fn loopback_up(&self) -> Result<()> {
        let status = self
            .command("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .map_err(|e| Error::Command(format!("run ip (iproute2): {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::Command(format!(
                "ip link set lo up in {} failed: {status}",
                self.name
            )))
        }
    }

    /// Removes the namespace now and reports a failure instead of only logging it.
    pub fn remove(mut self) -> Result<()> {
        let result = self.release();
        self.path = PathBuf::new();
        result
    }

    fn release(&self) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            return Ok(());
        }
        match umount2(&self.path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(Error::sys(format!("unmount {}", self.path.display()))(e)),
        }
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove", &self.path)(e))
            }
            _ => Ok(()),
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("capstan-testkit: leaked netns {}: {e}", self.name);
        }
    }
}

/// Names of the namespaces currently pinned under [`NETNS_DIR`].
pub fn list() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

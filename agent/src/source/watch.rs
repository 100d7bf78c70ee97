//! An inotify watch on one directory, awaitable on tokio. It only says "something changed":
//! the caller rescans the directory, which is simpler and cannot drift from the truth.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// tokio's AsyncFd wants AsRawFd, nix's Inotify offers AsFd.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A watch on a directory that may not exist yet, or may be removed and created again.
pub(crate) struct DirWatch {
    fd: AsyncFd<InotifyFd>,
    dir: PathBuf,
    watch: Option<WatchDescriptor>,
}

/// Everything that can change the set of manifests: files created, written, removed, renamed
/// in or out, plus the directory itself going away.
fn flags() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

impl DirWatch {
    /// An inotify instance for `dir`; the watch itself is added by [`DirWatch::ensure`].
    pub(crate) fn new(dir: &Path) -> io::Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // SAFETY: InotifyFd owns the inotify descriptor (an OwnedFd inside nix's Inotify) and
        // the AsyncFd owns the InotifyFd, so the descriptor stays open, and as_raw_fd keeps
        // returning it, until the AsyncFd is dropped.
        let fd =
            unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }?;
        Ok(DirWatch {
            fd,
            dir: dir.to_path_buf(),
            watch: None,
        })
    }

    /// Adds the watch if it is not in place (the directory appeared, or came back); returns
    /// whether it is in place. Call before each scan so that no change falls between the two.
    pub(crate) fn ensure(&mut self) -> bool {
        if self.watch.is_none() {
            match self.fd.get_ref().0.add_watch(&self.dir, flags()) {
                Ok(wd) => {
                    tracing::debug!(dir = %self.dir.display(), "watching the manifest directory");
                    self.watch = Some(wd);
                }
                Err(e) => {
                    tracing::debug!(dir = %self.dir.display(), "cannot watch yet: {e}");
                }
            }
        }
        self.watch.is_some()
    }

    /// Waits for the next batch of events. Pends forever while there is no watch, so that the
    /// caller's periodic rescan (which calls `ensure`) is what revives it.
    pub(crate) async fn changed(&mut self) -> io::Result<()> {
        if self.watch.is_none() {
            return std::future::pending().await;
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let events =
                match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from)) {
                    Ok(result) => result?,
                    Err(_would_block) => continue,
                };
            for event in &events {
                let gone = AddWatchFlags::IN_IGNORED
                    | AddWatchFlags::IN_DELETE_SELF
                    | AddWatchFlags::IN_MOVE_SELF;
                if event.mask.intersects(gone) {
                    // A moved directory keeps its watch under the old name: drop it, so the
                    // next `ensure` watches whatever is at the path now.
                    if let Some(wd) = self.watch.take() {
                        let _ = self.fd.get_ref().0.rm_watch(wd);
                    }
                }
            }
            return Ok(());
        }
    }
}

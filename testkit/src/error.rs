//! The one error type of the fixtures: what failed and why, with the path or command involved.

use std::path::PathBuf;

/// A fixture could not be set up, used or torn down.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The errno.
        source: nix::Error,
    },
    /// A program the fixtures need is missing or failed.
    #[error("{0}")]
    Command(String),
    /// The registry answered something unexpected.
    #[error("registry: {0}")]
    Registry(String),
    /// Image content could not be built or does not verify.
    #[error("image: {0}")]
    Image(String),
}

/// Result of fixture operations.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an I/O error with what was done and to which path.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { what, path, source }
    }

    /// Wraps a system call error with what was done.
    pub fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Self {
        let what = what.into();
        move |source| Error::Sys { what, source }
    }
}

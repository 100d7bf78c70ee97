//! Errors of the image service, each naming the image, blob or field involved.

use std::path::PathBuf;

use super::reference::ParseError;

/// Why an image operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference does not parse.
    #[error(transparent)]
    InvalidReference(#[from] ParseError),
    /// No local image matches.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// The registry does not know the reference.
    #[error("{reference}: not found in {endpoints}")]
    ManifestUnknown {
        /// What was asked for.
        reference: String,
        /// The endpoints that were asked.
        endpoints: String,
    },
    /// The registry refused the credentials, or wanted some and got none.
    #[error("{reference}: {endpoint} refused access: {detail}")]
    Unauthorized {
        /// What was asked for.
        reference: String,
        /// The endpoint.
        endpoint: String,
        /// The registry's reason.
        detail: String,
    },
    /// The registry could not be reached or answered something unusable.
    #[error("{endpoint}: {message}")]
    Registry {
        /// The endpoint.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// Content does not match its digest or size.
    #[error("{what}: expected {expected}, got {actual}")]
    Mismatch {
        /// Which content.
        what: String,
        /// What the descriptor said.
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// The image uses something this runtime does not support.
    #[error("{0}")]
    Unsupported(String),
    /// Content is malformed.
    #[error("{0}")]
    Malformed(String),
    /// A local file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// To which path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another pull of the same image failed; this one shares its outcome.
    #[error("{0}")]
    Shared(String),
}

impl ImageError {
    /// Wraps an I/O error with what was done and to which path.
    pub fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io { what, path, source }
    }
}

/// Result of image operations.
pub type Result<T> = std::result::Result<T, ImageError>;

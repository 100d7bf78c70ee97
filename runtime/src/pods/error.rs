//! Errors of pod and container operations, mapped to the gRPC codes CRI clients act on.

use tonic::Status;

use crate::images::ImageError;
use crate::network::NetworkError;

/// Why a pod or container operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// A request field is missing or invalid; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// No such sandbox or container.
    #[error("{0} not found")]
    NotFound(String),
    /// The name is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is not in a state that allows the operation.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Networking failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The image is missing or broken.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A deadline passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The pod monitor failed or could not be reached.
    #[error("{0}")]
    Monitor(String),
    /// A local operation failed.
    #[error("{0}")]
    Internal(String),
}

impl PodError {
    /// The gRPC status for this error.
    pub fn status(&self) -> Status {
        let message = self.to_string();
        match self {
            PodError::Invalid(_) => Status::invalid_argument(message),
            PodError::NotFound(_) => Status::not_found(message),
            PodError::AlreadyExists(_) => Status::already_exists(message),
            PodError::FailedPrecondition(_) => Status::failed_precondition(message),
            PodError::DeadlineExceeded(_) => Status::deadline_exceeded(message),
            PodError::Image(e) => crate::service::image_status_of(e),
            PodError::Network(_) | PodError::Monitor(_) | PodError::Internal(_) => {
                Status::internal(message)
            }
        }
    }
}

/// Result of pod operations.
pub type Result<T> = std::result::Result<T, PodError>;

//! The CRI v1 services over the runtime's parts: the same objects serve gRPC on the socket and
//! the agent in-process.

mod image;
mod runtime;

pub use image::CriImageService;
pub use runtime::CriRuntimeService;

use tonic::Status;

use crate::images::ImageError;

/// Maps an image error to the gRPC code a CRI client acts on.
pub(crate) fn image_status_of(error: &ImageError) -> Status {
    let message = error.to_string();
    match error {
        ImageError::InvalidReference(_) => Status::invalid_argument(message),
        ImageError::NotFound(_) | ImageError::ManifestUnknown { .. } => Status::not_found(message),
        ImageError::Unauthorized { .. } => Status::permission_denied(message),
        ImageError::Registry { .. } => Status::unavailable(message),
        ImageError::Mismatch { .. } => Status::data_loss(message),
        ImageError::Unsupported(_) => Status::failed_precondition(message),
        ImageError::Malformed(_) => Status::invalid_argument(message),
        ImageError::Io { .. } | ImageError::Shared(_) => Status::internal(message),
    }
}

/// The answer of an RPC this runtime does not provide yet: says which and why.
pub(crate) fn not_implemented(rpc: &str, why: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented by capstan yet: {why}"))
}

/// The `image.image` field of a request, or InvalidArgument naming the field.
pub(crate) fn required_image(
    spec: Option<&capstan_proto::ImageSpec>,
    field: &str,
) -> Result<String, Status> {
    match spec.map(|s| s.image.trim()).filter(|s| !s.is_empty()) {
        Some(image) => Ok(image.to_string()),
        None => Err(Status::invalid_argument(format!("{field} is required"))),
    }
}

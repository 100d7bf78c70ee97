//! Pieces the StatefulSet and DaemonSet controllers share: a work queue fed by watch caches,
//! ControllerRevision history, pods from templates with controllerRef adoption, and
//! create/delete expectations. (Kept apart from the Deployment/ReplicaSet helpers on purpose:
//! the lead deduplicates.)

pub mod expectations;
pub mod history;
pub mod pods;
pub mod selector;

use std::time::Duration;

use crate::queue::Backoff;

/// The StatefulSet and DaemonSet controllers' failure back-off.
pub const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(50),
    max: Duration::from_secs(60),
};

/// What a sync of one object can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// An API call failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// An object could not be (de)serialised.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

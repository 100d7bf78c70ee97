//! What a pod worker is told, and the handle through which the registry and the pod's probes
//! tell it.

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;

/// What a worker is told.
#[derive(Debug)]
pub enum WorkerMessage {
    /// Something about the pod's containers changed in the runtime.
    Wake,
    /// The pod changed in its source (labels, annotations or spec, such as an ephemeral
    /// container added by `kubectl debug`): the worker works from this one now.
    Update(Box<Pod>),
    /// The pod was removed from its source: stop it within its grace period.
    Terminate,
    /// The pod was marked for deletion in the API server: stop it within `grace_seconds`
    /// (its `deletionGracePeriodSeconds`) when that is shorter than its own grace period.
    Delete {
        /// The deletion's grace period.
        grace_seconds: i64,
    },
}

/// The handle the registry keeps.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    sender: mpsc::UnboundedSender<WorkerMessage>,
}

impl WorkerHandle {
    /// The handle of the worker reading from `sender`'s channel.
    pub(crate) fn new(sender: mpsc::UnboundedSender<WorkerMessage>) -> WorkerHandle {
        WorkerHandle { sender }
    }

    /// Sends a message; a worker that already finished ignores it.
    pub fn send(&self, message: WorkerMessage) {
        let _ = self.sender.send(message);
    }
}

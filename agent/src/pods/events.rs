//! Events about pods, as the kubelet records them (FailedMount, FailedToRetrieveImagePullSecret
//! and the like). Workers record; under an API server the node's event poster ([`attach`]ed
//! once) posts them, and standalone nothing listens and recording costs nothing.
//!
//! [`attach`]: Events::attach

use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;

/// How many events may wait for the poster; more are dropped (the API server being slow must
/// not make the workers wait or grow memory).
const QUEUE: usize = 256;

/// One event about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    /// The pod's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: String,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// Why, in CamelCase.
    pub reason: String,
    /// What happened.
    pub message: String,
}

/// Where workers record events.
#[derive(Debug, Default)]
pub struct Events {
    sink: OnceLock<mpsc::Sender<PodEvent>>,
}

impl Events {
    /// Records a Warning about `pod`.
    pub fn warning(&self, pod: &Pod, reason: &str, message: impl Into<String>) {
        let Some(sink) = self.sink.get() else {
            return;
        };
        let meta = &pod.metadata;
        let event = PodEvent {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            type_: "Warning",
            reason: reason.to_string(),
            message: message.into(),
        };
        if sink.try_send(event).is_err() {
            tracing::debug!(reason, "event dropped: the poster is behind");
        }
    }

    /// The events recorded from now on; None when already attached.
    pub fn attach(&self) -> Option<mpsc::Receiver<PodEvent>> {
        let (sender, receiver) = mpsc::channel(QUEUE);
        self.sink.set(sender).ok()?;
        Some(receiver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_only_once_attached() {
        let events = Events::default();
        let mut pod = Pod::default();
        pod.metadata.name = Some("p".into());
        events.warning(&pod, "FailedMount", "lost");
        let mut receiver = events.attach().expect("first attach");
        assert!(events.attach().is_none());
        events.warning(&pod, "FailedMount", "kept");
        let got = receiver.try_recv().expect("an event");
        assert_eq!(
            (
                got.namespace.as_str(),
                got.name.as_str(),
                got.message.as_str()
            ),
            ("default", "p", "kept")
        );
        assert!(receiver.try_recv().is_err());
    }
}

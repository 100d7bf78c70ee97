//! Events about pods, as the kubelet records them (FailedMount, FailedToRetrieveImagePullSecret
//! and the like, and Pulling/Pulled/Created/Started about one of their containers). Workers record; under an API server the node's event poster ([`attach`]ed
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
    /// The container it is about, as the kubelet names it (`spec.containers{web}`); None for
    /// the pod itself.
    pub field_path: Option<String>,
}

/// Where workers record events.
#[derive(Debug, Default)]
pub struct Events {
    sink: OnceLock<mpsc::Sender<PodEvent>>,
}

impl Events {
    /// Records a Warning about `pod`.
    pub fn warning(&self, pod: &Pod, reason: &str, message: impl Into<String>) {
        self.record(pod, None, "Warning", reason, message.into());
    }

    /// Records an event of `type_` (`Normal` or `Warning`) about the container of `pod` at
    /// `field_path` (see [`field_path`]).
    pub fn container(
        &self,
        pod: &Pod,
        field_path: &str,
        type_: &'static str,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.record(
            pod,
            Some(field_path.to_string()),
            type_,
            reason,
            message.into(),
        );
    }

    fn record(
        &self,
        pod: &Pod,
        field_path: Option<String>,
        type_: &'static str,
        reason: &str,
        message: String,
    ) {
        let Some(sink) = self.sink.get() else {
            return;
        };
        let meta = &pod.metadata;
        let event = PodEvent {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            type_,
            reason: reason.to_string(),
            message,
            field_path,
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

/// The kubelet's field path of container `name` of `pod`: `spec.containers{NAME}`,
/// `spec.initContainers{NAME}` or `spec.ephemeralContainers{NAME}`.
pub fn field_path(pod: &Pod, name: &str) -> String {
    let spec = pod.spec.as_ref();
    let list = if spec
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|l| l.iter().any(|c| c.name == name))
    {
        "initContainers"
    } else if spec
        .and_then(|s| s.ephemeral_containers.as_ref())
        .is_some_and(|l| l.iter().any(|c| c.name == name))
    {
        "ephemeralContainers"
    } else {
        "containers"
    };
    format!("spec.{list}{{{name}}}")
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
        events.container(&pod, "spec.containers{c}", "Normal", "Started", "go");
        let got = receiver.try_recv().expect("a container event");
        assert_eq!(got.field_path.as_deref(), Some("spec.containers{c}"));
        assert_eq!(got.type_, "Normal");
    }

    #[test]
    fn field_paths_name_the_list_of_the_container() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "app"}],
                "initContainers": [{"name": "init"}],
                "ephemeralContainers": [{"name": "debugger"}],
            }
        }))
        .expect("a pod");
        assert_eq!(field_path(&pod, "app"), "spec.containers{app}");
        assert_eq!(field_path(&pod, "init"), "spec.initContainers{init}");
        assert_eq!(
            field_path(&pod, "debugger"),
            "spec.ephemeralContainers{debugger}"
        );
    }
}

//! Events the controllers record (`kubectl describe` shows them), published off the sync path
//! as upstream's broadcaster does so that a slow events write never delays a sync.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

/// Queues events for publishing.
#[derive(Clone)]
pub struct EventSink {
    sender: mpsc::UnboundedSender<(ObjectReference, Event)>,
}

impl EventSink {
    /// A sink and the loop that publishes its events as `component` (run it alongside the
    /// controller; it ends when every sink is dropped).
    pub fn new(
        client: kube::Client,
        component: &str,
    ) -> (
        EventSink,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (sender, mut receiver) = mpsc::unbounded_channel::<(ObjectReference, Event)>();
        let recorder = Recorder::new(
            client,
            Reporter {
                controller: component.into(),
                instance: None,
            },
        );
        let publish = async move {
            while let Some((reference, event)) = receiver.recv().await {
                if let Err(error) = recorder.publish(&event, &reference).await {
                    tracing::debug!(%error, reason = %event.reason, "event not recorded");
                }
            }
        };
        (EventSink { sender }, publish)
    }

    fn send(&self, regarding: ObjectReference, type_: EventType, reason: &str, note: String) {
        self.send_related(regarding, None, type_, reason, note);
    }

    fn send_related(
        &self,
        regarding: ObjectReference,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: related,
        };
        // The publisher only stops with the controller.
        let _ = self.sender.send((regarding, event));
    }

    /// A Normal event about `regarding`.
    pub fn normal(&self, regarding: ObjectReference, reason: &str, note: String) {
        self.send(regarding, EventType::Normal, reason, note);
    }

    /// A Normal or, when `failed`, Warning event about `regarding`, naming the object acted
    /// on as `related`: the recorder folds events of one key into a series, and the related
    /// object keeps one pod's event from being folded into another's.
    pub fn record(
        &self,
        regarding: ObjectReference,
        related: Option<ObjectReference>,
        failed: bool,
        reason: &str,
        note: String,
    ) {
        let type_ = if failed {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.send_related(regarding, related, type_, reason, note);
    }

    /// A Warning event about `regarding`.
    pub fn warning(&self, regarding: ObjectReference, reason: &str, note: String) {
        self.send(regarding, EventType::Warning, reason, note);
    }
}

/// An API error as upstream's events print it: the Status message, not kube's debug form.
pub fn error_text(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// A reference to the object an event is related to, by kind and name.
pub fn related(api_version: &str, kind: &str, namespace: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        ..ObjectReference::default()
    }
}

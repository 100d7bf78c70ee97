//! Core v1 Events as client-go's recorder writes them (`kubectl describe` shows them), for the
//! node controllers: one Event per occurrence, named `<object>.<hex nanos>`.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, PostParams};

/// Writes events about objects for one controller (`source.component`).
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    component: &'static str,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("component", &self.component)
            .finish()
    }
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An expected change.
    Normal,
    /// Something a user should look at.
    Warning,
}

impl Recorder {
    /// A recorder for `component` (e.g. `node-controller`).
    pub fn new(client: kube::Client, component: &'static str) -> Recorder {
        Recorder { client, component }
    }

    /// Records `reason` / `message` about `object`; a failure is logged, never returned, as
    /// with client-go's recorder (events are best effort).
    pub async fn record(&self, object: &ObjectReference, kind: Kind, reason: &str, message: &str) {
        // Events of cluster-scoped objects go to `default`, as client-go does.
        let namespace = object
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let now = jiff::Timestamp::now();
        let name = format!(
            "{}.{:x}",
            object.name.as_deref().unwrap_or("object"),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: object.clone(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some(match kind {
                Kind::Normal => "Normal".into(),
                Kind::Warning => "Warning".into(),
            }),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource {
                component: Some(self.component.into()),
                host: None,
            }),
            reporting_component: Some(self.component.into()),
            ..Event::default()
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(error) = events.create(&PostParams::default(), &event).await {
            tracing::debug!(%error, reason, "event not recorded");
        }
    }
}

/// A reference to a Node for events.
pub fn node_reference(node: &k8s_openapi::api::core::v1::Node) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: node.metadata.name.clone(),
        uid: node.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// A reference to a Pod for events.
pub fn pod_reference(pod: &k8s_openapi::api::core::v1::Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

//! Posts the pods' events to the API server as the kubelet's event recorder does: a core/v1
//! Event from source `kubelet` on this host, and for a repeat of the same event (same pod,
//! container, reason and message) a patch of its count and lastTimestamp instead of a new object.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

use crate::pods::events::PodEvent;

/// Same pod, container, reason and message: the key of a repeat.
type Repeat = (String, Option<String>, String, String);

/// The Event first posted for `event`, named as the kubelet names them (`<pod>.<hex nanos>`).
fn new_event(event: &PodEvent, node: &str, now: k8s_openapi::jiff::Timestamp) -> Event {
    let nanos = u64::try_from(now.as_nanosecond()).unwrap_or(0);
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{nanos:x}", event.name)),
            namespace: Some(event.namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(event.name.clone()),
            namespace: Some(event.namespace.clone()),
            uid: Some(event.uid.clone()),
            field_path: event.field_path.clone(),
            ..Default::default()
        },
        reason: Some(event.reason.clone()),
        message: Some(event.message.clone()),
        type_: Some(event.type_.into()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.to_string()),
        }),
        reporting_component: Some("kubelet".into()),
        reporting_instance: Some(node.to_string()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    }
}

/// Posts what `events` brings until the workers are gone.
pub async fn run(client: kube::Client, node: String, mut events: mpsc::Receiver<PodEvent>) {
    // Posted events by repeat key: (name, count).
    let mut posted: HashMap<Repeat, (String, i32)> = HashMap::new();
    while let Some(event) = events.recv().await {
        let api: Api<Event> = Api::namespaced(client.clone(), &event.namespace);
        let key = (
            event.uid.clone(),
            event.field_path.clone(),
            event.reason.clone(),
            event.message.clone(),
        );
        let now = crate::pods::status::now();
        if let Some((name, count)) = posted.get_mut(&key) {
            let patch = serde_json::json!({"count": *count + 1, "lastTimestamp": Time(now)});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    *count += 1;
                    continue;
                }
                // Gone (events expire): post it anew below.
                Err(error) => tracing::debug!(%error, "event not patched; posting it anew"),
            }
        }
        let object = new_event(&event, &node, now);
        let name = object.metadata.name.clone().unwrap_or_default();
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                posted.insert(key, (name, 1));
            }
            Err(error) => {
                tracing::warn!(pod = %event.name, reason = %event.reason, %error, "event not posted")
            }
        }
        // Forget repeats of pods long gone: the map only needs recent ones.
        if posted.len() > 4096 {
            posted.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_pod_and_source() {
        let event = PodEvent {
            namespace: "ns".into(),
            name: "web".into(),
            uid: "u1".into(),
            type_: "Warning",
            reason: "FailedMount".into(),
            message: "m".into(),
            field_path: Some("spec.containers{c}".into()),
        };
        let now = k8s_openapi::jiff::Timestamp::from_second(1).unwrap();
        let posted = new_event(&event, "node1", now);
        assert_eq!(posted.metadata.name.as_deref(), Some("web.3b9aca00"));
        assert_eq!(posted.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(posted.involved_object.kind.as_deref(), Some("Pod"));
        assert_eq!(
            posted.involved_object.field_path.as_deref(),
            Some("spec.containers{c}")
        );
        let source = posted.source.unwrap();
        assert_eq!(source.component.as_deref(), Some("kubelet"));
        assert_eq!(source.host.as_deref(), Some("node1"));
        assert_eq!(posted.count, Some(1));
        assert_eq!(posted.type_.as_deref(), Some("Warning"));
    }
}

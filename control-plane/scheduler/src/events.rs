//! Events as kube-scheduler records them: events.k8s.io/v1, reportingController the profile's
//! scheduler name, repeated events folded into a series (written once, at its second
//! occurrence, as client-go's event broadcaster does between its 30-minute heartbeats).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

#[derive(Debug)]
struct Recorded {
    name: String,
    count: u32,
}

/// Records events about pods; remembers recent ones to fold repeats into series.
pub struct Recorder {
    client: kube::Client,
    controller: String,
    instance: String,
    recent: HashMap<(String, String, String), Recorded>,
}

impl Recorder {
    /// A recorder reporting as `controller` (the scheduler name), instance `identity`.
    pub fn new(client: kube::Client, controller: &str, identity: &str) -> Recorder {
        Recorder {
            client,
            controller: controller.to_string(),
            instance: format!("{controller}-{identity}"),
            recent: HashMap::new(),
        }
    }

    /// Forgets a pod's events (it was deleted).
    pub fn forget(&mut self, pod_key: &str) {
        self.recent.retain(|(key, _, _), _| key != pod_key);
    }

    /// Records an event about `pod` in the background.
    pub fn record(&mut self, pod: &Pod, type_: &str, reason: &str, action: &str, note: &str) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let key = (
            format!("{namespace}/{name}"),
            reason.to_string(),
            note.to_string(),
        );
        let now = jiff::Timestamp::now();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        if let Some(recorded) = self.recent.get_mut(&key) {
            recorded.count += 1;
            if recorded.count == 2 {
                let patch = json!({"series": {"count": 2, "lastObservedTime": micro(now)}});
                let event_name = recorded.name.clone();
                tokio::spawn(async move {
                    if let Err(error) = api
                        .patch(&event_name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                    {
                        tracing::debug!(%error, event = %event_name, "event series update failed");
                    }
                });
            }
            return;
        }
        let event_name = format!("{name}.{:x}", now.as_nanosecond());
        let event = json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": event_name, "namespace": namespace},
            "eventTime": micro(now),
            "reportingController": self.controller,
            "reportingInstance": self.instance,
            "action": action,
            "reason": reason,
            "type": type_,
            "note": note,
            "regarding": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": namespace,
                "name": name,
                "uid": pod.metadata.uid,
                "resourceVersion": pod.metadata.resource_version,
            },
        });
        self.recent.insert(
            key,
            Recorded {
                name: event_name.clone(),
                count: 1,
            },
        );
        let event: Event = match serde_json::from_value(event) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "event not encodable");
                return;
            }
        };
        tokio::spawn(async move {
            if let Err(error) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(%error, event = %event_name, "event not recorded");
            }
        });
    }
}

/// A MicroTime: RFC 3339 with microseconds.
fn micro(time: jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

//! MarkPodsNotReady: the pods of a node that stopped reporting get Ready=False, since nobody
//! else will say they are not serving.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::events::{Kind, Recorder, pod_reference};

/// Sets the Ready condition of `pods` (those of one node) to False where it is not already,
/// with a `NodeNotReady` warning on each, as upstream. Returns whether every write succeeded.
pub async fn mark_not_ready(client: &kube::Client, recorder: &Recorder, pods: &[Pod]) -> bool {
    let mut all = true;
    for pod in pods {
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        let ready = status
            .conditions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|c| c.type_ == "Ready");
        if ready.is_none_or(|c| c.status == "False") {
            continue;
        }
        let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
            continue;
        };
        // A strategic merge by condition type: only Ready changes, whatever else is written
        // meanwhile (the taint-eviction controller's DisruptionTarget).
        let now = Time(jiff::Timestamp::now());
        let patch = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": now},
        ]}});
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(pod = %name, namespace = %namespace, "pod marked not ready");
                recorder
                    .record(
                        &pod_reference(pod),
                        Kind::Warning,
                        "NodeNotReady",
                        "Node is not ready",
                    )
                    .await;
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => {
                tracing::debug!(pod = %name, %error, "pod not marked not ready; retried");
                all = false;
            }
        }
    }
    all
}

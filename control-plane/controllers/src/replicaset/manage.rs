//! Creating and deleting pods to reach the replica count (upstream's manageReplicas): creations
//! in slow-start batches (1, 2, 4, …, stopping at the first failing batch), deletions of the
//! best-ranked pods, each announced to the expectations first.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::join_all;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};

use super::SyncError;
use super::claim::not_found;
use super::expectations::Expectations;
use super::kind::ReplicaKind;
use super::podutil;
use super::ranking;
use crate::events::EventSink;
use crate::queue::Key;

/// Upstream's --replicaset burstReplicas: at most this many creations or deletions per sync.
pub const BURST_REPLICAS: usize = 500;

/// What one round of managing did.
pub struct Managed {
    /// Pods deleted (namespace/name), no longer counted in the status.
    pub deleted: HashSet<String>,
    /// The first error, and whether pods were missing (creating) or in excess (deleting).
    pub error: Option<(SyncError, bool)>,
}

/// The message of an error as upstream's `err.Error()` shows an API status.
pub fn message(error: &SyncError) -> String {
    match error {
        SyncError::Api(kube::Error::Api(status)) => status.message.clone(),
        other => other.to_string(),
    }
}

/// A pod for `owner` from its template (upstream's GetPodFromTemplate).
pub fn pod_from_template<K: ReplicaKind>(owner: &K, template: &PodTemplateSpec) -> Pod {
    let meta = owner.meta();
    let template_meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", meta.name.as_deref().unwrap_or_default())),
            namespace: meta.namespace.clone(),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![podutil::controller_ref(K::API_VERSION, K::KIND, meta)]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Brings `pods` (the owner's active pods) to the owner's replica count.
pub async fn manage<K: ReplicaKind>(
    client: &kube::Client,
    owner: &K,
    key: &Key,
    pods: &[Arc<Pod>],
    related: &[Pod],
    expectations: &Expectations,
    events: &EventSink,
) -> Managed {
    let mut managed = Managed {
        deleted: HashSet::new(),
        error: None,
    };
    let desired = owner.replicas().max(0) as usize;
    let api: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
    let reference = owner.object_ref(&());
    if pods.len() < desired {
        let Some(template) = owner.template() else {
            return managed;
        };
        let count = (desired - pods.len()).min(BURST_REPLICAS);
        expectations.expect_creations(key, count);
        let pod = pod_from_template(owner, template);
        let params = PostParams::default();
        let mut remaining = count;
        let mut batch = remaining.min(1);
        let mut created = 0;
        while batch > 0 {
            let results = join_all((0..batch).map(|_| api.create(&params, &pod))).await;
            let mut failed = false;
            for result in results {
                match result {
                    Ok(pod) => {
                        created += 1;
                        let name = pod.metadata.name.unwrap_or_default();
                        events.normal(
                            reference.clone(),
                            "SuccessfulCreate",
                            format!("Created pod: {name}"),
                        );
                    }
                    Err(error) => {
                        failed = true;
                        let error = SyncError::from(error);
                        events.warning(
                            reference.clone(),
                            "FailedCreate",
                            format!("Error creating: {}", message(&error)),
                        );
                        if managed.error.is_none() {
                            managed.error = Some((error, true));
                        }
                    }
                }
            }
            if failed {
                break;
            }
            remaining -= batch;
            batch = (2 * batch).min(remaining);
        }
        // The watch will never show the pods not created.
        for _ in created..count {
            expectations.creation_observed(key);
        }
    } else if pods.len() > desired {
        let count = (pods.len() - desired).min(BURST_REPLICAS);
        let candidates: Vec<Pod> = pods.iter().map(|p| Pod::clone(p)).collect();
        let doomed = ranking::pods_to_delete(candidates, related, count);
        expectations.expect_deletions(key, doomed.iter().map(podutil::pod_key).collect());
        let results = join_all(doomed.iter().map(|pod| {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let api = api.clone();
            async move {
                (
                    name.clone(),
                    api.delete(&name, &DeleteParams::default()).await,
                )
            }
        }))
        .await;
        for ((name, result), pod) in results.into_iter().zip(&doomed) {
            match result {
                Ok(_) => {
                    events.normal(
                        reference.clone(),
                        "SuccessfulDelete",
                        format!("Deleted pod: {name}"),
                    );
                    managed.deleted.insert(podutil::pod_key(pod));
                }
                Err(error) => {
                    expectations.deletion_observed(key, &podutil::pod_key(pod));
                    if not_found(&error) {
                        managed.deleted.insert(podutil::pod_key(pod));
                        continue;
                    }
                    let error = SyncError::from(error);
                    events.warning(
                        reference.clone(),
                        "FailedDelete",
                        format!("Error deleting: {}", message(&error)),
                    );
                    if managed.error.is_none() {
                        managed.error = Some((error, false));
                    }
                }
            }
        }
    }
    managed
}

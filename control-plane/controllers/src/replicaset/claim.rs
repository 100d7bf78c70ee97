//! Adoption and release of pods by controllerRef (upstream's PodControllerRefManager): orphans
//! matching the selector are adopted, owned pods that stopped matching are released.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::SyncError;
use super::kind::ReplicaKind;
use super::podutil;
use super::selector::Selector;

/// Whether `error` is a 404.
pub fn not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Adopts matching orphans and releases owned pods that no longer match; returns the pods that
/// are the owner's afterwards. `pods` are active pods of the owner's namespace.
pub async fn claim_pods<K: ReplicaKind>(
    client: &kube::Client,
    owner: &K,
    selector: &Selector,
    pods: Vec<Arc<Pod>>,
) -> Result<Vec<Arc<Pod>>, SyncError> {
    let meta = owner.meta();
    let namespace = meta.namespace.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();
    let deleting = meta.deletion_timestamp.is_some();
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut claimed = Vec::new();
    let mut adoptable: Option<bool> = None;
    let mut first_error = None;
    for pod in pods {
        let matches = selector.matches(pod.metadata.labels.as_ref());
        let name = pod.metadata.name.clone().unwrap_or_default();
        match podutil::controller_of(&pod.metadata) {
            Some(reference) if reference.uid != uid => {}
            Some(_) if matches => claimed.push(pod),
            Some(_) if deleting => {}
            Some(_) => {
                let patch = json!({"metadata": {
                    "ownerReferences": [{"$patch": "delete", "uid": uid}],
                    "uid": pod.metadata.uid,
                }});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    Ok(_) => tracing::info!(pod = %name, owner = ?meta.name, "released pod"),
                    Err(error) if not_found(&error) => {}
                    Err(error) => first_error = first_error.or(Some(error.into())),
                }
            }
            None => {
                if deleting || !matches || pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if adoptable.is_none() {
                    adoptable = Some(can_adopt::<K>(client, &namespace, meta).await);
                }
                if adoptable != Some(true) {
                    continue;
                }
                let reference = podutil::controller_ref(K::API_VERSION, K::KIND, meta);
                let patch = json!({"metadata": {
                    "ownerReferences": [reference],
                    "uid": pod.metadata.uid,
                }});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    Ok(adopted) => {
                        tracing::info!(pod = %name, owner = ?meta.name, "adopted pod");
                        claimed.push(Arc::new(adopted));
                    }
                    Err(error) if not_found(&error) => {}
                    Err(error) => first_error = first_error.or(Some(error.into())),
                }
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(claimed),
    }
}

/// Upstream re-reads the owner from the API (not the cache) before adopting, so that an owner
/// deleted meanwhile adopts nothing.
async fn can_adopt<K: ReplicaKind>(
    client: &kube::Client,
    namespace: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool {
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = meta.name.clone().unwrap_or_default();
    match api.get_opt(&name).await {
        Ok(Some(fresh)) => {
            fresh.meta().uid == meta.uid && fresh.meta().deletion_timestamp.is_none()
        }
        _ => false,
    }
}

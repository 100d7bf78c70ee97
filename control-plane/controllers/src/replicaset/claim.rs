//! Adoption and release by controllerRef (upstream's ControllerRefManager): orphans matching
//! the selector are adopted, owned objects that stopped matching are released. ReplicaSets
//! claim pods; Deployments claim ReplicaSets.

use std::sync::Arc;

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::SyncError;
use super::podutil;
use super::selector::Selector;

/// Whether `error` is a 404.
pub fn not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Adopts matching orphans and releases owned objects that no longer match; returns the objects
/// that are the owner's afterwards. `pods` are candidates in the owner's namespace; the owner's
/// controller references read `api_version` / `kind`.
pub async fn claim<O, C>(
    client: &kube::Client,
    owner: &O,
    (api_version, kind): (&str, &str),
    selector: &Selector,
    pods: Vec<Arc<C>>,
) -> Result<Vec<Arc<C>>, SyncError>
where
    O: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
    C: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let meta = owner.meta();
    let namespace = meta.namespace.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();
    let deleting = meta.deletion_timestamp.is_some();
    let api: Api<C> = Api::namespaced(client.clone(), &namespace);
    let mut claimed = Vec::new();
    let mut adoptable: Option<bool> = None;
    let mut first_error = None;
    for pod in pods {
        let matches = selector.matches(pod.meta().labels.as_ref());
        let name = pod.meta().name.clone().unwrap_or_default();
        match podutil::controller_of(pod.meta()) {
            Some(reference) if reference.uid != uid => {}
            Some(_) if matches => claimed.push(pod),
            Some(_) if deleting => {}
            Some(_) => {
                let patch = json!({"metadata": {
                    "ownerReferences": [{"$patch": "delete", "uid": uid}],
                    "uid": pod.meta().uid,
                }});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(kind = %kind, object = %name, owner = ?meta.name, "released")
                    }
                    Err(error) if not_found(&error) => {}
                    Err(error) => first_error = first_error.or(Some(error.into())),
                }
            }
            None => {
                if deleting || !matches || pod.meta().deletion_timestamp.is_some() {
                    continue;
                }
                if adoptable.is_none() {
                    adoptable = Some(can_adopt::<O>(client, &namespace, meta).await);
                }
                if adoptable != Some(true) {
                    continue;
                }
                let reference = podutil::controller_ref(api_version, kind, meta);
                let patch = json!({"metadata": {
                    "ownerReferences": [reference],
                    "uid": pod.meta().uid,
                }});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                    .await
                {
                    Ok(adopted) => {
                        tracing::info!(kind = %kind, object = %name, owner = ?meta.name, "adopted");
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
async fn can_adopt<K>(
    client: &kube::Client,
    namespace: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> bool
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = meta.name.clone().unwrap_or_default();
    match api.get_opt(&name).await {
        Ok(Some(fresh)) => {
            fresh.meta().uid == meta.uid && fresh.meta().deletion_timestamp.is_none()
        }
        _ => false,
    }
}

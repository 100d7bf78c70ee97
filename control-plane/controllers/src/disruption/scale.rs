//! The scale behind a budget's pods: each pod's controller (ReplicaSet, or the Deployment
//! above it; ReplicationController; StatefulSet) and its `spec.replicas`, summed once per
//! controller, as upstream's finders do.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::Api;

use super::status::StatusError;

/// The summed scale of the pods' controllers, and the names of pods with none.
pub async fn expected_scale(
    client: &kube::Client,
    namespace: &str,
    pods: &[&Pod],
) -> Result<(i32, Vec<String>), StatusError> {
    let mut scales: BTreeMap<String, i32> = BTreeMap::new();
    let mut unmanaged = Vec::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(owner) = controller_of(pod.metadata.owner_references.as_deref()) else {
            unmanaged.push(name);
            continue;
        };
        if scales.contains_key(&owner.uid) {
            continue;
        }
        match find(client, namespace, owner).await? {
            Some((uid, scale)) => {
                scales.insert(uid, scale);
            }
            None => return Err(StatusError::NoController(name)),
        }
    }
    Ok((scales.values().sum(), unmanaged))
}

fn controller_of(owners: Option<&[OwnerReference]>) -> Option<&OwnerReference> {
    owners?.iter().find(|o| o.controller == Some(true))
}

fn group(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(g, _)| g)
}

/// The controller a pod's controllerRef names, as (uid, replicas), when it exists with
/// that UID.
async fn find(
    client: &kube::Client,
    namespace: &str,
    owner: &OwnerReference,
) -> Result<Option<(String, i32)>, StatusError> {
    let same = |uid: Option<&String>| uid == Some(&owner.uid);
    match (group(&owner.api_version), owner.kind.as_str()) {
        ("apps", "ReplicaSet") => {
            let api: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
            let Some(rs) = api.get_opt(&owner.name).await? else {
                return Ok(None);
            };
            if !same(rs.metadata.uid.as_ref()) {
                return Ok(None);
            }
            // A ReplicaSet of a Deployment counts as the Deployment.
            if let Some(parent) = controller_of(rs.metadata.owner_references.as_deref())
                && group(&parent.api_version) == "apps"
                && parent.kind == "Deployment"
            {
                let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
                let Some(deployment) = api.get_opt(&parent.name).await? else {
                    return Ok(None);
                };
                if deployment.metadata.uid.as_ref() != Some(&parent.uid) {
                    return Ok(None);
                }
                let replicas = deployment.spec.and_then(|s| s.replicas).unwrap_or(1);
                return Ok(Some((parent.uid.clone(), replicas)));
            }
            Ok(Some((
                owner.uid.clone(),
                rs.spec.and_then(|s| s.replicas).unwrap_or(1),
            )))
        }
        ("apps", "StatefulSet") => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
            let Some(set) = api.get_opt(&owner.name).await? else {
                return Ok(None);
            };
            if !same(set.metadata.uid.as_ref()) {
                return Ok(None);
            }
            Ok(Some((
                owner.uid.clone(),
                set.spec.and_then(|s| s.replicas).unwrap_or(1),
            )))
        }
        ("", "ReplicationController") => {
            let api: Api<ReplicationController> = Api::namespaced(client.clone(), namespace);
            let Some(rc) = api.get_opt(&owner.name).await? else {
                return Ok(None);
            };
            if !same(rc.metadata.uid.as_ref()) {
                return Ok(None);
            }
            Ok(Some((
                owner.uid.clone(),
                rc.spec.and_then(|s| s.replicas).unwrap_or(1),
            )))
        }
        _ => Ok(None),
    }
}

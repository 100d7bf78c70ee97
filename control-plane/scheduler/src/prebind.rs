//! VolumeBinding's PreBind: before the pod is bound, its WaitForFirstConsumer claims get what
//! the scheduler chose for them: an available volume is bound to its claim (the volume's
//! `claimRef`, and — as Capstan runs no PV controller — the claim's `volumeName`), and a claim
//! to provision is annotated with the node. Then it waits, as upstream does, until every claim
//! is bound (a provisioner creates and binds the volume), or gives up after the bind timeout.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::filters::volume_binding::PodVolumes;
use crate::volumes::{self, ANN_BOUND_BY_CONTROLLER, ANN_SELECTED_NODE};

/// How long PreBind waits for claims to be bound (kube-scheduler's `bindTimeoutSeconds`).
pub const BIND_TIMEOUT: Duration = Duration::from_secs(600);
/// How often it looks.
const POLL: Duration = Duration::from_secs(1);

/// Why PreBind failed; the text follows `running PreBind plugin "VolumeBinding": `.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A write or read failed.
    #[error("binding volumes: {0}")]
    Api(#[from] kube::Error),
    /// The provisioner gave the claim back (it removed the selected node).
    #[error("binding volumes: selectedNode annotation reset for PVC \"{0}\"")]
    SelectedNodeReset(String),
    /// The claims were not bound in time.
    #[error("binding volumes: context deadline exceeded")]
    Timeout,
}

/// Writes the bindings and annotations, then waits until every claim is bound.
pub async fn bind_volumes(
    client: kube::Client,
    pod_volumes: &PodVolumes,
    node: &str,
) -> Result<(), Error> {
    if pod_volumes.is_empty() {
        return Ok(());
    }
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for (volume, claim) in &pod_volumes.static_bindings {
        let name = volume.metadata.name.clone().unwrap_or_default();
        // The resourceVersion makes the patch fail if the volume changed since it was chosen.
        let patch = json!({
            "metadata": {
                "resourceVersion": volume.metadata.resource_version,
                "annotations": {ANN_BOUND_BY_CONTROLLER: "yes"},
            },
            "spec": {"claimRef": volumes::claim_ref(claim)},
        });
        volumes
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(
            client.clone(),
            claim.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let patch = json!({
            "metadata": {"annotations": {ANN_BOUND_BY_CONTROLLER: "yes"}},
            "spec": {"volumeName": name},
        });
        claims
            .patch(
                claim.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
    }
    for claim in &pod_volumes.provisions {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(
            client.clone(),
            claim.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let patch = json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}});
        claims
            .patch(
                claim.metadata.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await?;
    }
    tokio::time::timeout(BIND_TIMEOUT, wait_bound(client, pod_volumes))
        .await
        .map_err(|_| Error::Timeout)?
}

/// Polls until the claims to provision are bound (the static ones were bound above).
async fn wait_bound(client: kube::Client, pod_volumes: &PodVolumes) -> Result<(), Error> {
    let mut waiting: Vec<_> = pod_volumes.provisions.iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for claim in waiting {
            let namespace = claim.metadata.namespace.as_deref().unwrap_or_default();
            let name = claim.metadata.name.as_deref().unwrap_or_default();
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
            let current = claims.get(name).await?;
            if volumes::bound_volume(&current).is_some() {
                continue;
            }
            let selected = current
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANN_SELECTED_NODE));
            if !selected {
                return Err(Error::SelectedNodeReset(format!("{namespace}/{name}")));
            }
            still.push(claim);
        }
        waiting = still;
        if !waiting.is_empty() {
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

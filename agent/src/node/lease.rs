//! The node's heartbeat: its Lease in `kube-node-lease`, renewed every 10 s with the node as
//! holder and owner, as the kubelet's lease controller does (failures retried with back-off
//! from 200 ms to 7 s).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{Api, ObjectMeta, PostParams};

/// Where node Leases live.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The Lease's duration (the kubelet's `nodeLeaseDurationSeconds`).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// How often it is renewed: a quarter of its duration, as upstream.
pub const RENEW_INTERVAL: Duration = Duration::from_secs(10);

const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(7);

/// The owner reference that ties the Lease to its Node (deleting the Node deletes the Lease).
pub fn owner_reference(node: &Node) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.metadata.name.clone()?,
        uid: node.metadata.uid.clone()?,
        ..OwnerReference::default()
    })
}

/// `lease` renewed now by `node_name`, with `owner` added when it has none.
pub fn renewed(
    mut lease: Lease,
    node_name: &str,
    owner: Option<OwnerReference>,
    now: MicroTime,
) -> Lease {
    lease.metadata.name = Some(node_name.to_string());
    lease.metadata.namespace = Some(LEASE_NAMESPACE.to_string());
    if lease
        .metadata
        .owner_references
        .as_ref()
        .is_none_or(|o| o.is_empty())
    {
        lease.metadata.owner_references = owner.map(|o| vec![o]);
    }
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(node_name.to_string());
    spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
    spec.renew_time = Some(now);
    lease
}

/// Renews the Lease once: updates it (with its resourceVersion, so that a concurrent writer
/// makes this a conflict, retried) or creates it.
pub async fn renew_once(client: &kube::Client, node_name: &str) -> Result<Lease, kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let existing = leases.get_opt(node_name).await?;
    let needs_owner = existing.as_ref().is_none_or(|l| {
        l.metadata
            .owner_references
            .as_ref()
            .is_none_or(|o| o.is_empty())
    });
    let owner = if needs_owner {
        let nodes: Api<Node> = Api::all(client.clone());
        nodes
            .get_opt(node_name)
            .await?
            .as_ref()
            .and_then(owner_reference)
    } else {
        None
    };
    match existing {
        Some(lease) => {
            let lease = renewed(lease, node_name, owner, now);
            leases
                .replace(node_name, &PostParams::default(), &lease)
                .await
        }
        None => {
            let lease = renewed(
                Lease {
                    metadata: ObjectMeta::default(),
                    spec: None,
                },
                node_name,
                owner,
                now,
            );
            leases.create(&PostParams::default(), &lease).await
        }
    }
}

/// Renews the Lease every [`RENEW_INTERVAL`] until the task is dropped.
pub async fn run(client: kube::Client, node_name: String) {
    let mut retry = RETRY_FIRST;
    loop {
        match renew_once(&client, &node_name).await {
            Ok(_) => {
                tracing::trace!(node = %node_name, "node lease renewed");
                retry = RETRY_FIRST;
                tokio::time::sleep(RENEW_INTERVAL).await;
            }
            Err(error) => {
                tracing::warn!(node = %node_name, %error, "node lease not renewed; retrying in {retry:?}");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_lease_names_its_holder_and_owner() {
        let mut node = Node::default();
        node.metadata.name = Some("n1".into());
        node.metadata.uid = Some("u1".into());
        let now = MicroTime("2026-01-01T00:00:00Z".parse().expect("time"));
        let lease = renewed(
            Lease {
                metadata: ObjectMeta::default(),
                spec: None,
            },
            "n1",
            owner_reference(&node),
            now.clone(),
        );
        let spec = lease.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(now));
        let owners = lease.metadata.owner_references.expect("owner");
        assert_eq!(
            (owners[0].kind.as_str(), owners[0].uid.as_str()),
            ("Node", "u1")
        );
        assert_eq!(lease.metadata.namespace.as_deref(), Some(LEASE_NAMESPACE));
    }
}

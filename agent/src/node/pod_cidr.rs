//! The node's pod network range, handed to the runtime: the kubelet sends the Node's
//! `spec.podCIDRs` (set by the node IPAM controller) to the runtime with UpdateRuntimeConfig,
//! and the runtime renders its CNI config from them. A standalone node sends the
//! KubeletConfiguration's `podCIDR` instead.

use capstan_proto::{NetworkConfig, RuntimeConfig, UpdateRuntimeConfigRequest};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tonic::Request;

use crate::cri::Cri;

/// The CIDRs of a Node as UpdateRuntimeConfig carries them: comma-separated, `podCIDRs`
/// first, the single `podCIDR` of older writers otherwise.
pub fn node_pod_cidrs(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref()?;
    let cidrs = match (&spec.pod_cidrs, &spec.pod_cidr) {
        (Some(list), _) if !list.is_empty() => list.join(","),
        (_, Some(one)) if !one.is_empty() => one.clone(),
        _ => return None,
    };
    Some(cidrs)
}

/// Sends `pod_cidr` to the runtime; the runtime's refusal is logged, not fatal (the node runs
/// host-network pods without a pod network).
pub async fn apply(cri: &Cri, pod_cidr: &str) -> bool {
    let request = UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: pod_cidr.to_string(),
            }),
        }),
    };
    match cri
        .runtime
        .update_runtime_config(Request::new(request))
        .await
    {
        Ok(_) => {
            tracing::info!(%pod_cidr, "pod CIDR sent to the runtime");
            true
        }
        Err(status) => {
            tracing::warn!(%pod_cidr, error = %status.message(), "the runtime refused the pod CIDR");
            false
        }
    }
}

/// Watches this node's Node object and sends its pod CIDRs to the runtime each time they
/// change (once, in practice: IPAM assigns them once).
pub async fn follow(client: kube::Client, node_name: String, cri: Cri) {
    let nodes: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let mut stream = watcher::watcher(nodes, config).default_backoff().boxed();
    let mut applied: Option<String> = None;
    while let Some(event) = stream.next().await {
        let node = match event {
            Ok(Event::Apply(node) | Event::InitApply(node)) => node,
            Ok(_) => continue,
            Err(error) => {
                tracing::debug!(node = %node_name, %error, "watching the Node for its pod CIDR failed; retrying");
                continue;
            }
        };
        let Some(cidrs) = node_pod_cidrs(&node) else {
            continue;
        };
        if applied.as_deref() != Some(cidrs.as_str()) && apply(&cri, &cidrs).await {
            applied = Some(cidrs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;

    #[test]
    fn pod_cidrs_win_over_the_single_field_and_empty_means_none() {
        let node = |one: Option<&str>, list: Option<Vec<&str>>| Node {
            spec: Some(NodeSpec {
                pod_cidr: one.map(String::from),
                pod_cidrs: list.map(|l| l.into_iter().map(String::from).collect()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            node_pod_cidrs(&node(
                Some("10.1.0.0/24"),
                Some(vec!["10.2.0.0/24", "fd00::/64"])
            )),
            Some("10.2.0.0/24,fd00::/64".into())
        );
        assert_eq!(
            node_pod_cidrs(&node(Some("10.1.0.0/24"), Some(vec![]))),
            Some("10.1.0.0/24".into())
        );
        assert_eq!(node_pod_cidrs(&node(Some(""), None)), None);
        assert_eq!(node_pod_cidrs(&Node::default()), None);
    }
}

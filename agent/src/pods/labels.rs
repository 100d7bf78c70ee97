//! The labels and annotations the kubelet puts on CRI objects, so that tools reading them
//! (crictl, log collectors) and the agent itself after a restart find pods by them.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

/// Pod name label.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// Pod namespace label.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Pod UID label: how the agent finds a pod's sandboxes and containers.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// Container name label.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Termination grace period annotation on sandboxes, so an orphan can be stopped gracefully
/// after an agent restart without its manifest.
pub const GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
/// Marks agent-managed sandboxes (crictl-made ones are left alone).
pub const MANAGED_BY: &str = "io.capstan.managed-by";
/// Value of [`MANAGED_BY`].
pub const MANAGED_BY_AGENT: &str = "capstan-agent";

/// Namespace, name and UID of a pod (empty strings where unset).
pub fn identity(pod: &Pod) -> (&str, &str, &str) {
    let meta = &pod.metadata;
    (
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
        meta.uid.as_deref().unwrap_or_default(),
    )
}

/// Labels of the pod's sandbox: its own labels plus the identity labels.
pub fn sandbox_labels(pod: &Pod) -> HashMap<String, String> {
    let (namespace, name, uid) = identity(pod);
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.insert(POD_NAME.into(), name.into());
    labels.insert(POD_NAMESPACE.into(), namespace.into());
    labels.insert(POD_UID.into(), uid.into());
    labels.insert(MANAGED_BY.into(), MANAGED_BY_AGENT.into());
    labels
}

/// Labels of one of the pod's containers.
pub fn container_labels(pod: &Pod, container: &str) -> HashMap<String, String> {
    let (namespace, name, uid) = identity(pod);
    HashMap::from([
        (POD_NAME.to_string(), name.to_string()),
        (POD_NAMESPACE.to_string(), namespace.to_string()),
        (POD_UID.to_string(), uid.to_string()),
        (CONTAINER_NAME.to_string(), container.to_string()),
    ])
}

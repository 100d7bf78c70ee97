//! Per-kind strategy beyond the shared one in `strategy`: defaults, checks and the
//! create-time fields of one kind family per file. `strategy`, `validation` and the write
//! verbs call in here.

mod config;
mod cron;
mod csr;
mod immutable;
mod networking;
mod pod;
mod service;
pub mod service_alloc;
pub(crate) mod storage;
mod workloads;

use serde_json::Value;

use crate::kinds::Kind;
use crate::server::{ApiServer, RequestUser};
use crate::status::{ApiError, ApiResult, Cause};
use crate::strategy::meta_str;

pub use service_alloc::Allocated;

fn is_service(kind: &Kind) -> bool {
    kind.group.is_empty() && kind.kind == "Service"
}

/// What a create sets from the request beyond the shared create strategy (after it ran: the
/// uid is known).
pub fn prepare_create(kind: &Kind, object: &mut Value, user: &RequestUser) {
    match (kind.group, kind.kind) {
        ("certificates.k8s.io", "CertificateSigningRequest") => csr::prepare_create(object, user),
        ("", "Service") => service::defaults(object),
        ("", "Secret") => config::prepare_secret(object),
        ("batch", "Job") => {
            workloads::defaults(kind.kind, object);
            workloads::prepare_job(object);
        }
        _ if is_workload(kind) => workloads::defaults(kind.kind, object),
        ("", "PodTemplate") => workloads::defaults(kind.kind, object),
        ("", "PersistentVolume" | "PersistentVolumeClaim") | ("storage.k8s.io", "StorageClass") => {
            storage::defaults(kind.kind, object)
        }
        _ => {}
    }
}

fn is_workload(kind: &Kind) -> bool {
    matches!(
        (kind.group, kind.kind),
        (
            "apps",
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
        ) | ("", "ReplicationController")
            | ("batch", "Job" | "CronJob")
    )
}

/// What an update of the main resource keeps of, or refuses to change in, the stored object
/// (after the shared update strategy ran).
pub fn prepare_update(kind: &Kind, new: &mut Value, old: &Value) -> ApiResult<()> {
    let causes = match (kind.group, kind.kind) {
        ("", "Service") => service::prepare_update(new, old),
        ("", "ConfigMap") => config::check_update(new, old, false),
        ("", "Pod") => {
            // Upstream decodes (and so defaults) the new pod before comparing it.
            crate::strategy::default_pod(new);
            pod::check_update(new, old)
        }
        // Only metadata changes through the main resource, as upstream's csrStrategy.
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            new["spec"] = old.get("spec").cloned().unwrap_or(Value::Null);
            Vec::new()
        }
        ("", "Secret") => {
            config::prepare_secret(new);
            config::check_update(new, old, true)
        }
        _ if is_workload(kind) => {
            workloads::defaults(kind.kind, new);
            immutable::check_update(kind.kind, new, old)
        }
        ("", "PodTemplate") => {
            workloads::defaults(kind.kind, new);
            Vec::new()
        }
        ("", "PersistentVolume") => {
            storage::defaults(kind.kind, new);
            storage::check_volume_update(new, old)
        }
        ("", "PersistentVolumeClaim") => {
            storage::defaults(kind.kind, new);
            storage::check_claim_update(new, old)
        }
        ("storage.k8s.io", "StorageClass") => {
            storage::defaults(kind.kind, new);
            storage::check_class_update(new, old)
        }
        _ => Vec::new(),
    };
    if causes.is_empty() {
        return Ok(());
    }
    let name = meta_str(new, "name").unwrap_or("");
    Err(ApiError::invalid(kind.group, kind.kind, name, causes))
}

/// The kind family's own checks of an object about to be stored.
pub fn check(kind: &Kind, object: &Value) -> Vec<Cause> {
    match (kind.group, kind.kind) {
        ("certificates.k8s.io", "CertificateSigningRequest") => csr::check(object),
        ("", "Service") => service::check(object),
        ("events.k8s.io", "Event") => crate::events::check(object),
        ("", "ConfigMap") => config::check(object, false),
        ("", "Secret") => config::check(object, true),
        _ if is_workload(kind) => workloads::check(kind.kind, object),
        ("", "PersistentVolume") => storage::check_volume(object),
        ("", "PersistentVolumeClaim") => storage::check_claim(object),
        ("storage.k8s.io", "StorageClass") => storage::check_class(object),
        ("networking.k8s.io", "Ingress") => networking::check_ingress(object),
        ("networking.k8s.io", "NetworkPolicy") => networking::check_network_policy(object),
        _ => Vec::new(),
    }
}

/// Allocates what the object needs from shared ranges (Services' ClusterIPs and nodePorts),
/// after validation and before the store; `old` is the stored object on an update.
pub async fn allocate(
    server: &ApiServer,
    kind: &Kind,
    object: &mut Value,
    old: Option<&Value>,
) -> ApiResult<Allocated> {
    if !is_service(kind) {
        return Ok(Allocated::default());
    }
    service_alloc::allocate(server, object, old).await
}

/// Gives back what [`allocate`] took, when the write did not happen.
pub async fn release(server: &ApiServer, allocated: Allocated) {
    service_alloc::release(server, allocated).await;
}

/// After an update was stored: releases what the old object held and the new one does not.
pub async fn after_update(server: &ApiServer, kind: &Kind, old: &Value, new: &Value) {
    if is_service(kind) {
        service_alloc::release_unused(server, old, Some(new)).await;
    }
}

/// After an object was removed from the store: releases what it held.
pub async fn after_delete(server: &ApiServer, kind: &Kind, old: &Value) {
    if is_service(kind) {
        service_alloc::release_unused(server, old, None).await;
    }
}

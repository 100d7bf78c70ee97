//! What the replica controller needs of its owner kind: ReplicaSet (apps/v1) and
//! ReplicationController (v1) run the same logic over differently shaped specs.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::selector::Selector;

/// A ReplicaFailure (or other) condition of a replica owner's status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerCondition {
    /// The condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The status both kinds share (same JSON shape).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Active pods owned.
    #[serde(default)]
    pub replicas: i32,
    /// Of those, pods with every label of the template.
    #[serde(default)]
    pub fully_labeled_replicas: i32,
    /// Ready pods.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods ready for at least minReadySeconds.
    #[serde(default)]
    pub available_replicas: i32,
    /// The generation last acted upon.
    #[serde(default)]
    pub observed_generation: i64,
    /// Conditions (ReplicaFailure).
    #[serde(default)]
    pub conditions: Vec<OwnerCondition>,
}

/// A kind that owns pods through a replica count, a selector and a template.
pub trait ReplicaKind:
    kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// The apiVersion of owner references.
    const API_VERSION: &'static str;
    /// The kind of owner references.
    const KIND: &'static str;
    /// The events' reporting component.
    const COMPONENT: &'static str;

    /// `spec.replicas` (1 when unset).
    fn replicas(&self) -> i32;
    /// The selector; `None` when it cannot be parsed.
    fn selector(&self) -> Option<Selector>;
    /// The pod template.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// `spec.minReadySeconds`.
    fn min_ready_seconds(&self) -> i32;
    /// The current status.
    fn replica_status(&self) -> ReplicaStatus;
}

fn status_of<S: Serialize>(status: Option<&S>) -> ReplicaStatus {
    status
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

impl ReplicaKind for ReplicaSet {
    const API_VERSION: &'static str = "apps/v1";
    const KIND: &'static str = "ReplicaSet";
    const COMPONENT: &'static str = "replicaset-controller";

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn selector(&self) -> Option<Selector> {
        Selector::from_label_selector(&self.spec.as_ref()?.selector)
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn replica_status(&self) -> ReplicaStatus {
        status_of(self.status.as_ref())
    }
}

impl ReplicaKind for ReplicationController {
    const API_VERSION: &'static str = "v1";
    const KIND: &'static str = "ReplicationController";
    const COMPONENT: &'static str = "replication-controller";

    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn selector(&self) -> Option<Selector> {
        let spec = self.spec.as_ref()?;
        // An RC without a selector selects its template's labels (as the API server defaults).
        match spec.selector.as_ref().filter(|s| !s.is_empty()) {
            Some(selector) => Some(Selector::from_map(selector)),
            None => Some(Selector::from_map(
                spec.template.as_ref()?.metadata.as_ref()?.labels.as_ref()?,
            )),
        }
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }

    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    fn replica_status(&self) -> ReplicaStatus {
        status_of(self.status.as_ref())
    }
}

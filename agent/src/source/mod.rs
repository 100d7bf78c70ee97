//! Pod sources, merged into one desired set as the kubelet's config mux does.
//!
//! Each source (the manifest directory, the API server) sends full snapshots of its
//! pods as [`SourceUpdate`]s on one mpsc channel; [`PodConfig`] keeps the latest snapshot per
//! source and turns them into the desired set, keyed by UID, and the changes since the last set.
//! Because a static pod's UID is a hash of its content, an edited manifest is a removal plus an
//! addition, which is what recreates the pod.
//!
//! ```no_run
//! # async fn wire(config: capstan_agent::config::AgentConfig) {
//! use capstan_agent::source::{FileSource, PodConfig, SourceName};
//! let (tx, rx) = tokio::sync::mpsc::channel(16);
//! let mut sources = Vec::new();
//! if let Some(files) = FileSource::from_config(&config) {
//!     files.spawn(tx.clone());
//!     sources.push(SourceName::File);
//! }
//! let mut desired = PodConfig::spawn(sources, rx);
//! while let Some(update) = desired.recv().await {
//!     // update.changes.added / removed / updated name UIDs in update.pods
//! }
//! # }
//! ```

pub mod api;
mod defaults;
pub mod file;
mod merge;
pub mod static_pod;
mod validation;
mod watch;

use std::fmt;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;

pub use api::ApiSource;
pub use defaults::{SYSTEM_CLUSTER_CRITICAL, SYSTEM_NODE_CRITICAL, apply_defaults};
pub use file::FileSource;
pub use merge::{DesiredPod, PodChanges, PodConfig, PodSetUpdate};
pub use validation::{FieldError, validate_pod};

/// Annotation holding the hash a static pod's UID derives from.
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// The annotation marking a mirror pod: the API server's copy of a static pod, holding the
/// static pod's config hash.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Annotation naming the source a pod came from (`file`, `api`).
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// Annotation holding when the agent first saw the pod (RFC 3339).
pub const CONFIG_SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";

/// Where pods come from. The order is the merge priority: when two sources name the same pod,
/// the earlier source's wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SourceName {
    /// Static pods from the manifest directory.
    File,
    /// Pods bound to this node through the API server.
    Api,
}

impl SourceName {
    /// The value of the `kubernetes.io/config.source` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceName::File => "file",
            SourceName::Api => "api",
        }
    }
}

impl fmt::Display for SourceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A manifest that did not become a pod, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// The field path as the API server names it (`spec.containers[0].image`); empty when the
    /// file as a whole is wrong (unreadable, not YAML).
    pub field: String,
    /// What is wrong, in the API server's words where it has some.
    pub reason: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.field,
                self.reason
            )
        }
    }
}

/// A full snapshot of one source: every pod it wants now, and the manifests it had to refuse.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceUpdate {
    /// Which source.
    pub source: SourceName,
    /// Its pods, each with UID, name, namespace and nodeName set.
    pub pods: Vec<Pod>,
    /// What it refused.
    pub errors: Vec<ManifestError>,
    /// What it accepted but partly ignored (unknown fields), for people to see.
    pub warnings: Vec<ManifestError>,
}

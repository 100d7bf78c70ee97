//! ConfigMaps and Secrets that volumes and env refer to. Standalone, they come from manifests in
//! a directory; under an API server, from its watch cache: both implement [`ObjectLookup`].

mod dir;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};

pub use dir::ObjectDir;

/// Finds ConfigMaps and Secrets by namespace and name.
pub trait ObjectLookup: Send + Sync {
    /// The ConfigMap `namespace/name`, if it exists.
    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap>;
    /// The Secret `namespace/name`, if it exists.
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret>;
}

/// No objects at all: what a node with neither an object directory nor an API server sees.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObjects;

impl ObjectLookup for NoObjects {
    fn config_map(&self, _namespace: &str, _name: &str) -> Option<ConfigMap> {
        None
    }
    fn secret(&self, _namespace: &str, _name: &str) -> Option<Secret> {
        None
    }
}

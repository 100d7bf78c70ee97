//! ConfigMaps, Secrets and service account tokens that volumes, env and image pulls refer to.
//! Standalone, ConfigMaps and Secrets come from manifests in a directory; under an API server,
//! from a watch per object that the node's pods reference, and tokens from the TokenRequest
//! API: both implement [`ObjectLookup`].

mod api;
mod dir;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccountTokenProjection};
use tokio::sync::mpsc;

pub use api::ApiObjects;
pub use dir::ObjectDir;

/// Finds ConfigMaps and Secrets by namespace and name, and the tokens of pods' projected
/// volumes. Lookups are synchronous: what a lookup source fetches over the network it fetches
/// in [`ObjectLookup::track`], which the pod workers await before they read.
pub trait ObjectLookup: Send + Sync {
    /// The ConfigMap `namespace/name`, if it exists.
    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap>;
    /// The Secret `namespace/name`, if it exists.
    fn secret(&self, namespace: &str, name: &str) -> Option<Secret>;

    /// The token a serviceAccountToken projection of `pod` holds, or why there is none.
    fn service_account_token(
        &self,
        _pod: &Pod,
        _projection: &ServiceAccountTokenProjection,
    ) -> Result<String, String> {
        Err("not supported: a standalone node has no token issuer".into())
    }

    /// Starts following what `pod` refers to and returns once it is known (or after a short
    /// wait), with the pod's tokens fetched or refreshed when due. Called before every sync of
    /// the pod, so it must be cheap when nothing changed.
    fn track<'a>(&'a self, _pod: &'a Pod) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// The pod `uid` is gone: what only it referred to is not followed any more.
    fn forget(&self, _uid: &str) {}

    /// The UIDs of pods whose referenced objects changed, for the node to wake their workers.
    /// Only the first call gets the receiver.
    fn take_changes(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        None
    }
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

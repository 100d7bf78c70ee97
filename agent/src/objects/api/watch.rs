//! One watched object: a list and watch of `metadata.name=<name>` in its namespace (the
//! kubelet's watch-based manager, configMapAndSecretChangeDetectionStrategy: Watch), feeding
//! what it sees into the shared cache until the cache aborts it. An immutable object is
//! watched no further once seen: it cannot change.

use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

use super::refs::{Key, Kind};
use super::{Inner, Object};

/// Starts following `key`; the task ends when aborted, or after an immutable object is seen.
pub fn spawn(inner: Arc<Inner>, key: Key) -> tokio::task::AbortHandle {
    let client = inner.client.clone();
    let task = match key.kind {
        Kind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client, &key.namespace);
            tokio::spawn(follow(inner, key, api, Object::ConfigMap))
        }
        Kind::Secret => {
            let api: Api<Secret> = Api::namespaced(client, &key.namespace);
            tokio::spawn(follow(inner, key, api, Object::Secret))
        }
    };
    task.abort_handle()
}

async fn follow<K>(inner: Arc<Inner>, key: Key, api: Api<K>, wrap: fn(K) -> Object)
where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut listing: Option<Option<K>> = None;
    let mut failures = 0u32;
    while let Some(event) = stream.next().await {
        let seen = match event {
            Ok(Event::Init) => {
                listing = Some(None);
                continue;
            }
            Ok(Event::InitApply(object)) => {
                if let Some(listed) = listing.as_mut() {
                    *listed = Some(object);
                }
                continue;
            }
            Ok(Event::InitDone) => listing.take().flatten(),
            Ok(Event::Apply(object)) => Some(object),
            Ok(Event::Delete(_)) => None,
            Err(error) => {
                failures += 1;
                // The first failure says why; retries of the same one would only repeat it.
                if failures == 1 {
                    tracing::warn!(kind = ?key.kind, namespace = %key.namespace, name = %key.name, %error, "watching an object pods refer to failed; retrying");
                } else {
                    tracing::debug!(kind = ?key.kind, namespace = %key.namespace, name = %key.name, %error, "watch retry failed");
                }
                continue;
            }
        };
        failures = 0;
        let seen = seen.map(wrap);
        let immutable = seen.as_ref().is_some_and(Object::immutable);
        if !inner.observe(&key, seen) || immutable {
            return;
        }
    }
}

//! A watch that keeps a reflector store current and queues the keys each change concerns, only
//! after the store holds the change (so a sync never reads older state than its trigger).

use std::fmt::Debug;
use std::hash::Hash;

use futures::StreamExt;
use kube::Api;
use kube::Resource;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

use std::sync::Arc;

use crate::queue::{Key, WorkQueue};

/// Watches `api`, applying every event to `writer` and queueing `map(object)`; on a (re)list
/// the keys of every listed object are queued once the list is complete. Runs until dropped.
pub async fn feed<K, F>(api: Api<K>, mut writer: Writer<K>, queue: Arc<WorkQueue>, map: F)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
    F: Fn(&K) -> Vec<Key>,
{
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listed: Vec<Key> = Vec::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::debug!(%error, "watch failed; retrying");
                continue;
            }
        };
        writer.apply_watcher_event(&event);
        match &event {
            Event::Apply(object) | Event::Delete(object) => {
                for key in map(object) {
                    queue.add(key);
                }
            }
            Event::Init => listed.clear(),
            Event::InitApply(object) => listed.extend(map(object)),
            Event::InitDone => {
                for key in listed.drain(..) {
                    queue.add(key);
                }
            }
        }
    }
}

//! Watch caches: a reflector's store and the stream of its events, which the controllers
//! map to the keys they sync.

use std::fmt::Debug;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

/// A cache of every `K` and the changes to it (`Apply` / `Delete`, and the initial list as
/// `InitApply`), with watch failures retried under back-off and logged.
pub fn informer<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (Store<K>, impl Stream<Item = Event<K>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let events = reflector::reflector(writer, watcher::watcher(api, config).default_backoff())
        .filter_map(|event| async move {
            match event {
                Ok(event) => Some(event),
                Err(error) => {
                    tracing::warn!(kind = K::kind(&()).as_ref(), %error, "watch failed");
                    None
                }
            }
        });
    (reader, events)
}

/// The objects an event is about (none for the list's start and end markers).
pub fn touched<K>(event: Event<K>) -> Option<K> {
    match event {
        Event::Apply(object) | Event::InitApply(object) | Event::Delete(object) => Some(object),
        Event::Init | Event::InitDone => None,
    }
}

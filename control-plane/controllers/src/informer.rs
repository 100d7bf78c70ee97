//! The controllers' watch caches, on kube-rs's watcher and reflector store: the raw event
//! stream of a cache ([`informer`]), a cache whose changes queue keys ([`feed`]), and a cache
//! whose handler sees each change with the object's previous state ([`Cache`] and [`run`]), as
//! client-go's informers do for controllers that need it (labels, controllerRef, readiness
//! before and after).

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

use crate::queue::{Key, WorkQueue};

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

/// What happened to an object.
#[derive(Debug)]
pub enum Change<K> {
    /// Created (`old` is `None`) or updated.
    Applied {
        /// The cached object before, if any.
        old: Option<Arc<K>>,
        /// The object now.
        new: Arc<K>,
    },
    /// Deleted (its last known state).
    Deleted(Arc<K>),
}

/// Watches `api` into `writer`, calling `handle` for each change once the store holds it (so a
/// sync never reads older state than its trigger): changes from a (re)list come when the list
/// is complete, with a deletion for each cached object the list no longer has. Runs until
/// dropped.
async fn watch<K>(
    api: Api<K>,
    mut writer: Writer<K>,
    store: Store<K>,
    mut handle: impl FnMut(Change<K>),
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // The objects of a (re)list so far, with their state before it.
    let mut listed: Vec<(ObjectRef<K>, Option<Arc<K>>)> = Vec::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(kind = %K::kind(&()), %error, "watch failed; retrying with back-off");
                continue;
            }
        };
        match &event {
            Event::Init => {
                listed.clear();
                writer.apply_watcher_event(&event);
            }
            Event::InitApply(object) => {
                let reference = ObjectRef::from_obj(object);
                let old = store.get(&reference);
                listed.push((reference, old));
                writer.apply_watcher_event(&event);
            }
            Event::Apply(object) => {
                let reference = ObjectRef::from_obj(object);
                let old = store.get(&reference);
                writer.apply_watcher_event(&event);
                let new = store
                    .get(&reference)
                    .unwrap_or_else(|| Arc::new(object.clone()));
                handle(Change::Applied { old, new });
            }
            Event::Delete(object) => {
                let reference = ObjectRef::from_obj(object);
                let last = store
                    .get(&reference)
                    .unwrap_or_else(|| Arc::new(object.clone()));
                writer.apply_watcher_event(&event);
                handle(Change::Deleted(last));
            }
            Event::InitDone => {
                let seen: HashSet<&ObjectRef<K>> = listed.iter().map(|(r, _)| r).collect();
                let gone: Vec<Arc<K>> = store
                    .state()
                    .into_iter()
                    .filter(|o| !seen.contains(&ObjectRef::from_obj(o.as_ref())))
                    .collect();
                writer.apply_watcher_event(&event);
                for (reference, old) in listed.drain(..) {
                    if let Some(new) = store.get(&reference) {
                        handle(Change::Applied { old, new });
                    }
                }
                for object in gone {
                    handle(Change::Deleted(object));
                }
                tracing::debug!(kind = %K::kind(&()), "watch cache synced");
            }
        }
    }
}

/// Watches `api`, keeping `writer`'s store current and queueing `map(object)` for each change
/// (see [`watch`] for when). Runs until dropped.
pub async fn feed<K, F>(api: Api<K>, writer: Writer<K>, queue: Arc<WorkQueue>, map: F)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: Fn(&K) -> Vec<Key>,
{
    let store = writer.as_reader();
    watch(api, writer, store, |change| {
        let object = match change {
            Change::Applied { new, .. } => new,
            Change::Deleted(last) => last,
        };
        for key in map(&object) {
            queue.add(key);
        }
    })
    .await;
}

/// The objects of one kind, kept by [`run`].
pub struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    /// Taken by [`run`]: one watch fills a cache.
    writer: Mutex<Option<Writer<K>>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Default for Cache<K> {
    fn default() -> Cache<K> {
        let (store, writer) = reflector::store();
        Cache {
            store,
            writer: Mutex::new(Some(writer)),
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Cache<K> {
    /// The object at `key`.
    pub fn get(&self, key: &Key) -> Option<Arc<K>> {
        self.store
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
    }

    /// Every object in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.store
            .state()
            .into_iter()
            .filter(|o| o.meta().namespace.as_deref().unwrap_or_default() == namespace)
            .collect()
    }

    /// Waits until the first list is in.
    pub async fn wait_synced(&self) {
        if self.store.wait_until_ready().await.is_err() {
            // The watch is gone without having listed: never synced.
            std::future::pending::<()>().await;
        }
    }
}

/// Watches `api` into `cache`, calling `handle` for each change; runs until dropped.
pub async fn run<K>(api: Api<K>, cache: Arc<Cache<K>>, handle: impl FnMut(Change<K>))
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let writer = cache
        .writer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let Some(writer) = writer else {
        tracing::error!(kind = %K::kind(&()), "a watch cache was run twice");
        return;
    };
    watch(api, writer, cache.store.clone(), handle).await;
}

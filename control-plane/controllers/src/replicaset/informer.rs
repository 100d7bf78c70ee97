//! A watch cache that tells its handler what changed (old and new object), as client-go's
//! informers do: controllers need the previous state of an object (labels, controllerRef,
//! readiness) to decide whom to wake.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

use crate::queue::Key;

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

/// The objects of one kind by namespace and name, kept by an informer.
pub struct Cache<K> {
    objects: RwLock<HashMap<String, HashMap<String, Arc<K>>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl<K> Default for Cache<K> {
    fn default() -> Cache<K> {
        Cache {
            objects: RwLock::new(HashMap::new()),
            synced: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl<K: kube::Resource> Cache<K> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, HashMap<String, Arc<K>>>> {
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, HashMap<String, Arc<K>>>> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The object at `key`.
    pub fn get(&self, key: &Key) -> Option<Arc<K>> {
        self.read().get(&key.namespace)?.get(&key.name).cloned()
    }

    /// Every object in `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read()
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Waits until the first list is in.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        // The sender lives as long as the cache, so this only ends when synced.
        let _ = synced.wait_for(|s| *s).await;
    }

    fn put(&self, key: &Key, object: Arc<K>) -> Option<Arc<K>> {
        self.write()
            .entry(key.namespace.clone())
            .or_default()
            .insert(key.name.clone(), object)
    }

    fn remove(&self, key: &Key) -> Option<Arc<K>> {
        let mut objects = self.write();
        let namespace = objects.get_mut(&key.namespace)?;
        let removed = namespace.remove(&key.name);
        if namespace.is_empty() {
            objects.remove(&key.namespace);
        }
        removed
    }

    fn keys(&self) -> Vec<Key> {
        self.read()
            .iter()
            .flat_map(|(ns, m)| m.keys().map(|n| Key::new(ns, n)))
            .collect()
    }
}

/// Watches `api` into `cache`, calling `handle` for each change; runs until dropped.
pub async fn run<K>(api: Api<K>, cache: Arc<Cache<K>>, mut handle: impl FnMut(Change<K>))
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    // Keys seen during a (re)list: those cached but not seen were deleted meanwhile.
    let mut listed: HashSet<Key> = HashSet::new();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(kind = %K::kind(&Default::default()), %error, "watch failed; retrying with back-off");
                continue;
            }
        };
        match event {
            Event::Init => listed.clear(),
            Event::InitApply(object) | Event::Apply(object) => {
                let key = Key::of(object.meta());
                listed.insert(key.clone());
                let new = Arc::new(object);
                let old = cache.put(&key, Arc::clone(&new));
                handle(Change::Applied { old, new });
            }
            Event::Delete(object) => {
                let key = Key::of(object.meta());
                let last = cache.remove(&key).unwrap_or_else(|| Arc::new(object));
                handle(Change::Deleted(last));
            }
            Event::InitDone => {
                for key in cache.keys() {
                    if !listed.contains(&key)
                        && let Some(gone) = cache.remove(&key)
                    {
                        handle(Change::Deleted(gone));
                    }
                }
                listed.clear();
                tracing::debug!(kind = %K::kind(&Default::default()), "watch cache synced");
                cache.synced.send_replace(true);
            }
        }
    }
}

//! The served kinds as a swappable snapshot: the built-in rows, `customresourcedefinitions`,
//! and every established definition's versions. Each request clones the snapshot once and
//! routes against it; a definition written through this server is served when the write
//! answers, one written through another server on the store once the store watch tells.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use capstan_store::{ListOptions, Revision, Store, StoreError};
use futures::StreamExt;
use serde_json::Value;

use super::{cleanup, definition, naming};
use crate::kinds::KindTable;

/// How long the watch waits before relisting after the store failed it.
const RETRY: Duration = Duration::from_secs(1);

/// How often the watch checks that its server still exists.
const ALIVE_CHECK: Duration = Duration::from_secs(5);

/// The storage prefix of the definitions.
pub fn definitions_prefix() -> String {
    super::definition_kind().prefix()
}

/// Stamps of served tables, unique in the process: two registries (two servers in one
/// process) never share one, so caches keyed by a stamp can't mix their tables up.
static STAMPS: AtomicU64 = AtomicU64::new(1);

fn next_stamp() -> u64 {
    STAMPS.fetch_add(1, Ordering::Relaxed)
}

/// The kinds a server serves, rebuilt as definitions come and go.
#[derive(Debug)]
pub struct Registry {
    builtin: KindTable,
    /// The table, the store revision it was built at (an older listing never replaces it) and
    /// its stamp, which changes only when the table's content does.
    served: RwLock<(Revision, Arc<KindTable>, u64)>,
    /// Definitions whose cleanup runs in this process.
    cleaning: Mutex<HashSet<String>>,
}

impl Registry {
    /// A registry serving `builtin` and `customresourcedefinitions`, no definitions yet.
    pub fn new(builtin: KindTable) -> Registry {
        let table = Arc::new(build(&builtin, &[], &HashMap::new()));
        Registry {
            builtin,
            served: RwLock::new((-1, table, next_stamp())),
            cleaning: Mutex::new(HashSet::new()),
        }
    }

    /// The table to route one request against.
    pub fn table(&self) -> Arc<KindTable> {
        let served = self.served.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&served.1)
    }

    /// The table and its stamp, read together: the stamp is unique in the process to this
    /// content of this registry's table, so what is derived from the table (the OpenAPI
    /// documents) can be cached by it without looking at the table.
    pub fn snapshot(&self) -> (u64, Arc<KindTable>) {
        let served = self.served.read().unwrap_or_else(|e| e.into_inner());
        (served.2, Arc::clone(&served.1))
    }

    /// Reads every definition from the store and serves what they define; starts the cleanup
    /// of those being deleted. Returns the revision read at.
    pub async fn reload(self: &Arc<Self>, store: &Arc<dyn Store>) -> Result<Revision, StoreError> {
        let page = store
            .list(&definitions_prefix(), ListOptions::default())
            .await?;
        let definitions: Vec<Value> = page
            .items
            .iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        let refused = naming::conflicts(&definitions);
        let table = Arc::new(build(&self.builtin, &definitions, &refused));
        {
            let mut served = self.served.write().unwrap_or_else(|e| e.into_inner());
            if page.revision >= served.0 {
                // A reload that changed nothing served (a status write, say) keeps the stamp,
                // so the documents are not rebuilt for it.
                let stamp = if served.1.all() == table.all() {
                    served.2
                } else {
                    next_stamp()
                };
                *served = (page.revision, table, stamp);
            }
        }
        for crd in definitions
            .iter()
            .filter(|d| d.pointer("/metadata/deletionTimestamp").is_some())
        {
            self.start_cleanup(store, crd);
        }
        for crd in &definitions {
            let name = crd
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            if let Some(conflict) = refused.get(name).filter(|c| !naming::reported(crd, c)) {
                let (store, name, conflict) =
                    (Arc::clone(store), name.to_string(), conflict.clone());
                // Written after the reload answers: the write comes back through the watch.
                tokio::spawn(async move { naming::report(&store, &name, &conflict).await });
            }
        }
        Ok(page.revision)
    }

    fn start_cleanup(self: &Arc<Self>, store: &Arc<dyn Store>, crd: &Value) {
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        {
            let mut cleaning = self.cleaning.lock().unwrap_or_else(|e| e.into_inner());
            if !cleaning.insert(name.clone()) {
                return;
            }
        }
        let registry = Arc::clone(self);
        let store = Arc::clone(store);
        tokio::spawn(async move {
            cleanup::run(&store, &name).await;
            registry
                .cleaning
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
            // The definition is gone (or another server finished it): serve what is left.
            if let Err(error) = registry.reload(&store).await {
                tracing::warn!(%error, "could not reload the definitions after a cleanup");
            }
        });
    }

    /// Keeps the registry current with the definitions in `store` from `from` on, for as long
    /// as the registry lives.
    pub fn spawn_watch(self: &Arc<Self>, store: Arc<dyn Store>, from: Revision) {
        let registry = Arc::downgrade(self);
        tokio::spawn(watch(registry, store, from));
    }
}

async fn watch(registry: Weak<Registry>, store: Arc<dyn Store>, mut from: Revision) {
    let prefix = definitions_prefix();
    loop {
        match store.watch(&prefix, from).await {
            Ok(mut events) => {
                let mut alive = tokio::time::interval(ALIVE_CHECK);
                loop {
                    let event = tokio::select! {
                        event = events.next() => event,
                        // A dropped server's watch ends without waiting for a definition change.
                        _ = alive.tick() => {
                            if registry.strong_count() == 0 {
                                return;
                            }
                            continue;
                        }
                    };
                    let Some(event) = event else { break };
                    let Some(live) = registry.upgrade() else {
                        return;
                    };
                    match event {
                        Ok(event) => {
                            from = event.revision();
                            if let Err(error) = live.reload(&store).await {
                                tracing::warn!(%error, "could not reload the definitions");
                            }
                        }
                        Err(error) => {
                            tracing::debug!(%error, "definition watch ended; relisting");
                            break;
                        }
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "definition watch failed; relisting"),
        }
        tokio::time::sleep(RETRY).await;
        let Some(live) = registry.upgrade() else {
            return;
        };
        match live.reload(&store).await {
            Ok(revision) => from = revision,
            Err(error) => tracing::warn!(%error, "could not relist the definitions"),
        }
    }
}

/// The table of the built-in kinds, `customresourcedefinitions` and the kinds `definitions`
/// serve (a custom kind never shadows a built-in one).
fn build(
    builtin: &KindTable,
    definitions: &[Value],
    refused: &HashMap<String, naming::Conflict>,
) -> KindTable {
    let mut kinds = builtin.all().to_vec();
    kinds.push(super::definition_kind());
    for crd in definitions {
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if refused.contains_key(name) {
            continue;
        }
        for kind in definition::kinds_of(crd) {
            let taken = kinds.iter().any(|k| {
                k.group == kind.group && k.version == kind.version && k.plural == kind.plural
            });
            if !taken {
                kinds.push(kind);
            }
        }
    }
    KindTable::new(kinds)
}

//! Recounting quotas: `status.hard` from `spec.hard` and `status.used` from what the namespace
//! holds. kube leaves this to its quota controller; here a task in the API server does it,
//! watching the store: when a quota is made or its spec changes, when an object is changed or
//! deleted in a namespace with quotas, and every [`RESYNC`] (kube's controller resyncs too).
//!
//! Creates are charged by admission before the object is stored. So that a recount running
//! in between does not forget them, admission records such charges as pending until the
//! object's create is seen (or [`PENDING_FOR`] passes: the create failed after the charge).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use capstan_store::{ListOptions, StoreError, WatchEvent};
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};

use super::{namespace_lock, quota_kind, to_json, usage};
use crate::admission::resources::{self, ResourceList};
use crate::kinds::Kind;
use crate::quantity::Quantity;
use crate::rest;
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult};

/// How often every quota is recounted regardless of events.
pub const RESYNC: Duration = Duration::from_secs(30);

/// How long a charge waits for its object to be stored before recounts drop it.
pub const PENDING_FOR: Duration = Duration::from_secs(30);

/// A create charged but not yet seen stored.
#[derive(Clone)]
struct Pending {
    key: String,
    kind: Kind,
    object: Value,
    at: Instant,
}

type PendingMap = HashMap<(usize, String), Vec<Pending>>;

static PENDING: LazyLock<Mutex<PendingMap>> = LazyLock::new(Default::default);

fn store_id(server: &ApiServer) -> usize {
    Arc::as_ptr(&server.store) as *const () as usize
}

fn pending() -> std::sync::MutexGuard<'static, PendingMap> {
    match PENDING.lock() {
        Ok(map) => map,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Records that `object` (to be stored at `key`) was charged in `namespace`.
pub(crate) fn add_pending(
    server: &ApiServer,
    namespace: &str,
    kind: &Kind,
    key: String,
    object: &Value,
) {
    let mut map = pending();
    let list = map
        .entry((store_id(server), namespace.to_string()))
        .or_default();
    list.retain(|p| p.at.elapsed() < PENDING_FOR);
    list.push(Pending {
        key,
        kind: kind.clone(),
        object: object.clone(),
        at: Instant::now(),
    });
}

fn seen_stored(server: &ApiServer, namespace: &str, key: &str) {
    if let Some(list) = pending().get_mut(&(store_id(server), namespace.to_string())) {
        list.retain(|p| p.key != key);
    }
}

fn pending_in(server: &ApiServer, namespace: &str) -> Vec<Pending> {
    pending()
        .get(&(store_id(server), namespace.to_string()))
        .map(|list| {
            list.iter()
                .filter(|p| p.at.elapsed() < PENDING_FOR)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// What `quota` counts in `namespace` now: its hard limits and their usage.
async fn count(
    server: &ApiServer,
    namespace: &str,
    quota: &Value,
) -> ApiResult<(ResourceList, ResourceList)> {
    let hard = resources::resource_list(quota.pointer("/spec/hard"));
    let mut used: ResourceList = hard.keys().map(|k| (k.clone(), Quantity::ZERO)).collect();
    let pending = pending_in(server, namespace);
    for kind in server.kinds().all().iter().filter(|k| k.namespaced) {
        let tracked: Vec<String> = hard
            .keys()
            .filter(|r| usage::tracks(kind, r))
            .cloned()
            .collect();
        if tracked.is_empty() {
            continue;
        }
        let listed = server
            .store
            .list(
                &kind.namespace_prefix(Some(namespace)),
                ListOptions::default(),
            )
            .await
            .map_err(|e| rest::store_error(e, kind, ""))?;
        let mut objects = Vec::new();
        let mut keys = BTreeSet::new();
        for kv in &listed.items {
            keys.insert(kv.key.clone());
            objects.push(rest::decode(kv)?);
        }
        objects.extend(
            pending
                .iter()
                .filter(|p| p.kind == *kind && !keys.contains(&p.key))
                .map(|p| p.object.clone()),
        );
        for object in objects.iter().filter(|o| usage::in_scope(quota, kind, o)) {
            for (name, quantity) in usage::usage(kind, object) {
                if let Some(sum) = used.get_mut(&name) {
                    *sum = sum.add(&quantity);
                }
            }
        }
    }
    Ok((hard, used))
}

/// Recounts `quota` and writes its status when it changed (with its revision as precondition:
/// a `Conflict` means it changed meanwhile). Returns the quota as stored. The caller holds the
/// namespace's lock.
pub(crate) async fn recount(
    server: &ApiServer,
    quotas: &Kind,
    namespace: &str,
    quota: &Value,
) -> ApiResult<Value> {
    let (hard, used) = count(server, namespace, quota).await?;
    let status = json!({"hard": to_json(&hard), "used": to_json(&used)});
    if quota.get("status") == Some(&status) {
        return Ok(quota.clone());
    }
    let name = crate::strategy::meta_str(quota, "name")
        .unwrap_or("")
        .to_string();
    let revision = quota
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(rest::parse_revision)
        .transpose()?
        .unwrap_or(0);
    let mut updated = quota.clone();
    updated["status"] = status;
    let key = quotas.key(Some(namespace), &name);
    let stored = server
        .store
        .update(&key, rest::encode(&updated), revision)
        .await
        .map_err(|e| rest::store_error(e, quotas, &name))?;
    tracing::debug!(quota = %key, "recounted");
    rest::decode(&stored)
}

/// Recounts every quota of `namespace`, under its lock, re-reading a quota that changed
/// meanwhile.
pub async fn recount_namespace(server: &ApiServer, namespace: &str) -> ApiResult<()> {
    let Some(quotas) = quota_kind(server) else {
        return Ok(());
    };
    let lock = namespace_lock(server, namespace);
    let _serialised = lock.lock().await;
    for quota in resources::list_in(server, "", "resourcequotas", namespace).await? {
        let name = crate::strategy::meta_str(&quota, "name")
            .unwrap_or("")
            .to_string();
        let mut current = quota;
        for _ in 0..super::ATTEMPTS {
            match recount(server, quotas, namespace, &current).await {
                Err(ApiError {
                    reason: "Conflict", ..
                }) => match rest::get_object(server, quotas, Some(namespace), &name).await {
                    Ok((fresh, _)) => current = fresh,
                    Err(ApiError { code: 404, .. }) => break,
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
                Ok(_) => break,
            }
        }
    }
    Ok(())
}

/// Starts the recounting task for `server`; it ends when the server is dropped. The store's
/// revision is read first, so that writes made right after are not missed however late the
/// task first runs.
pub async fn start(server: &Arc<ApiServer>) -> tokio::task::JoinHandle<()> {
    let mut from = match server.store.revision().await {
        Ok(revision) => Some(revision),
        Err(error) => {
            tracing::warn!(%error, "quota recounting starts later");
            None
        }
    };
    let weak = Arc::downgrade(server);
    tokio::spawn(async move {
        loop {
            match watch(&weak, from.take()).await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "quota recounting restarts");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}

/// The namespace of a key of a namespaced kind, with the kind.
fn locate<'a>(server: &'a ApiServer, key: &str) -> Option<(&'a Kind, String)> {
    server
        .kinds()
        .all()
        .iter()
        .filter(|k| k.namespaced)
        .find_map(|kind| {
            let rest = key.strip_prefix(&kind.prefix())?;
            let (namespace, _) = rest.split_once('/')?;
            Some((kind, namespace.to_string()))
        })
}

/// What the stored bytes of an object of `kind` charge; nothing when they are not JSON.
fn charged(kind: &Kind, bytes: &[u8]) -> ResourceList {
    serde_json::from_slice::<Value>(bytes)
        .map(|object| usage::usage(kind, &object))
        .unwrap_or_default()
}

fn spec_of(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(bytes)
        .ok()?
        .get("spec")
        .cloned()
}

/// One watch of the store: recounts everything, then what events touch. `Ok` when the server
/// is gone, `Err` when the watch broke (compaction, store trouble) and must start again.
/// `from` is the revision to start at, the store's current one when `None`.
async fn watch(weak: &Weak<ApiServer>, from: Option<i64>) -> Result<(), StoreError> {
    let (mut events, mut with_quotas) = {
        let Some(server) = weak.upgrade() else {
            return Ok(());
        };
        let Some(quotas) = quota_kind(&server).cloned() else {
            return Ok(());
        };
        let start = match from {
            Some(revision) => revision,
            None => server.store.revision().await?,
        };
        let listed = server
            .store
            .list(
                &quotas.prefix(),
                ListOptions {
                    revision: Some(start),
                    ..Default::default()
                },
            )
            .await?;
        let namespaces: BTreeSet<String> = listed
            .items
            .iter()
            .filter_map(|kv| locate(&server, &kv.key).map(|(_, ns)| ns))
            .collect();
        for namespace in &namespaces {
            if let Err(error) = recount_namespace(&server, namespace).await {
                tracing::warn!(%namespace, %error, "quota recount failed");
            }
        }
        (server.store.watch("/registry/", start).await?, namespaces)
    };
    let mut resync = tokio::time::interval(RESYNC);
    resync.tick().await;
    loop {
        let mut dirty = BTreeSet::new();
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else {
                    return Err(StoreError::Unavailable("watch ended".into()));
                };
                let mut batch = vec![event?];
                // Coalesce what is already queued into one recount per namespace.
                while let Some(Some(more)) = events.next().now_or_never() {
                    batch.push(more?);
                }
                let Some(server) = weak.upgrade() else {
                    return Ok(());
                };
                for event in &batch {
                    note(&server, event, &mut with_quotas, &mut dirty);
                }
            }
            _ = resync.tick() => {
                dirty.extend(with_quotas.iter().cloned());
            }
        }
        let Some(server) = weak.upgrade() else {
            return Ok(());
        };
        for namespace in dirty {
            if let Err(error) = recount_namespace(&server, &namespace).await {
                tracing::warn!(%namespace, %error, "quota recount failed");
            }
        }
    }
}

/// What one event asks for: quotas made or respecified, objects changed or deleted where
/// quotas are, mark their namespace; an object's create settles its pending charge.
fn note(
    server: &ApiServer,
    event: &WatchEvent,
    with_quotas: &mut BTreeSet<String>,
    dirty: &mut BTreeSet<String>,
) {
    let Some((kind, namespace)) = locate(server, event.key()) else {
        return;
    };
    let is_quota = kind.group.is_empty() && kind.plural == "resourcequotas";
    match event {
        WatchEvent::Put { kv, prev } if is_quota => {
            with_quotas.insert(namespace.clone());
            let respecified = prev
                .as_ref()
                .is_none_or(|p| spec_of(&p.value) != spec_of(&kv.value));
            if respecified {
                dirty.insert(namespace);
            }
        }
        WatchEvent::Put { kv, prev: None } => seen_stored(server, &namespace, &kv.key),
        // Most updates (a pod's status, a lease's renewal) charge the same as before.
        WatchEvent::Put {
            kv,
            prev: Some(prev),
        } if with_quotas.contains(&namespace)
            && charged(kind, &kv.value) != charged(kind, &prev.value) =>
        {
            dirty.insert(namespace);
        }
        WatchEvent::Delete { .. } if with_quotas.contains(&namespace) => {
            dirty.insert(namespace);
        }
        _ => {}
    }
}

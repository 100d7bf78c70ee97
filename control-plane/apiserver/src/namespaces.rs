//! Namespace deletion: the namespace turns `Terminating`, and until the namespace controller
//! exists a task here does its job: deletes what the namespace holds, then the namespace.

use std::sync::Arc;
use std::time::Duration;

use capstan_store::{ListOptions, Store, StoreError};
use serde_json::{Value, json};

use crate::kinds::{Kind, KindTable};
use crate::rest;
use crate::server::ApiServer;
use crate::status::ApiResult;
use crate::strategy;

/// How often the cleanup retries while objects with finalizers remain.
const CLEANUP_RETRY: Duration = Duration::from_secs(1);

/// Marks the namespace terminating (deletionTimestamp, `status.phase: Terminating`) and starts
/// its cleanup. Answers 200 with the namespace, as upstream.
pub async fn terminate(
    server: &ApiServer,
    kind: &Kind,
    current: Value,
    revision: i64,
    dry_run: bool,
) -> ApiResult<(u16, Value)> {
    let name = strategy::meta_str(&current, "name")
        .unwrap_or("")
        .to_string();
    if current.pointer("/metadata/deletionTimestamp").is_some() {
        return Ok((200, current));
    }
    let mut marked = current;
    let meta = strategy::metadata_mut(&mut marked);
    meta.insert("deletionTimestamp".into(), json!(strategy::now()));
    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
    marked["status"] = json!({"phase": "Terminating"});
    if dry_run {
        return Ok((200, marked));
    }
    let key = kind.key(None, &name);
    let stored = server
        .store
        .update(&key, rest::encode(&marked), revision)
        .await
        .map_err(|e| rest::store_error(e, kind, &name))?;
    let store = Arc::clone(&server.store);
    let kinds = (*server.served()).clone();
    tokio::spawn(async move { cleanup(store, kinds, name).await });
    Ok((200, rest::decode(&stored)?))
}

/// Deletes the namespace's contents until none is left, then the namespace.
async fn cleanup(store: Arc<dyn Store>, kinds: KindTable, namespace: String) {
    loop {
        match delete_contents(store.as_ref(), &kinds, &namespace).await {
            Ok(0) => break,
            Ok(left) => {
                tracing::debug!(%namespace, left, "namespace still holds objects with finalizers")
            }
            Err(error) => tracing::warn!(%namespace, %error, "namespace cleanup failed; retrying"),
        }
        tokio::time::sleep(CLEANUP_RETRY).await;
    }
    let Some(namespaces) = kinds.find("", "v1", "namespaces") else {
        return;
    };
    let key = namespaces.key(None, &namespace);
    match store.delete(&key, None).await {
        Ok(_) => tracing::info!(%namespace, "namespace deleted"),
        Err(StoreError::NotFound(_)) => {}
        Err(error) => tracing::warn!(%namespace, %error, "could not delete namespace"),
    }
}

/// Deletes every object of every namespaced kind in `namespace`; marks those with finalizers
/// deleted and counts them as left.
async fn delete_contents(
    store: &dyn Store,
    kinds: &KindTable,
    namespace: &str,
) -> Result<usize, StoreError> {
    let mut left = 0;
    for kind in kinds.all().iter().filter(|k| k.namespaced) {
        let listed = store
            .list(
                &kind.namespace_prefix(Some(namespace)),
                ListOptions::default(),
            )
            .await?;
        for kv in listed.items {
            let Ok(mut object) = serde_json::from_slice::<Value>(&kv.value) else {
                // Undecodable bytes cannot hold finalizers anyone honours.
                let _ = store.delete(&kv.key, Some(kv.mod_revision)).await;
                continue;
            };
            let finalizers = object
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
            if !finalizers || !object.is_object() {
                match store.delete(&kv.key, Some(kv.mod_revision)).await {
                    Ok(_) | Err(StoreError::NotFound(_)) => {}
                    Err(_) => left += 1,
                }
                continue;
            }
            left += 1;
            if object.pointer("/metadata/deletionTimestamp").is_none() {
                strategy::metadata_mut(&mut object)
                    .insert("deletionTimestamp".into(), json!(strategy::now()));
                let _ = store
                    .update(&kv.key, object.to_string().into_bytes(), kv.mod_revision)
                    .await;
            }
        }
    }
    Ok(left)
}

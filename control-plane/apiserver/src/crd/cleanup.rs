//! What the `customresourcecleanup.apiextensions.k8s.io` finalizer stands for: a definition
//! being deleted turns `Terminating`, its objects are deleted, then the finalizer goes and with
//! it (when it was the last) the definition.

use std::sync::Arc;
use std::time::Duration;

use capstan_store::{KeyValue, ListOptions, Store, StoreError};
use serde_json::{Value, json};

use super::CLEANUP_FINALIZER;
use crate::strategy;

/// How often the cleanup looks again while objects with finalizers remain.
const RETRY: Duration = Duration::from_millis(500);

/// How many times a write of the definition is retried when it changed meanwhile.
const ATTEMPTS: usize = 10;

fn condition(kind: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": status, "lastTransitionTime": strategy::now(),
           "reason": reason, "message": message})
}

/// Sets condition `new` in the conditions of `crd`, keeping the others.
pub fn set_condition(crd: &mut Value, new: Value) {
    let kind = new.get("type").cloned();
    let status = &mut crd["status"];
    if !status.is_object() {
        *status = json!({});
    }
    let conditions = &mut status["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    if let Some(list) = conditions.as_array_mut() {
        match list.iter_mut().find(|c| c.get("type") == kind.as_ref()) {
            Some(existing) => {
                // An unchanged status keeps its transition time, as upstream's helpers do.
                if existing.get("status") == new.get("status") {
                    let since = existing.get("lastTransitionTime").cloned();
                    *existing = new;
                    if let Some(since) = since {
                        existing["lastTransitionTime"] = since;
                    }
                } else {
                    *existing = new;
                }
            }
            None => list.push(new),
        }
    }
}

async fn read(store: &dyn Store, key: &str) -> Option<(KeyValue, Value)> {
    let kv = store.get(key).await.ok()??;
    let object = serde_json::from_slice(&kv.value).ok()?;
    Some((kv, object))
}

/// Runs the cleanup of the definition `name`, if it is being deleted and still holds the
/// finalizer. Gives up (to be retried on the next change) when the store fails.
pub async fn run(store: &Arc<dyn Store>, name: &str) {
    let key = super::definition_kind().key(None, name);
    let Some((_, crd)) = read(store.as_ref(), &key).await else {
        return;
    };
    let holds = crd
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|x| x == CLEANUP_FINALIZER));
    if crd.pointer("/metadata/deletionTimestamp").is_none() || !holds {
        return;
    }
    let terminating = condition(
        "Terminating",
        "True",
        "InstanceDeletionInProgress",
        "CustomResource deletion is in progress",
    );
    if let Err(error) = change(store.as_ref(), &key, |crd| {
        set_condition(crd, terminating.clone())
    })
    .await
    {
        tracing::warn!(definition = name, %error, "could not mark the definition terminating");
        return;
    }
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let plural = crd
        .pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !group.is_empty() && !plural.is_empty() {
        let prefix = format!("/registry/{group}/{plural}/");
        loop {
            match delete_objects(store.as_ref(), &prefix).await {
                Ok(0) => break,
                Ok(left) => {
                    tracing::debug!(definition = name, left, "objects with finalizers left")
                }
                Err(error) => {
                    tracing::warn!(definition = name, %error, "custom object cleanup failed");
                    return;
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }
    let finished = change(store.as_ref(), &key, |crd| {
        if let Some(list) = crd
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            list.retain(|f| f != CLEANUP_FINALIZER);
        }
    })
    .await;
    match finished {
        Ok(()) => tracing::info!(definition = name, "custom resources deleted"),
        Err(error) => tracing::warn!(definition = name, %error, "could not finish the cleanup"),
    }
}

/// Applies `edit` to the stored definition, retrying on conflicts; deletes it when it is being
/// deleted and no finalizer is left.
async fn change(store: &dyn Store, key: &str, edit: impl Fn(&mut Value)) -> Result<(), StoreError> {
    for _ in 0..ATTEMPTS {
        let Some((kv, mut crd)) = read(store, key).await else {
            return Ok(());
        };
        edit(&mut crd);
        let done = crd
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty());
        let result = if done {
            store.delete(key, Some(kv.mod_revision)).await.map(|_| ())
        } else {
            store
                .update(key, crd.to_string().into_bytes(), kv.mod_revision)
                .await
                .map(|_| ())
        };
        match result {
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) => return Ok(()),
            other => return other,
        }
    }
    Err(StoreError::Unavailable(format!("{key} kept changing")))
}

/// Deletes the objects under `prefix`; those with finalizers are marked deleted and counted.
async fn delete_objects(store: &dyn Store, prefix: &str) -> Result<usize, StoreError> {
    let listed = store.list(prefix, ListOptions::default()).await?;
    let mut left = 0;
    for kv in listed.items {
        let object: Option<Value> = serde_json::from_slice(&kv.value).ok();
        let finalizers = object
            .as_ref()
            .and_then(|o| o.pointer("/metadata/finalizers"))
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        match (object, finalizers) {
            (Some(mut object), true) => {
                left += 1;
                if object.pointer("/metadata/deletionTimestamp").is_none() {
                    strategy::metadata_mut(&mut object)
                        .insert("deletionTimestamp".into(), json!(strategy::now()));
                    let _ = store
                        .update(&kv.key, object.to_string().into_bytes(), kv.mod_revision)
                        .await;
                }
            }
            _ => match store.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(StoreError::Conflict { .. }) => left += 1,
                Err(error) => return Err(error),
            },
        }
    }
    Ok(left)
}

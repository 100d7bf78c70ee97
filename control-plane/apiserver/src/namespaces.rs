//! Namespace deletion as kube-apiserver's namespace registry does it: the first DELETE marks
//! the namespace (deletionTimestamp, `status.phase: Terminating`) and the namespace controller
//! empties it, then removes its `kubernetes` finalizer through `namespaces/finalize`; the
//! namespace goes when neither `spec.finalizers` nor `metadata.finalizers` holds it.

use serde_json::{Value, json};

use crate::kinds::Kind;
use crate::rest;
use crate::server::ApiServer;
use crate::status::ApiResult;
use crate::strategy;

/// Whether nothing holds the namespace any more: no `spec.finalizers`, no
/// `metadata.finalizers`.
pub fn unheld(namespace: &Value) -> bool {
    let empty = |pointer: &str| {
        namespace
            .pointer(pointer)
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty())
    };
    empty("/spec/finalizers") && empty("/metadata/finalizers")
}

/// DELETE of a namespace. The first marks it terminating (with `finalizers` as the deletion's
/// garbage-collection finalizers); a namespace no finalizer holds is deleted. Answers 200
/// with the namespace, as upstream.
pub async fn terminate(
    server: &ApiServer,
    kind: &Kind,
    current: Value,
    revision: i64,
    dry_run: bool,
    finalizers: Option<Vec<String>>,
) -> ApiResult<(u16, Value)> {
    let name = strategy::meta_str(&current, "name")
        .unwrap_or("")
        .to_string();
    let key = kind.key(None, &name);
    let mut marked = current.clone();
    if let Some(finalizers) = &finalizers {
        let meta = strategy::metadata_mut(&mut marked);
        if finalizers.is_empty() {
            meta.remove("finalizers");
        } else {
            meta.insert("finalizers".into(), json!(finalizers));
        }
    }
    if current.pointer("/metadata/deletionTimestamp").is_some() || unheld(&marked) {
        if !unheld(&marked) {
            if marked == current || dry_run {
                return Ok((200, marked));
            }
            let stored = server
                .store
                .update(&key, rest::encode(&marked), revision)
                .await
                .map_err(|e| rest::store_error(e, kind, &name))?;
            return Ok((200, rest::decode(&stored)?));
        }
        if !dry_run {
            server
                .store
                .delete(&key, Some(revision))
                .await
                .map_err(|e| rest::store_error(e, kind, &name))?;
            tracing::debug!(%key, "deleted");
        }
        return Ok((200, current));
    }
    let meta = strategy::metadata_mut(&mut marked);
    meta.insert("deletionTimestamp".into(), json!(strategy::now()));
    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
    if !marked["status"].is_object() {
        marked["status"] = json!({});
    }
    marked["status"]["phase"] = json!("Terminating");
    if dry_run {
        return Ok((200, marked));
    }
    let stored = server
        .store
        .update(&key, rest::encode(&marked), revision)
        .await
        .map_err(|e| rest::store_error(e, kind, &name))?;
    Ok((200, rest::decode(&stored)?))
}

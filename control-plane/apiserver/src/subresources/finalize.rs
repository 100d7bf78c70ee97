//! `namespaces/finalize`: the namespace controller's write of `spec.finalizers`, the only field
//! it changes; a terminating namespace left without finalizers is deleted.

use http::Response;
use serde_json::{Value, json};

use super::{Change, modify, pinned};
use crate::admission::Operation;
use crate::body::{self, ApiBody};
use crate::rest::{self, Call};
use crate::route::Target;
use crate::status::ApiResult;
use crate::strategy;

/// PUT namespaces/finalize.
pub async fn serve(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let requested = body::decode_object(call.content_type.as_deref(), &call.body)?;
    let finalizers = requested
        .pointer("/spec/finalizers")
        .cloned()
        .unwrap_or_else(|| json!([]));
    let how = Change {
        subresource: "finalize",
        operation: Operation::Update,
        pinned: pinned(&requested)?,
    };
    let stored = modify(call, target, how, |current| {
        let mut new = current.clone();
        if !new["spec"].is_object() {
            new["spec"] = json!({});
        }
        match &finalizers {
            Value::Array(list) if list.is_empty() => {
                if let Some(spec) = new["spec"].as_object_mut() {
                    spec.remove("finalizers");
                }
            }
            list => new["spec"]["finalizers"] = list.clone(),
        }
        Ok(new)
    })
    .await?;
    let terminating = stored.pointer("/metadata/deletionTimestamp").is_some();
    if terminating && crate::namespaces::unheld(&stored) && !call.dry_run() {
        // The last finalizer of a terminating namespace went: it goes, as upstream's
        // ShouldDeleteNamespaceDuringUpdate.
        let name = target.name.as_deref().unwrap_or("");
        let revision = strategy::meta_str(&stored, "resourceVersion")
            .map(rest::parse_revision)
            .transpose()?;
        let key = target.kind.key(None, name);
        match call.server.store.delete(&key, revision).await {
            Ok(_) => tracing::debug!(%key, "deleted: its last finalizer was removed"),
            Err(capstan_store::StoreError::NotFound(_)) => {}
            Err(error) => return Err(rest::store_error(error, target.kind, name)),
        }
    }
    Ok(call.object(200, target.kind, &stored))
}

//! `namespaces/finalize`: the namespace controller's write of `spec.finalizers`, the only field
//! it changes.

use http::Response;
use serde_json::{Value, json};

use super::{Change, modify, pinned};
use crate::admission::Operation;
use crate::body::{self, ApiBody};
use crate::rest::Call;
use crate::route::Target;
use crate::status::ApiResult;

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
    Ok(call.object(200, target.kind, &stored))
}

//! LIST: a collection at a revision, filtered by label and field selectors, in pages with
//! `limit` and `continue` tokens (which carry the key to resume after and the revision, so every
//! page is read at the first page's revision).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use capstan_store::{ListOptions, StoreError};
use http::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::body::{self, ApiBody};
use crate::rest::{self, Call};
use crate::route::Target;
use crate::selectors::{FieldSelector, LabelSelector, Selectors};
use crate::status::{ApiError, ApiResult};
use crate::table;

/// The continue token's content, base64 JSON as upstream's.
#[derive(Debug, Serialize, Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

const EXPIRED_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// The selectors of a request.
pub fn selectors(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Selectors> {
    Ok(Selectors {
        labels: LabelSelector::parse(call.param("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(call.param("fieldSelector").unwrap_or(""), target.kind.kind)?,
    })
}

/// The storage prefix a request lists: its namespace's, or one named by
/// `fieldSelector=metadata.namespace=...` on an all-namespaces request.
pub fn prefix(target: &Target<'_>, selectors: &Selectors) -> String {
    let namespace = target
        .namespace
        .as_deref()
        .or_else(|| selectors.fields.required("metadata.namespace"));
    target.kind.namespace_prefix(namespace)
}

fn decode_continue(token: &str) -> ApiResult<ContinueToken> {
    let bad = || ApiError::bad_request("continue key is not valid: invalid continue token");
    let bytes = STANDARD.decode(token).map_err(|_| bad())?;
    let token: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if token.v != "meta.k8s.io/v1" || token.rv <= 0 {
        return Err(bad());
    }
    Ok(token)
}

fn encode_continue(revision: i64, start: &str) -> String {
    let token = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv: revision,
        start: start.to_string(),
    };
    STANDARD.encode(json!(token).to_string())
}

/// The revision a list without a continue token reads at, from `resourceVersion` and
/// `resourceVersionMatch`: `None` for the latest.
fn list_revision(call: &Call<'_>) -> ApiResult<Option<i64>> {
    let rv = call.param("resourceVersion").filter(|rv| !rv.is_empty());
    let matching = call.param("resourceVersionMatch").filter(|m| !m.is_empty());
    match (rv, matching) {
        (None, Some(m)) => Err(ApiError::invalid(
            "meta.k8s.io",
            "ListOptions",
            "",
            vec![crate::status::Cause::invalid(
                "resourceVersionMatch",
                m,
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            )],
        )),
        (None, None) | (Some("0"), None | Some("NotOlderThan")) => Ok(None),
        (Some(rv), Some("Exact")) => Ok(Some(rest::parse_revision(rv)?)),
        (Some(rv), None | Some("NotOlderThan")) => {
            // Not older than rv: the latest is, once the store has reached rv.
            rest::parse_revision(rv)?;
            Ok(None)
        }
        (_, Some(other)) => Err(ApiError::bad_request(format!(
            "unsupported resourceVersionMatch {other:?}"
        ))),
    }
}

/// GET on a collection without `watch`.
pub async fn serve(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let kind = target.kind;
    let selectors = selectors(call, target)?;
    let prefix = prefix(target, &selectors);
    let limit = match call.param("limit").filter(|l| !l.is_empty()) {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?,
        None => 0,
    };
    let (mut revision, mut start) = match call.param("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let token = decode_continue(token)?;
            (Some(token.rv), Some(token.start))
        }
        None => (list_revision(call)?, None),
    };
    if let (None, Some(min)) = (revision, call.param("resourceVersion")) {
        let current = call
            .server
            .store
            .revision()
            .await
            .map_err(|e| rest::store_error(e, kind, ""))?;
        let min = rest::parse_revision(min)?;
        if min > current {
            return Err(rest::store_error(
                StoreError::FutureRevision {
                    requested: min,
                    current,
                },
                kind,
                "",
            ));
        }
    }
    let continued = start.is_some();
    let mut items = Vec::new();
    let mut next = None;
    let mut remaining_count = None;
    loop {
        let wanted = if limit == 0 {
            None
        } else {
            Some(limit - items.len())
        };
        let page = call
            .server
            .store
            .list(
                &prefix,
                ListOptions {
                    revision,
                    start_after: start.clone(),
                    limit: wanted,
                },
            )
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } if continued => ApiError::expired(EXPIRED_CONTINUE),
                e => rest::store_error(e, kind, ""),
            })?;
        revision = Some(page.revision);
        let last_key = page.items.last().map(|kv| kv.key.clone());
        for kv in &page.items {
            let object = crate::events::to_view(kind, rest::decode(kv)?);
            if selectors.matches(&object) {
                items.push(object);
            }
        }
        if page.remaining == 0 || last_key.is_none() {
            break;
        }
        start = last_key;
        if limit > 0 && items.len() >= limit {
            next = start.clone();
            if selectors.is_empty() {
                remaining_count = Some(page.remaining);
            }
            break;
        }
    }
    let revision = revision.unwrap_or(0);
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(start) = next {
        metadata["continue"] = json!(encode_continue(revision, &start));
        if let Some(count) = remaining_count {
            metadata["remainingItemCount"] = json!(count);
        }
    }
    if call.table {
        return Ok(body::json_response(
            200,
            &table::of_objects(kind, &items, Some(metadata)),
        ));
    }
    let list = json!({
        "kind": kind.list_kind(),
        "apiVersion": kind.api_version(),
        "metadata": metadata,
        "items": items,
    });
    Ok(body::object_response(200, &list, call.yaml))
}

/// Every object the request's selectors pick, at the latest revision, and that revision.
pub async fn read_all(call: &Call<'_>, target: &Target<'_>) -> ApiResult<(Vec<Value>, i64)> {
    let selectors = selectors(call, target)?;
    let page = call
        .server
        .store
        .list(&prefix(target, &selectors), ListOptions::default())
        .await
        .map_err(|e| rest::store_error(e, target.kind, ""))?;
    let mut items = Vec::new();
    for kv in &page.items {
        let object = crate::events::to_view(target.kind, rest::decode(kv)?);
        if selectors.matches(&object) {
            items.push(object);
        }
    }
    Ok((items, page.revision))
}

//! LIST: a collection at a revision, filtered by label and field selectors, in pages with
//! `limit` and `continue` tokens (which carry the key to resume after and the revision, so every
//! page is read at the first page's revision).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use capstan_store::{ListOptions, StoreError};
use http::Response;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::body::ApiBody;
use crate::list_items::Items;
use crate::rest::{self, Call};
use crate::route::Target;
use crate::selectors::{FieldSelector, LabelSelector, Selectors};
use crate::status::{ApiError, ApiResult};

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
        fields: match target.kind.custom.as_ref() {
            Some(custom) => FieldSelector::parse_custom(
                call.param("fieldSelector").unwrap_or(""),
                &custom.selectable,
            )?,
            None => {
                FieldSelector::parse(call.param("fieldSelector").unwrap_or(""), target.kind.kind)?
            }
        },
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
    let mut items = Items::new(!call.table && !call.yaml);
    let mut next = None;
    let mut remaining_count = None;
    let from_cache = match cached(call, target, &prefix).await {
        Some((objects, at)) => {
            revision = Some(at);
            (next, remaining_count) = page_of(&objects, &selectors, limit, &mut items)?;
            true
        }
        None => false,
    };
    loop {
        if from_cache {
            break;
        }
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
            let mut object = crate::events::to_view(kind, rest::decode(kv)?);
            crate::crd::read(kind, &mut object);
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
    Ok(items.respond(kind, metadata, call.table, call.yaml))
}

/// The objects under `prefix` from the kind's watch cache, for a first page at
/// `resourceVersion=0` (any recent state will do, as upstream serves it from its cache).
async fn cached(
    call: &Call<'_>,
    target: &Target<'_>,
    prefix: &str,
) -> Option<(Vec<std::sync::Arc<capstan_store::KeyValue>>, i64)> {
    let any = call.param("resourceVersion") == Some("0")
        && call.param("continue").is_none_or(str::is_empty)
        && matches!(
            call.param("resourceVersionMatch"),
            None | Some("") | Some("NotOlderThan")
        );
    if !any {
        return None;
    }
    let cacher = call
        .server
        .caches
        .ready(&call.server.store, &target.kind.prefix())
        .await?;
    let (objects, revision, _) = cacher.snapshot(prefix, false)?;
    Some((objects, revision))
}

/// Fills `items` with the first `limit` (0: all) of `objects` the selectors pick; the key to
/// continue after and, without selectors, how many keys follow it.
fn page_of(
    objects: &[std::sync::Arc<capstan_store::KeyValue>],
    selectors: &Selectors,
    limit: usize,
    items: &mut Items,
) -> ApiResult<(Option<String>, Option<usize>)> {
    for (i, kv) in objects.iter().enumerate() {
        let object = rest::decode(kv)?;
        if !selectors.matches(&object) {
            continue;
        }
        items.push(object);
        let rest = objects.len() - i - 1;
        if limit > 0 && items.len() >= limit && rest > 0 {
            let count = selectors.is_empty().then_some(rest);
            return Ok((Some(kv.key.clone()), count));
        }
    }
    Ok((None, None))
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
        let mut object = crate::events::to_view(target.kind, rest::decode(kv)?);
        crate::crd::read(target.kind, &mut object);
        if selectors.matches(&object) {
            items.push(object);
        }
    }
    Ok((items, page.revision))
}

//! OpenAPI v2 and v3 with the type schemas of the served kinds, so that `kubectl explain`, its
//! client-side validation and `kubectl apply`'s strategic merge patches work as against
//! kube-apiserver. The schemas come from k8s-openapi's types (`definitions`), the documents are
//! built once and cached gzipped (`documents`), and this module answers the requests with
//! kube's headers: `ETag` and conditional GETs everywhere, `Cache-Control: public, immutable`
//! on a v3 document asked for with its current `?hash=` (a stale hash is redirected to the
//! current one), gzip when the client takes it.
//!
//! Which schema a kind gets is a lookup by (group, version, kind), never by a list kept here:
//! first a [`definitions::SchemaSource`] (the CustomResourceDefinitions' schemas,
//! [`crate::crd::openapi::CrdSchemas`], whose revision is the served table's stamp), then
//! k8s-openapi's type of that (group, version, kind), else a permissive
//! `x-kubernetes-preserve-unknown-fields` object. The documents follow whatever the kinds table
//! holds when asked: a changed table (so a new stamp) builds a new set and drops the old.

mod catalog;
pub mod definitions;
pub mod documents;
mod extensions;
pub mod fields;
mod v3;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Response};

use crate::body::{self, ApiBody};
use crate::openapi_v2;
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult};
use documents::Blob;

/// The not-found answer of kube-openapi's handlers is Go's plain 404.
fn not_found() -> Response<ApiBody> {
    body::text_response(404, "404 page not found\n")
}

/// Which of `offered` (media types) the `Accept` header picks first, `*/*` and `type/*`
/// matching anything; no `Accept` is `*/*`, as for kube.
fn negotiate<'a>(accept: Option<&str>, offered: &[&'a str]) -> Option<&'a str> {
    let accept = accept.filter(|a| !a.trim().is_empty()).unwrap_or("*/*");
    for clause in accept.split(',') {
        let media = clause.split(';').next().unwrap_or("").trim();
        let (kind, sub) = media.split_once('/').unwrap_or((media, ""));
        for candidate in offered {
            let (ck, cs) = candidate.split_once('/').unwrap_or((candidate, ""));
            if (kind == "*" || kind == ck) && (sub == "*" || sub == cs) {
                return Some(candidate);
            }
        }
    }
    None
}

fn header(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Answers `/openapi/v2`, `/openapi/v3` and `/openapi/v3/<group-version path>`.
pub fn serve(server: &ApiServer, parts: &Parts) -> ApiResult<Response<ApiBody>> {
    let path = parts.uri.path().trim_end_matches('/');
    let headers = &parts.headers;
    let accept = header(headers, header::ACCEPT);
    // The table and its stamp together: the stamp keys the cached documents.
    let (stamp, served) = server.crds.snapshot();
    let kinds = served.all();
    let version = &server.config.git_version;
    let source = crate::crd::openapi::CrdSchemas::new(&served, stamp);
    let docs = || documents::get(kinds, &source, version);
    if path == "/openapi/v2" {
        let offered = [
            "application/json",
            openapi_v2::PROTOBUF,
            openapi_v2::PROTOBUF_DOTTED,
        ];
        let Some(picked) = negotiate(accept, &offered) else {
            return Ok(body::bytes_response(406, "text/plain", Vec::new()));
        };
        let docs = docs();
        return Ok(if picked == "application/json" {
            respond(&docs.v2_json, "application/json", headers, &docs, None)
        } else {
            respond(
                &docs.v2_protobuf,
                openapi_v2::PROTOBUF_RESPONSE,
                headers,
                &docs,
                None,
            )
        });
    }
    if path == "/openapi/v3" {
        let docs = docs();
        return Ok(respond(
            &docs.v3_index,
            "application/json",
            headers,
            &docs,
            None,
        ));
    }
    let Some(gv) = path.strip_prefix("/openapi/v3/") else {
        return Err(ApiError::path_not_found());
    };
    if negotiate(accept, &["application/json"]).is_none() {
        // The v3 protobuf form is not built (no kubectl asks for it): say so rather than
        // answer with an empty 406 as for media types kube doesn't have either.
        return Ok(body::text_response(
            406,
            "OpenAPI v3 as protobuf is not implemented; ask for application/json\n",
        ));
    }
    let docs = docs();
    let Some((_, blob)) = docs.v3.iter().find(|(p, _)| p == gv) else {
        return Ok(not_found());
    };
    let hash = parts.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "hash")
            .map(|(_, v)| v.into_owned())
    });
    match hash {
        Some(hash) if !hash.is_empty() && hash != blob.etag => {
            let location = format!("/openapi/v3/{gv}?hash={}", blob.etag);
            let mut response = body::bytes_response(301, "text/html; charset=utf-8", Vec::new());
            insert(&mut response, header::LOCATION, &location);
            Ok(response)
        }
        Some(hash) if !hash.is_empty() => Ok(respond(
            blob,
            "application/json",
            headers,
            &docs,
            Some("public, immutable"),
        )),
        _ => Ok(respond(blob, "application/json", headers, &docs, None)),
    }
}

fn insert(response: &mut Response<ApiBody>, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

fn http_date(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// One document with kube's headers, 304 when `If-None-Match` names its ETag.
fn respond(
    blob: &Blob,
    content_type: &str,
    headers: &HeaderMap,
    docs: &documents::Documents,
    cache_control: Option<&str>,
) -> Response<ApiBody> {
    let etag = format!("\"{}\"", blob.etag);
    let matches = header(headers, header::IF_NONE_MATCH)
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let gzip = header(headers, header::ACCEPT_ENCODING).is_some_and(|v| v.contains("gzip"));
    let mut response = if matches {
        body::bytes_response(304, content_type, Vec::new())
    } else if gzip {
        let mut response = body::bytes_response(200, content_type, blob.gzip.clone());
        insert(&mut response, header::CONTENT_ENCODING, "gzip");
        response
    } else {
        body::bytes_response(200, content_type, blob.plain())
    };
    if matches {
        response.headers_mut().remove(header::CONTENT_TYPE);
    }
    insert(&mut response, header::ETAG, &etag);
    insert(&mut response, header::VARY, "Accept");
    insert(&mut response, header::LAST_MODIFIED, &http_date(docs.built));
    match cache_control {
        Some(value) => {
            insert(&mut response, header::CACHE_CONTROL, value);
            let expires = chrono::Utc::now() + chrono::Duration::days(365);
            insert(&mut response, header::EXPIRES, &http_date(expires));
        }
        // kube-apiserver's default for every response without its own.
        None => insert(&mut response, header::CACHE_CONTROL, "no-cache, private"),
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_first_offered_match() {
        let offered = ["application/json", openapi_v2::PROTOBUF];
        assert_eq!(negotiate(None, &offered), Some("application/json"));
        assert_eq!(
            negotiate(Some(openapi_v2::PROTOBUF), &offered),
            Some(openapi_v2::PROTOBUF)
        );
        assert_eq!(negotiate(Some("text/html"), &offered), None);
    }
}

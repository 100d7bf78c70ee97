//! A minimal OpenAPI v3: the root index and, per group version, the PATCH operations of each
//! kind with the `x-kubernetes-group-version-kind` extension and the `fieldValidation` query
//! parameter. That is what kubectl reads to learn the server validates fields itself (otherwise
//! `kubectl apply -f` / `create -f` insist on downloading schemas). No type schemas yet, so
//! kubectl uses its compiled-in types for strategic merge patches. `/openapi/v2` is
//! [`crate::openapi_v2`]'s.

use http::Response;
use serde_json::{Map, Value, json};

use crate::body::{self, ApiBody};
use crate::kinds::Kind;
use crate::openapi_v2;
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult};

fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Answers `/openapi/v2`, `/openapi/v3` and `/openapi/v3/<group-version path>`, minding the
/// request's `Accept`: `/openapi/v2` is JSON unless the client accepts gnostic protobuf or
/// sent no `Accept` (kubectl asks for protobuf).
pub fn serve(server: &ApiServer, path: &str, accept: Option<&str>) -> ApiResult<Response<ApiBody>> {
    let rest = path.trim_end_matches('/');
    if rest == "/openapi/v2" {
        let version = &server.config.git_version;
        let protobuf = accept.is_none_or(|a| a.contains(openapi_v2::PROTOBUF));
        return Ok(if protobuf {
            body::bytes_response(
                200,
                openapi_v2::PROTOBUF_RESPONSE,
                openapi_v2::protobuf(version),
            )
        } else {
            body::json_response(200, &openapi_v2::json(version))
        });
    }
    if rest == "/openapi/v3" {
        let mut paths = Map::new();
        let kinds = server.served();
        for group in kinds.groups() {
            for version in kinds.versions(group) {
                let gv = group_version_path(group, version);
                let url = format!("/openapi/v3/{gv}?hash={}", env!("CARGO_PKG_VERSION"));
                paths.insert(gv, json!({"serverRelativeURL": url}));
            }
        }
        return Ok(body::json_response(200, &json!({"paths": paths})));
    }
    let Some(gv) = rest.strip_prefix("/openapi/v3/") else {
        return Err(ApiError::path_not_found());
    };
    let kinds = server.served();
    for group in kinds.groups() {
        for version in kinds.versions(group) {
            if group_version_path(group, version) == gv {
                return Ok(body::json_response(
                    200,
                    &document(kinds.of(group, version)),
                ));
            }
        }
    }
    Err(ApiError::path_not_found())
}

fn document(kinds: Vec<&Kind>) -> Value {
    let mut paths = Map::new();
    for kind in kinds {
        let base = format!("/{}", group_version_path(kind.group, kind.version));
        let path = if kind.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", kind.plural)
        } else {
            format!("{base}/{}/{{name}}", kind.plural)
        };
        let patch = json!({
            "operationId": format!("patch{}", kind.kind),
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {
                "group": kind.group, "version": kind.version, "kind": kind.kind,
            },
            "parameters": [
                {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                {"name": "force", "in": "query", "schema": {"type": "boolean"}},
            ],
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(path, json!({"patch": patch}));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

//! `fieldValidation` of JSON, merge and strategic merge patches, as upstream checks the
//! patched object: `Strict` refuses unknown fields with 422 Invalid on `patch`, `Warn` (the
//! default) lets them through with a warning each, `Ignore` says nothing.

use serde_json::Value;

use crate::kinds::Kind;
use crate::patch::PatchType;
use crate::protobuf::strict;
use crate::status::{ApiError, ApiResult, Cause};

/// Checks `patched` (the object the patch made of `current`) by the request's `directive`;
/// returns the warnings to send.
pub fn check(
    kind: &Kind,
    patch_type: PatchType,
    patch: &[u8],
    current: &Value,
    patched: &Value,
    directive: Option<&str>,
) -> ApiResult<Vec<String>> {
    // Without the parameter upstream warns (the default since server-side field validation).
    let directive = Some(directive.unwrap_or("Warn"));
    if !matches!(directive, Some("Strict" | "Warn")) {
        return Ok(Vec::new());
    }
    // Only what the patch brought: upstream never stores unknown fields, so there a stored
    // object has none; here one may have fields the schema table does not know yet.
    let before =
        strict::unknown_fields(&kind.api_version(), kind.kind, current).unwrap_or_default();
    let unknown: Vec<String> = strict::unknown_fields(&kind.api_version(), kind.kind, patched)
        .unwrap_or_default()
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    let errors: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    if directive == Some("Warn") {
        return Ok(errors);
    }
    // Upstream shows the patched object for JSON and merge patches, the patch as Go prints
    // a map for strategic merge patches.
    let shown = match patch_type {
        PatchType::Strategic => serde_json::from_slice::<Value>(patch)
            .map(|p| go_format(&p))
            .unwrap_or_default(),
        _ => patched.to_string(),
    };
    Err(ApiError::invalid(
        "",
        "",
        "",
        vec![Cause::invalid(
            "patch",
            &shown,
            &format!("strict decoding error: {}", errors.join(", ")),
        )],
    ))
}

/// The 415 of a PATCH body in a type PATCH does not take (CBOR apply patches included: upstream
/// serves them only behind a feature gate), naming the ones it does take as upstream.
pub fn unsupported_patch_type(content_type: &str) -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"
        ),
    )
}

/// A value as Go's `%+v` prints a decoded JSON value: `map[a:1 b:[x y]]`.
fn go_format(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", go_format(&map[k.as_str()])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_format).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::KindTable;
    use serde_json::json;

    #[test]
    fn strict_refuses_warn_warns_ignore_ignores() {
        let table = KindTable::default();
        let Some(deploy) = table.find("apps", "v1", "deployments") else {
            panic!("no deployments")
        };
        let patched = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"foo": 1}});
        let patch = br#"{"spec":{"foo":1}}"#;
        let current = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {}});
        let strict = check(
            deploy,
            PatchType::Strategic,
            patch,
            &current,
            &patched,
            Some("Strict"),
        );
        let Err(error) = strict else {
            panic!("not refused")
        };
        assert_eq!(error.code, 422);
        assert_eq!(
            error.message,
            " \"\" is invalid: patch: Invalid value: \"map[spec:map[foo:1]]\": strict decoding error: unknown field \"spec.foo\""
        );
        let warned = check(
            deploy,
            PatchType::Merge,
            patch,
            &current,
            &patched,
            Some("Warn"),
        );
        assert_eq!(warned, Ok(vec!["unknown field \"spec.foo\"".to_string()]));
        let default = check(deploy, PatchType::Merge, patch, &current, &patched, None);
        assert_eq!(default.map(|w| w.len()), Ok(1));
        let already = check(
            deploy,
            PatchType::Merge,
            patch,
            &patched,
            &patched,
            Some("Strict"),
        );
        assert_eq!(already, Ok(vec![]), "only what the patch brings counts");
        assert_eq!(
            check(
                deploy,
                PatchType::Merge,
                patch,
                &current,
                &patched,
                Some("Ignore")
            ),
            Ok(vec![])
        );
    }
}

//! Reading a stored CustomResourceDefinition: its names, versions and subresources, and the
//! [`Kind`]s it serves, one per served version.

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::Value;

use super::{CustomVersion, columns, intern, scale};
use crate::apply::schema::CustomSchema;
use crate::kinds::{Kind, NameRule};

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn strings(object: &Value, pointer: &str) -> Vec<String> {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `spec.versions`, empty when missing.
pub fn versions(crd: &Value) -> Vec<&Value> {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|v| v.iter().collect())
        .unwrap_or_default()
}

/// The name of the storage version, if exactly one is marked.
pub fn storage_version(crd: &Value) -> Option<&str> {
    let storage: Vec<&str> = versions(crd)
        .into_iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .map(|v| v.get("name").and_then(Value::as_str).unwrap_or(""))
        .collect();
    match storage.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// kube's version priority: GA before beta before alpha, higher numbers first, then names.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parse(v: &str) -> Option<(u32, u8, u32)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((major, 2, 0));
        }
        let (level, number) = if let Some(n) = tail.strip_prefix("beta") {
            (1, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (0, n)
        } else {
            return None;
        };
        Some((major, level, number.parse().ok()?))
    }
    match (parse(a), parse(b)) {
        (Some((ma, la, na)), Some((mb, lb, nb))) => lb.cmp(&la).then(mb.cmp(&ma)).then(nb.cmp(&na)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// `selectableFields` of a version as field selector names: `.spec.color` is `spec.color`.
fn selectable(version: &Value) -> Vec<String> {
    version
        .get("selectableFields")
        .and_then(Value::as_array)
        .map(|fields| {
            fields
                .iter()
                .filter_map(|f| f.get("jsonPath").and_then(Value::as_str))
                .map(|p| p.trim_start_matches('.').to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Stability of a version name: 2 GA, 1 beta, 0 alpha or unknown.
fn stability(version: &str) -> u8 {
    match version.strip_prefix('v') {
        Some(rest) if rest.contains("alpha") => 0,
        Some(rest) if rest.contains("beta") => 1,
        Some(rest) if rest.chars().all(|c| c.is_ascii_digit()) && !rest.is_empty() => 2,
        _ => 0,
    }
}

/// The warning of a deprecated version: its own text, or upstream's default naming the newest
/// served, not deprecated version at least as stable.
fn deprecation(
    group: &str,
    kind: &str,
    version: &Value,
    served: &[(&str, bool)],
) -> Option<String> {
    if version.get("deprecated").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    if let Some(text) = version.get("deprecationWarning").and_then(Value::as_str) {
        return Some(text.to_string());
    }
    let name = text(version, "/name");
    let deprecated = format!("{group}/{name} {kind} is deprecated");
    let newer = served.iter().find(|(other, other_deprecated)| {
        !other_deprecated
            && *other != name
            && stability(other) >= stability(name)
            && compare_versions(other, name) == Ordering::Less
    });
    Some(match newer {
        Some((other, _)) => format!("{deprecated}; use {group}/{other} {kind}"),
        None => deprecated,
    })
}

/// The kinds `crd` serves, its served versions in priority order; none when it is not
/// established (no single storage version, no names).
pub fn kinds_of(crd: &Value) -> Vec<Kind> {
    let group = text(crd, "/spec/group");
    let plural = text(crd, "/spec/names/plural");
    let kind = text(crd, "/spec/names/kind");
    let Some(storage) = storage_version(crd) else {
        return Vec::new();
    };
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return Vec::new();
    }
    let singular = match text(crd, "/spec/names/singular") {
        "" => kind.to_lowercase(),
        s => s.to_string(),
    };
    let name = text(crd, "/metadata/name").to_string();
    let list_kind = match text(crd, "/spec/names/listKind") {
        "" => format!("{kind}List"),
        l => l.to_string(),
    };
    let namespaced = text(crd, "/spec/scope") != "Cluster";
    let terminating = crd.pointer("/metadata/deletionTimestamp").is_some();
    let short_names = intern::list(&strings(crd, "/spec/names/shortNames"));
    let categories = intern::list(&strings(crd, "/spec/names/categories"));
    let mut served: Vec<&Value> = versions(crd)
        .into_iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) == Some(true))
        .collect();
    served.sort_by(|a, b| compare_versions(text(a, "/name"), text(b, "/name")));
    let served_names: Vec<(&str, bool)> = served
        .iter()
        .map(|v| {
            (
                text(v, "/name"),
                v.get("deprecated").and_then(Value::as_bool) == Some(true),
            )
        })
        .collect();
    served
        .into_iter()
        .map(|version| Kind {
            group: intern::string(group),
            version: intern::string(text(version, "/name")),
            kind: intern::string(kind),
            plural: intern::string(plural),
            singular: intern::string(&singular),
            namespaced,
            short_names,
            categories,
            status_subresource: version.pointer("/subresources/status").is_some(),
            generation: true,
            delete_returns_object: false,
            name_rule: NameRule::Subdomain,
            create_only: false,
            custom: Some(Arc::new(CustomVersion {
                definition: name.clone(),
                storage_version: intern::string(storage),
                apply: Arc::new(
                    version
                        .pointer("/schema/openAPIV3Schema")
                        .map(CustomSchema::from_openapi)
                        .unwrap_or_default(),
                ),
                schema: version.pointer("/schema/openAPIV3Schema").cloned(),
                columns: columns::of_version(version),
                scale: scale::paths_of(version),
                terminating,
                deprecation: deprecation(group, kind, version, &served_names),
                selectable: selectable(version),
                list_kind: list_kind.clone(),
            })),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn served_versions_become_kinds_in_priority_order() {
        let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {
        "group": "example.com", "scope": "Namespaced",
        "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
        "versions": [
            {"name": "v1beta1", "served": true, "storage": false},
            {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}},
            {"name": "v2alpha1", "served": false, "storage": false},
        ]}});
        let kinds = kinds_of(&crd);
        let versions: Vec<&str> = kinds.iter().map(|k| k.version).collect();
        assert_eq!(versions, ["v1", "v1beta1"]);
        assert_eq!(kinds[0].singular, "widget");
        assert_eq!(kinds[0].list_kind(), "WidgetList");
        assert!(kinds[0].status_subresource && !kinds[1].status_subresource);
        assert_eq!(kinds[0].short_names, &["wd"]);
        assert_eq!(kinds[1].prefix(), "/registry/example.com/widgets/");
        let old = json!({"metadata": {"name": "widgets.example.com"}, "spec": {
        "group": "example.com", "names": {"plural": "widgets", "kind": "Widget"},
        "versions": [
            {"name": "v1beta1", "served": true, "storage": false, "deprecated": true},
            {"name": "v1", "served": true, "storage": true},
        ]}});
        let warnings: Vec<Option<String>> = kinds_of(&old)
            .iter()
            .map(|k| k.custom.as_ref().and_then(|c| c.deprecation.clone()))
            .collect();
        assert_eq!(
            warnings,
            [
                None,
                Some("example.com/v1beta1 Widget is deprecated; use example.com/v1 Widget".into())
            ]
        );
        let mut all = vec!["v1alpha1", "v2", "v1beta2", "v1", "foo", "v10beta1"];
        all.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(all, ["v2", "v1", "v10beta1", "v1beta2", "v1alpha1", "foo"]);
    }
}

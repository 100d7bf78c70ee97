//! Validation of CustomResourceDefinitions themselves, with upstream's paths and messages:
//! the name is `<plural>.<group>`, the group a domain, the names DNS-1035 labels, exactly one
//! storage version and at least one served, and in v1 a structural schema for every version.

use serde_json::{Value, json};

use super::definition::versions;
use super::field::{self, child, index};
use crate::status::Cause;

const DNS1035_MESSAGE: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// What the column types may be.
const COLUMN_TYPES: &[&str] = &["boolean", "date", "integer", "number", "string"];

/// What the column formats may be.
const COLUMN_FORMATS: &[&str] = &[
    "byte",
    "date",
    "date-time",
    "double",
    "float",
    "int32",
    "int64",
    "name",
    "password",
];

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// kube's `IsDNS1035Label` errors, joined as upstream joins them.
fn dns1035(value: &str) -> Option<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_string());
    }
    let bytes = value.as_bytes();
    let valid = bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !valid {
        errors.push(DNS1035_MESSAGE.to_string());
    }
    (!errors.is_empty()).then(|| errors.join(","))
}

/// The causes the definition `crd` (defaulted) is refused with; `old` on updates.
pub fn definition(crd: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = Vec::new();
    let group = text(crd, "/spec/group");
    let plural = text(crd, "/spec/names/plural");
    let name = text(crd, "/metadata/name");
    if !name.is_empty() && name != format!("{plural}.{group}") {
        out.push(field::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        out.push(field::required("spec.group", ""));
    } else if !crate::validation::is_dns_subdomain(group) {
        out.extend(crate::validation::check_name(
            crate::kinds::NameRule::Subdomain,
            group,
            "spec.group",
        ));
    } else if !group.contains('.') {
        out.push(field::invalid(
            "spec.group",
            &json!(group),
            "should be a domain with at least one dot",
        ));
    }
    match text(crd, "/spec/scope") {
        "" => out.push(field::required("spec.scope", "")),
        "Cluster" | "Namespaced" => {}
        other => out.push(field::not_supported(
            "spec.scope",
            &json!(other),
            &[json!("Cluster"), json!("Namespaced")],
        )),
    }
    version_list(crd, &mut out);
    names(crd, &mut out);
    if crd.pointer("/spec/preserveUnknownFields") == Some(&Value::Bool(true)) {
        out.push(field::invalid(
            "spec.preserveUnknownFields",
            &Value::Bool(true),
            "must be false",
        ));
    }
    match text(crd, "/spec/conversion/strategy") {
        "" | "None" => {}
        // Not pretended: objects would be served unconverted.
        "Webhook" => out.push(field::forbidden(
            "spec.conversion.strategy",
            "Webhook conversion is not supported by this server (capstan): use None",
        )),
        other => out.push(field::not_supported(
            "spec.conversion.strategy",
            &json!(other),
            &[json!("None"), json!("Webhook")],
        )),
    }
    if old.is_some() {
        let names: Vec<&str> = versions(crd)
            .into_iter()
            .filter_map(|v| v.get("name").and_then(Value::as_str))
            .collect();
        let stored = crd
            .pointer("/status/storedVersions")
            .and_then(Value::as_array);
        for (i, version) in stored.into_iter().flatten().enumerate() {
            let name = version.as_str().unwrap_or("");
            if !names.contains(&name) {
                out.push(field::invalid(
                    &index("status.storedVersions", i),
                    version,
                    &format!(
                        "missing from spec.versions; {name} was previously a storage version, and must remain in spec.versions until a storage migration ensures no data remains persisted in {name} and removes {name} from status.storedVersions"
                    ),
                ));
            }
        }
    }
    if let Some(old) = old {
        for (pointer, path) in [
            ("/spec/group", "spec.group"),
            ("/spec/names/plural", "spec.names.plural"),
            ("/spec/scope", "spec.scope"),
            ("/spec/names/kind", "spec.names.kind"),
        ] {
            if crd.pointer(pointer) != old.pointer(pointer) {
                out.push(field::invalid(
                    path,
                    crd.pointer(pointer).unwrap_or(&Value::Null),
                    "field is immutable",
                ));
            }
        }
    }
    out
}

fn names(crd: &Value, out: &mut Vec<Cause>) {
    for name in ["plural", "singular", "kind", "listKind"] {
        if text(crd, &format!("/spec/names/{name}")).is_empty() {
            out.push(field::required(&format!("spec.names.{name}"), ""));
        }
    }
    for name in ["plural", "singular"] {
        let value = text(crd, &format!("/spec/names/{name}"));
        if let Some(why) = dns1035(value).filter(|_| !value.is_empty()) {
            out.push(field::invalid(
                &format!("spec.names.{name}"),
                &json!(value),
                &why,
            ));
        }
    }
    for name in ["kind", "listKind"] {
        let value = text(crd, &format!("/spec/names/{name}"));
        if let Some(why) = dns1035(&value.to_lowercase()).filter(|_| !value.is_empty()) {
            out.push(field::invalid(
                &format!("spec.names.{name}"),
                &json!(value),
                &format!("may have mixed case, but should otherwise match: {why}"),
            ));
        }
    }
    let kind = text(crd, "/spec/names/kind");
    if !kind.is_empty() && kind == text(crd, "/spec/names/listKind") {
        out.push(field::invalid(
            "spec.names.listKind",
            &json!(kind),
            "kind and listKind may not be the same",
        ));
    }
    for list in ["shortNames", "categories"] {
        let items = crd
            .pointer(&format!("/spec/names/{list}"))
            .and_then(Value::as_array);
        for (i, item) in items.into_iter().flatten().enumerate() {
            let value = item.as_str().unwrap_or("");
            if let Some(why) = dns1035(value) {
                out.push(field::invalid(
                    &index(&format!("spec.names.{list}"), i),
                    item,
                    &why,
                ));
            }
        }
    }
}

fn version_list(crd: &Value, out: &mut Vec<Cause>) {
    let list = versions(crd);
    let shown: Vec<Value> = list
        .iter()
        .map(|v| json!({"name": v.get("name"), "served": v.get("served"), "storage": v.get("storage")}))
        .collect();
    let shown = Value::Array(shown);
    let mut seen = Vec::new();
    let mut unique = true;
    for (i, version) in list.iter().enumerate() {
        let name = version.get("name").and_then(Value::as_str).unwrap_or("");
        if seen.contains(&name) {
            unique = false;
        }
        seen.push(name);
        if let Some(why) = dns1035(name) {
            out.push(field::invalid(
                &format!("spec.versions[{i}].name"),
                &json!(name),
                &why,
            ));
        }
        one_version(version, &index("spec.versions", i), out);
    }
    if !unique {
        out.push(field::invalid(
            "spec.versions",
            &shown,
            "must contain unique version names",
        ));
    }
    let storage = list
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if storage != 1 {
        out.push(field::invalid(
            "spec.versions",
            &shown,
            "must have exactly one version marked as storage version",
        ));
    }
}

fn one_version(version: &Value, path: &str, out: &mut Vec<Cause>) {
    let schema_path = format!("{path}.schema.openAPIV3Schema");
    match version.pointer("/schema/openAPIV3Schema") {
        Some(schema) if schema.is_object() => super::structural::check(schema, &schema_path, out),
        _ => out.push(field::required(&schema_path, "schemas are required")),
    }
    if let Some(scale) = version.pointer("/subresources/scale") {
        let at = format!("{path}.subresources.scale");
        for (name, under) in [
            ("specReplicasPath", &[".spec."][..]),
            ("statusReplicasPath", &[".status."][..]),
            ("labelSelectorPath", &[".spec.", ".status."][..]),
        ] {
            let value = scale.get(name).and_then(Value::as_str);
            let field_path = child(&at, name);
            match value {
                None if name != "labelSelectorPath" => out.push(field::required(&field_path, "")),
                Some(p) if !under.iter().any(|u| p.starts_with(u)) => {
                    let why = match under {
                        [one] => {
                            format!("should be a json path under {}", one.trim_end_matches('.'))
                        }
                        _ => "should be a json path under either .spec or .status".to_string(),
                    };
                    out.push(field::invalid(&field_path, &json!(p), &why));
                }
                _ => {}
            }
        }
    }
    selectable_fields(version, path, out);
    let columns = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array);
    for (i, column) in columns.into_iter().flatten().enumerate() {
        let at = index(&format!("{path}.additionalPrinterColumns"), i);
        if text(column, "/name").is_empty() {
            out.push(field::required(&child(&at, "name"), ""));
        }
        let kind = text(column, "/type");
        let types = format!("must be one of {}", COLUMN_TYPES.join(","));
        if kind.is_empty() {
            out.push(field::required(&child(&at, "type"), &types));
        } else if !COLUMN_TYPES.contains(&kind) {
            out.push(field::invalid(&child(&at, "type"), &json!(kind), &types));
        }
        let format = text(column, "/format");
        if !format.is_empty() && !COLUMN_FORMATS.contains(&format) {
            let formats = format!("must be one of {}", COLUMN_FORMATS.join(","));
            out.push(field::invalid(
                &child(&at, "format"),
                &json!(format),
                &formats,
            ));
        }
        // Upstream names the field JSONPath here, unlike the JSON key.
        let path = text(column, "/jsonPath");
        if path.is_empty() {
            out.push(field::required(&child(&at, "JSONPath"), ""));
        } else if !path.starts_with('.') {
            out.push(field::invalid(
                &child(&at, "JSONPath"),
                &json!(path),
                "must be a simple json path starting with .",
            ));
        }
    }
}

/// How many fields a version may make selectable, as upstream.
const MAX_SELECTABLE_FIELDS: usize = 8;

/// The schema of the field at a dotted path (`spec.color`), through `properties`.
fn schema_at<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(schema, |s, field| s.get("properties")?.get(field))
}

fn selectable_fields(version: &Value, path: &str, out: &mut Vec<Cause>) {
    let Some(fields) = version.get("selectableFields").and_then(Value::as_array) else {
        return;
    };
    let at = child(path, "selectableFields");
    let schema = version.pointer("/schema/openAPIV3Schema");
    let mut seen: Vec<&str> = Vec::new();
    for (i, selectable) in fields.iter().enumerate() {
        let field_path = child(&index(&at, i), "jsonPath");
        let json_path = selectable
            .get("jsonPath")
            .and_then(Value::as_str)
            .unwrap_or("");
        if json_path.is_empty() {
            out.push(field::required(&field_path, ""));
            continue;
        }
        let dotted = json_path.trim_start_matches('.');
        let found = schema.and_then(|s| schema_at(s, dotted));
        let shown = json!(json_path);
        match found {
            None => out.push(field::invalid(
                &field_path,
                &shown,
                "is an invalid path: does not refer to a valid field",
            )),
            Some(_) if dotted.starts_with("metadata.") => out.push(field::invalid(
                &field_path,
                &shown,
                "must not point to fields in metadata",
            )),
            Some(s) if !matches!(s.get("type").and_then(Value::as_str), Some("string" | "boolean" | "integer")) => {
                out.push(field::invalid(
                    &field_path,
                    &shown,
                    "must point to a field of type string, boolean or integer. Enum string fields and strings with formats are allowed.",
                ))
            }
            Some(_) if seen.contains(&dotted) => {
                out.push(field::duplicate(&field_path, &field::show(&shown)))
            }
            Some(_) => seen.push(dotted),
        }
    }
    if seen.len() > MAX_SELECTABLE_FIELDS {
        out.push(field::too_many(
            &at,
            seen.len(),
            MAX_SELECTABLE_FIELDS as u64,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(crd: &Value) -> Vec<String> {
        definition(crd, None)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn defaults_must_be_valid() {
        let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": {
                    "color": {"type": "string", "enum": ["red"], "default": "green"}}}}}}}]}});
        assert_eq!(
            messages(&crd),
            vec![
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[color].default: Unsupported value: \"green\": supported values: \"red\""
            ]
        );
    }

    #[test]
    fn upstreams_messages_for_broken_definitions() {
        let crd = json!({"metadata": {"name": "widgets.example"}, "spec": {
            "group": "example", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "properties": {"spec": {"properties": {"size": {"type": "integer"}}}}}}}]}});
        assert_eq!(
            messages(&crd),
            vec![
                "spec.group: Invalid value: \"example\": should be a domain with at least one dot",
                "spec.versions[0].schema.openAPIV3Schema.type: Required value: must not be empty at the root",
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields",
            ]
        );
        let none = json!({"metadata": {"name": "x.example.com"}, "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": false,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-validations": [{"rule": "true"}]}}}]}});
        assert_eq!(
            messages(&none),
            vec![
                "metadata.name: Invalid value: \"x.example.com\": must be spec.names.plural+\".\"+spec.group",
                "spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations: Forbidden: CEL validation rules are not supported by this server (capstan)",
                "spec.versions: Invalid value: [{\"name\":\"v1\",\"served\":true,\"storage\":false}]: must have exactly one version marked as storage version",
            ]
        );
    }
}

//! The type definitions of a set of kinds, in OpenAPI v2 form (`$ref`s into `#/definitions/`):
//! k8s-openapi's schemars schemas, post-processed to look like kube-apiserver's (group version
//! kind extensions, patch and list extensions, no `metadata` in `required`).
//!
//! How a kind finds its schema, in order: a [`SchemaSource`] (CustomResourceDefinitions feed
//! theirs through one), then k8s-openapi's type of the same (group, version, kind)
//! ([`super::catalog`]), else a permissive object that keeps unknown fields. So a row added to
//! the kinds table needs nothing here.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::schemars::{SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use super::{catalog, extensions};
use crate::kinds::Kind;

/// Schemas that don't come from k8s-openapi: a CustomResourceDefinition's, say.
pub trait SchemaSource: Send + Sync {
    /// The definition of (group, version, kind) in v2 form, its `$ref`s pointing into
    /// `#/definitions/` at built-in names only (`io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`
    /// is always there). `None` falls through to the built-in types.
    fn schema(&self, group: &str, version: &str, kind: &str) -> Option<Value>;

    /// Changes whenever any answer of [`SchemaSource::schema`] or the kinds asked about do
    /// (together with the number of kinds it keys the cached documents), so they are rebuilt.
    fn revision(&self) -> u64;
}

/// No schemas of its own: only the built-in types.
pub struct BuiltinOnly;

impl SchemaSource for BuiltinOnly {
    fn schema(&self, _: &str, _: &str, _: &str) -> Option<Value> {
        None
    }

    fn revision(&self) -> u64 {
        0
    }
}

/// The definitions of some kinds, and which definition is each kind's.
pub struct Definitions {
    /// Every definition, by name (`io.k8s.api.core.v1.Pod`).
    pub schemas: Map<String, Value>,
    /// `(kind, definition name)` in the order the kinds came.
    pub roots: Vec<(Kind, String)>,
}

const REF_PREFIX: &str = "#/definitions/";

/// The name of a kind's definition: k8s-openapi's, or the reversed group as for CRDs
/// (`com.example.v1.Widget`), core being `io.k8s.api.core`.
fn fallback_name(kind: &Kind) -> String {
    let group = if kind.group.is_empty() {
        "io.k8s.api.core".to_string()
    } else {
        kind.group.split('.').rev().collect::<Vec<_>>().join(".")
    };
    format!("{group}.{}.{}", kind.version, kind.kind)
}

fn permissive(kind: &Kind) -> Value {
    json!({
        "description": format!("{} is served without a published schema: any fields are kept.", kind.kind),
        "type": "object",
        "properties": {
            "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
            "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
            "metadata": {"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"), "description": "Standard object's metadata."},
        },
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Builds the definitions of `kinds`.
pub fn build(kinds: &[Kind], source: &dyn SchemaSource) -> Definitions {
    let settings = SchemaSettings::draft07().with(|s| {
        s.definitions_path = "/definitions".into();
        s.meta_schema = None;
        s.transforms = Vec::new();
        s.inline_subschemas = false;
    });
    let mut generator = SchemaGenerator::new(settings);
    generator.subschema_for::<ObjectMeta>();
    let mut custom = Vec::new();
    let mut roots = Vec::new();
    for kind in kinds {
        let name = if let Some(schema) = source.schema(kind.group, kind.version, kind.kind) {
            let name = fallback_name(kind);
            custom.push((name.clone(), schema));
            name
        } else if let Some(entry) = catalog::lookup(kind.group, kind.version, kind.kind) {
            (entry.generate)(&mut generator);
            (entry.name)().into_owned()
        } else {
            let name = fallback_name(kind);
            custom.push((name.clone(), permissive(kind)));
            name
        };
        roots.push((kind.clone(), name));
    }
    let mut schemas = generator.take_definitions(false);
    for (name, schema) in custom {
        schemas.insert(name, schema);
    }
    extensions::apply(&mut schemas);
    string_forms(&mut schemas);
    for (kind, name) in &roots {
        if let Some(Value::Object(schema)) = schemas.get_mut(name) {
            mark_root(schema, kind);
        }
    }
    Definitions { schemas, roots }
}

/// Adds the group version kind extension (more than one kind may share a type, so it is a
/// list) and drops `metadata` from `required`: k8s-openapi requires it in Rust, kube doesn't.
fn mark_root(schema: &mut Map<String, Value>, kind: &Kind) {
    let gvk = json!({"group": kind.group, "kind": kind.kind, "version": kind.version});
    match schema.get_mut("x-kubernetes-group-version-kind") {
        Some(Value::Array(list)) if !list.contains(&gvk) => list.push(gvk),
        Some(_) => {}
        None => {
            schema.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
        }
    }
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        required.retain(|r| r != "metadata");
        if required.is_empty() {
            schema.remove("required");
        }
    }
}

/// Int-or-string and quantities are strings on the wire as far as OpenAPI v2 (and kubectl's
/// v2 validation) is concerned; kube publishes them so.
fn string_forms(schemas: &mut Map<String, Value>) {
    let forms = [
        (
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
            Some("int-or-string"),
        ),
        ("io.k8s.apimachinery.pkg.api.resource.Quantity", None),
    ];
    for (name, format) in forms {
        if let Some(Value::Object(schema)) = schemas.get_mut(name) {
            schema.entry("type").or_insert_with(|| json!("string"));
            if let Some(format) = format {
                schema.entry("format").or_insert_with(|| json!(format));
            }
        }
    }
}

/// The names of `roots` and of every definition they refer to, directly or not.
pub fn closure<'a>(
    schemas: &Map<String, Value>,
    roots: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut pending: Vec<String> = roots.into_iter().map(str::to_string).collect();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = schemas.get(&name) {
            collect_refs(schema, &mut pending);
        }
    }
    seen
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix(REF_PREFIX) {
                            out.push(name.to_string());
                        }
                    }
                    _ => collect_refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::builtin;

    #[test]
    fn every_builtin_kind_has_a_schema_with_its_gvk() {
        let kinds = builtin();
        let definitions = build(&kinds, &BuiltinOnly);
        for (kind, name) in &definitions.roots {
            let schema = &definitions.schemas[name];
            let gvk = &schema["x-kubernetes-group-version-kind"];
            assert!(
                gvk.as_array().is_some_and(|l| l.contains(
                    &json!({"group": kind.group, "kind": kind.kind, "version": kind.version})
                )),
                "{name}: {gvk}"
            );
        }
        let pod = &definitions.schemas["io.k8s.api.core.v1.Pod"];
        assert!(pod.get("required").is_none(), "{pod}");
        let every = closure(
            &definitions.schemas,
            definitions.roots.iter().map(|(_, n)| n.as_str()),
        );
        for name in &every {
            assert!(
                definitions.schemas.contains_key(name),
                "dangling $ref {name}"
            );
        }
    }

    struct Widgets;

    impl SchemaSource for Widgets {
        fn schema(&self, group: &str, _: &str, kind: &str) -> Option<Value> {
            (group == "example.com" && kind == "Widget").then(|| {
                json!({"type": "object", "properties": {
                    "metadata": {"$ref": format!("{REF_PREFIX}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")},
                    "size": {"type": "integer"},
                }})
            })
        }

        fn revision(&self) -> u64 {
            1
        }
    }

    #[test]
    fn a_source_feeds_a_kind_its_schema() {
        let mut kind = builtin().remove(0);
        kind.group = "example.com";
        kind.kind = "Widget";
        let definitions = build(&[kind], &Widgets);
        let widget = &definitions.schemas["com.example.v1.Widget"];
        assert_eq!(widget["properties"]["size"]["type"], "integer");
        assert_eq!(
            widget["x-kubernetes-group-version-kind"][0]["group"],
            "example.com"
        );
        let every = closure(&definitions.schemas, ["com.example.v1.Widget"]);
        assert!(every.contains("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert!(every.iter().all(|n| definitions.schemas.contains_key(n)));
    }

    #[test]
    fn a_kind_without_a_type_is_permissive() {
        let mut kind = builtin().remove(0);
        kind.group = "example.com";
        kind.kind = "Widget";
        let definitions = build(&[kind], &BuiltinOnly);
        let widget = &definitions.schemas["com.example.v1.Widget"];
        assert_eq!(widget["x-kubernetes-preserve-unknown-fields"], true);
        assert_eq!(
            widget["x-kubernetes-group-version-kind"][0]["kind"],
            "Widget"
        );
    }
}

//! The OpenAPI definitions of the custom kinds, as kube-apiserver's CRD OpenAPI builder
//! publishes them: each served version's `openAPIV3Schema`, cut down to what OpenAPI v2 can say
//! (the v3 documents are built from the same definitions), with `apiVersion` and `kind` as
//! described strings, `metadata` a reference to `ObjectMeta` and the group version kind
//! extension (added by [`crate::openapi::definitions::build`] for every root).

use serde_json::{Map, Value, json};

use crate::kinds::{Kind, KindTable};
use crate::openapi::definitions::SchemaSource;

const OBJECT_META: &str = "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// Upstream's descriptions of the type fields, which a CRD's schema does not carry.
const API_VERSION: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources";
const KIND: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds";
const METADATA: &str = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The schemas of the custom kinds of one served table.
pub struct CrdSchemas<'a> {
    kinds: &'a KindTable,
    stamp: u64,
}

impl<'a> CrdSchemas<'a> {
    /// The schemas of `kinds`, whose content `stamp` identifies (the registry's
    /// [`super::Registry::snapshot`]).
    pub fn new(kinds: &'a KindTable, stamp: u64) -> CrdSchemas<'a> {
        CrdSchemas { kinds, stamp }
    }
}

impl SchemaSource for CrdSchemas<'_> {
    fn schema(&self, group: &str, version: &str, kind: &str) -> Option<Value> {
        let found = self.kinds.all().iter().find(|k| {
            k.custom.is_some() && k.group == group && k.version == version && k.kind == kind
        })?;
        definition(found)
    }

    fn revision(&self) -> u64 {
        self.stamp
    }
}

/// The v2 definition of a custom kind; `None` (so the permissive schema) when it has no
/// schema or its schema is not an object.
pub fn definition(kind: &Kind) -> Option<Value> {
    let schema = super::schema_of(kind)?;
    let Value::Object(root) = to_v2(schema) else {
        return None;
    };
    Some(Value::Object(with_type_fields(root)))
}

/// The root as upstream's builder completes it: an object whose `apiVersion`, `kind` and
/// `metadata` are the standard ones whatever the definition said of them (a CRD may only
/// restrict `metadata.name`, which OpenAPI clients don't need).
fn with_type_fields(mut root: Map<String, Value>) -> Map<String, Value> {
    root.entry("type").or_insert_with(|| json!("object"));
    let properties = root
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if !properties.is_object() {
        *properties = Value::Object(Map::new());
    }
    if let Value::Object(properties) = properties {
        properties.insert(
            "apiVersion".into(),
            json!({"description": API_VERSION, "type": "string"}),
        );
        properties.insert(
            "kind".into(),
            json!({"description": KIND, "type": "string"}),
        );
        properties.insert(
            "metadata".into(),
            json!({"$ref": OBJECT_META, "description": METADATA}),
        );
    }
    root
}

/// What OpenAPI v2 can say of a structural schema, as upstream's v2 conversion: no `nullable`
/// (a nullable field is left untyped, since v2 clients would refuse its nulls), no
/// `oneOf`/`anyOf`/`allOf`/`not` (v2 has only `allOf`, and kubectl's v2 validation chokes on
/// value validations), and an int-or-string untyped (v2 has no type for either form).
fn to_v2(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        let value = match key.as_str() {
            "nullable" | "oneOf" | "anyOf" | "allOf" | "not" => continue,
            "properties" | "patternProperties" | "definitions" => match value {
                Value::Object(children) => Value::Object(
                    children
                        .iter()
                        .map(|(name, child)| (name.clone(), to_v2(child)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" | "additionalProperties" => to_v2(value),
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    let nullable = map.get("nullable").and_then(Value::as_bool) == Some(true);
    let int_or_string = map
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    if nullable {
        for key in ["type", "items", "properties", "additionalProperties"] {
            out.remove(key);
        }
    }
    if int_or_string {
        out.remove("type");
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::definitions;

    fn widgets(schema: Value) -> Vec<Kind> {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                          "listKind": "WidgetList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": schema}}]}});
        super::super::definition::kinds_of(&crd)
    }

    #[test]
    fn a_definition_has_the_type_fields_and_its_gvk() {
        let kinds = widgets(json!({"type": "object", "description": "A widget.",
            "properties": {"spec": {"type": "object", "properties": {
                "size": {"type": "integer", "description": "How big."},
                "note": {"type": "string", "nullable": true},
                "port": {"x-kubernetes-int-or-string": true,
                         "anyOf": [{"type": "integer"}, {"type": "string"}]}}},
                "metadata": {"type": "object"}}}));
        let table = KindTable::new(kinds.clone());
        let built = definitions::build(&kinds, &CrdSchemas::new(&table, 7));
        let widget = &built.schemas["com.example.v1.Widget"];
        assert_eq!(widget["description"], "A widget.");
        assert_eq!(widget["properties"]["metadata"]["$ref"], OBJECT_META);
        assert_eq!(widget["properties"]["apiVersion"]["type"], "string");
        assert_eq!(widget["properties"]["kind"]["type"], "string");
        let spec = &widget["properties"]["spec"]["properties"];
        assert_eq!(spec["size"]["description"], "How big.");
        assert!(spec["note"].get("type").is_none(), "{spec}");
        assert!(spec["port"].get("anyOf").is_none(), "{spec}");
        assert_eq!(
            widget["x-kubernetes-group-version-kind"],
            json!([{"group": "example.com", "kind": "Widget", "version": "v1"}])
        );
    }

    #[test]
    fn a_schema_that_is_no_object_is_permissive() {
        let kinds = widgets(json!(true));
        let table = KindTable::new(kinds.clone());
        let built = definitions::build(&kinds, &CrdSchemas::new(&table, 7));
        let widget = &built.schemas["com.example.v1.Widget"];
        assert_eq!(widget["x-kubernetes-preserve-unknown-fields"], true);
    }
}

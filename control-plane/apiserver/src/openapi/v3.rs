//! One OpenAPI v3 group version document: the kinds' PATCH operations (kubectl reads the
//! `fieldValidation` parameter there to learn the server validates fields) and their schemas
//! under `components/schemas`, `$ref`s rewritten as kube publishes them (a reference with a
//! description beside it becomes `allOf: [{$ref}]`, as OpenAPI 3.0 ignores `$ref` siblings).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::documents::group_version_path;
use crate::kinds::Kind;

const V2_REF: &str = "#/definitions/";
const V3_REF: &str = "#/components/schemas/";

/// The document of `kinds` (one group version, with their definition names), holding the
/// definitions `names` of `schemas`.
pub fn document(
    kinds: &[&(Kind, String)],
    schemas: &Map<String, Value>,
    names: &BTreeSet<String>,
    version: &str,
) -> Value {
    let mut paths = Map::new();
    for (kind, _) in kinds {
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
    let mut components = Map::new();
    for name in names {
        if let Some(schema) = schemas.get(name) {
            let mut schema = to_v3(schema);
            one_of(name, &mut schema);
            components.insert(name.clone(), schema);
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": version},
        "paths": paths,
        "components": {"schemas": components},
    })
}

/// Int-or-string and quantities are strings in v2 but either form in v3, as kube publishes
/// them (so `kubectl explain` names them, `<IntOrString>`, rather than `<string>`).
fn one_of(name: &str, schema: &mut Value) {
    let forms = match name {
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            json!([{"type": "integer"}, {"type": "string"}])
        }
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            json!([{"type": "string"}, {"type": "number"}])
        }
        _ => return,
    };
    if let Value::Object(map) = schema {
        map.remove("type");
        map.insert("oneOf".into(), forms);
    }
}

fn to_v3(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            let mut reference = None;
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(r)) => {
                        let name = r.strip_prefix(V2_REF).unwrap_or(r);
                        reference = Some(format!("{V3_REF}{name}"));
                    }
                    // Keys are kept as they are: `properties` holds field names, not keywords.
                    _ => {
                        out.insert(key.clone(), to_v3(value));
                    }
                }
            }
            match reference {
                Some(r) if out.is_empty() => json!({"$ref": r}),
                Some(r) => {
                    out.insert("allOf".into(), json!([{"$ref": r}]));
                    Value::Object(out)
                }
                None => Value::Object(out),
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(to_v3).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_described_reference_becomes_all_of() {
        let v2 = json!({"properties": {"spec": {"$ref": "#/definitions/io.k8s.api.core.v1.PodSpec", "description": "d"}, "x": {"$ref": "#/definitions/A"}}});
        let v3 = to_v3(&v2);
        assert_eq!(
            v3["properties"]["spec"],
            json!({"description": "d", "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}]})
        );
        assert_eq!(
            v3["properties"]["x"],
            json!({"$ref": "#/components/schemas/A"})
        );
    }
}

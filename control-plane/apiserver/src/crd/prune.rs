//! Pruning and defaulting of custom objects by their structural schema, as kube-apiserver does
//! on decoding: fields the schema does not specify are dropped (and reported, for
//! `fieldValidation=Strict`) unless `x-kubernetes-preserve-unknown-fields` keeps them; missing
//! fields with a `default` get it.

use serde_json::Value;

use super::field::{child, index};

/// The fields of ObjectMeta: what decoding keeps of the metadata of a custom object (and of
/// an embedded resource).
const OBJECT_META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

/// Drops from `value` (at `path`, `""` for the object) what `schema` does not specify; returns
/// the paths of what was dropped.
pub fn prune(schema: &Value, value: &mut Value, path: &str) -> Vec<String> {
    let mut dropped = Vec::new();
    walk(schema, value, path, path.is_empty(), &mut dropped);
    dropped
}

fn walk(schema: &Value, value: &mut Value, path: &str, root: bool, dropped: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let embedded = flag(schema, "x-kubernetes-embedded-resource");
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let names: Vec<String> = map.keys().cloned().collect();
            for name in names {
                if (root || embedded) && matches!(name.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    if name == "metadata" {
                        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
                            let unknown: Vec<String> = meta
                                .keys()
                                .filter(|k| !OBJECT_META.contains(&k.as_str()))
                                .cloned()
                                .collect();
                            for field in unknown {
                                meta.remove(&field);
                                dropped.push(format!("{}.{field}", child(path, "metadata")));
                            }
                        }
                    }
                    continue;
                }
                let at = child(path, &name);
                let property = properties.and_then(|p| p.get(&name));
                let values = additional.filter(|a| a.is_object());
                match (property, values) {
                    (Some(s), _) | (None, Some(s)) => {
                        if let Some(v) = map.get_mut(&name) {
                            walk(s, v, &at, false, dropped);
                        }
                    }
                    _ if preserve || additional.and_then(Value::as_bool) == Some(true) => {}
                    _ => {
                        map.remove(&name);
                        dropped.push(at);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item_schema, item, &index(path, i), false, dropped);
                }
            }
        }
        _ => {}
    }
}

/// Fills in the defaults `schema` gives for fields missing from `value` (or null where null is
/// not allowed).
pub fn default(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    let Some(default) = property.get("default") else {
                        continue;
                    };
                    let missing = match map.get(name) {
                        None => true,
                        Some(Value::Null) => !flag(property, "nullable"),
                        Some(_) => false,
                    };
                    if missing {
                        map.insert(name.clone(), default.clone());
                    }
                }
                for (name, child_value) in map.iter_mut() {
                    if let Some(property) = properties.get(name) {
                        default(property, child_value);
                    }
                }
            } else if let Some(values) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for child_value in map.values_mut() {
                    default(values, child_value);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items.iter_mut() {
                    default(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prunes_unknown_fields_and_keeps_preserved_ones() {
        let schema = json!({"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "size": {"type": "integer", "default": 1},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "items": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "mode": {"type": "string", "default": "auto"}}}},
        }}}});
        let mut object = json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w", "color": "red"}, "extra": 1,
            "spec": {"foo": true, "labels": {"a": "b"}, "free": {"x": {"y": 1}},
                     "items": [{"name": "a", "junk": 2}]}});
        let dropped = prune(&schema, &mut object, "");
        assert_eq!(
            dropped,
            vec!["extra", "metadata.color", "spec.foo", "spec.items[0].junk"]
        );
        default(&schema, &mut object);
        assert_eq!(
            object["spec"],
            json!({"size": 1, "labels": {"a": "b"}, "free": {"x": {"y": 1}},
                   "items": [{"name": "a", "mode": "auto"}]})
        );
        assert_eq!(object["metadata"], json!({"name": "w"}));
    }
}

//! Unknown fields by the type schemas: the fallback of server-side strict field validation
//! (`fieldValidation=Strict`, what kubectl sends by default) for kinds the protobuf schema
//! table does not describe, such as pods. Only the shape of each type is kept (its field names
//! and what each holds), once per type however many kinds use it, grown a kind at a time as
//! kinds are first checked.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::{Map, Value};

use super::definitions::{self, BuiltinOnly};
use crate::kinds::Kind;

/// What a field holds.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    /// A scalar, or anything not checked further.
    Open,
    /// An object of a named type.
    Named(String),
    /// A list of these.
    List(Box<Field>),
    /// A map of these.
    Map(Box<Field>),
    /// An object with fields of its own, no name.
    Inline(Box<Shape>),
}

/// The fields of an object type; `None` when it takes any.
#[derive(Debug, Clone, PartialEq)]
struct Shape(Option<BTreeMap<String, Field>>);

#[derive(Default)]
struct Tree {
    types: HashMap<String, Shape>,
    /// The type of each kind checked so far (`None`: no schema, nothing checked).
    roots: HashMap<(String, String, String), Option<String>>,
}

static TREE: Mutex<Option<Tree>> = Mutex::new(None);

const REF_PREFIX: &str = "#/definitions/";

fn field(schema: &Value) -> Field {
    if let Some(name) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(REF_PREFIX))
    {
        return Field::Named(name.to_string());
    }
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return Field::Open;
    }
    if let Some(items) = schema.get("items") {
        return Field::List(Box::new(field(items)));
    }
    if let Some(Value::Object(_)) = schema.get("properties") {
        return Field::Inline(Box::new(shape(schema)));
    }
    match schema.get("additionalProperties") {
        Some(values @ Value::Object(_)) => Field::Map(Box::new(field(values))),
        _ => Field::Open,
    }
}

fn shape(schema: &Value) -> Shape {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return Shape(None);
    }
    match schema.get("properties") {
        Some(Value::Object(properties)) => Shape(Some(
            properties
                .iter()
                .map(|(name, schema)| (name.clone(), field(schema)))
                .collect(),
        )),
        _ => Shape(None),
    }
}

impl Tree {
    fn root(&mut self, kind: &Kind) -> Option<String> {
        let key = (
            kind.group.to_string(),
            kind.version.to_string(),
            kind.kind.to_string(),
        );
        if let Some(root) = self.roots.get(&key) {
            return root.clone();
        }
        let built = definitions::build(std::slice::from_ref(kind), &BuiltinOnly);
        let root = built.roots.first().map(|(_, name)| name.clone());
        let root = root.filter(|name| {
            // A permissive stand-in checks nothing: leave such kinds unchecked.
            built.schemas.get(name).is_some_and(|s| {
                s.get("x-kubernetes-preserve-unknown-fields") != Some(&Value::Bool(true))
            })
        });
        self.add(&built.schemas);
        self.roots.insert(key, root.clone());
        root
    }

    fn add(&mut self, schemas: &Map<String, Value>) {
        for (name, schema) in schemas {
            self.types
                .entry(name.clone())
                .or_insert_with(|| shape(schema));
        }
    }

    fn walk_shape(&self, shape: &Shape, value: &Value, path: &str, unknown: &mut Vec<String>) {
        let (Some(fields), Some(object)) = (&shape.0, value.as_object()) else {
            return;
        };
        for (name, child) in object {
            let at = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            match fields.get(name) {
                Some(field) => self.walk(field, child, &at, unknown),
                None => unknown.push(at),
            }
        }
    }

    fn walk(&self, field: &Field, value: &Value, path: &str, unknown: &mut Vec<String>) {
        match (field, value) {
            (Field::Named(name), _) => {
                if let Some(shape) = self.types.get(name) {
                    self.walk_shape(shape, value, path, unknown);
                }
            }
            (Field::Inline(shape), _) => self.walk_shape(shape, value, path, unknown),
            (Field::List(item), Value::Array(items)) => {
                for (i, value) in items.iter().enumerate() {
                    self.walk(item, value, &format!("{path}[{i}]"), unknown);
                }
            }
            (Field::Map(item), Value::Object(entries)) => {
                for (key, value) in entries {
                    self.walk(item, value, &format!("{path}.{key}"), unknown);
                }
            }
            _ => {}
        }
    }
}

/// The unknown fields of `object` (a `kind`), by JSON path (`spec.containers[0].imagee`), in
/// document order; `None` when the kind has no schema to check against.
pub fn unknown_fields(kind: &Kind, object: &Value) -> Option<Vec<String>> {
    let mut tree = TREE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let tree = tree.get_or_insert_with(Tree::default);
    let root = tree.root(kind)?;
    let shape = tree.types.get(&root)?;
    let mut unknown = Vec::new();
    tree.walk_shape(shape, object, "", &mut unknown);
    Some(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::KindTable;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields_of_a_pod() {
        let table = KindTable::default();
        let Some(pod) = table.find("", "v1", "pods") else {
            panic!("no pods")
        };
        let object = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"bogus": 1, "containers": [{"name": "c", "image": "i", "imagee": "x",
                "resources": {"limits": {"cpu": "1"}}, "ports": [{"containerPort": 80}]}]},
        });
        assert_eq!(
            unknown_fields(pod, &object),
            Some(vec![
                "metadata.bogus".to_string(),
                "spec.bogus".to_string(),
                "spec.containers[0].imagee".to_string(),
            ])
        );
    }

    #[test]
    fn a_kind_without_a_schema_is_not_checked() {
        let mut kind = KindTable::default().all()[0].clone();
        kind.group = "example.com";
        kind.kind = "Widget";
        assert_eq!(unknown_fields(&kind, &json!({"anything": 1})), None);
    }
}

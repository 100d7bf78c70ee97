//! Field sets of objects: the set an applied configuration names (what its manager then owns)
//! and the fields that changed between two objects (what an update's manager takes over),
//! following the kind's list and map semantics.

use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::fieldset::{Element, FieldSet};
use super::schema::{ListType, Schema};

/// Fields of a non-pointer Go struct or a non-omitempty field: kube's typed zero object has
/// them, so an update that fills them in does not own the node itself, only what is inside.
const ALWAYS_PRESENT: &[&str] = &[
    "metadata",
    "spec",
    "status",
    "template",
    "strategy",
    "updateStrategy",
    "containers",
];

static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);
static EMPTY_MAP: LazyLock<Value> = LazyLock::new(|| Value::Object(Map::new()));
static EMPTY_LIST: LazyLock<Value> = LazyLock::new(|| Value::Array(Vec::new()));

/// How a value is walked.
pub(crate) enum Shape<'a> {
    /// Owned as one field: scalars, atomic lists and maps, empty maps and lists.
    Leaf,
    /// A map merged field by field.
    Map(&'a Map<String, Value>),
    /// A list merged by item.
    List(ListType, &'a [Value]),
}

/// The shape of `value` at `path`.
pub(crate) fn shape<'a>(schema: &dyn Schema, path: &[&str], value: &'a Value) -> Shape<'a> {
    match value {
        Value::Object(map) if !map.is_empty() && !schema.atomic_map(path) => Shape::Map(map),
        Value::Array(items) if !items.is_empty() => match schema.list_type(path) {
            ListType::Atomic => Shape::Leaf,
            other => Shape::List(other, items),
        },
        _ => Shape::Leaf,
    }
}

/// The element naming `item` (at `index`) of a list of `list_type` at `path`.
pub fn item_element(
    schema: &dyn Schema,
    path: &[&str],
    list_type: &ListType,
    item: &Value,
    index: usize,
) -> Element {
    match (list_type, item) {
        (ListType::Set, _) => Element::value(item),
        (ListType::Map(keys), Value::Object(fields)) => {
            let mut key = Map::new();
            for name in keys {
                let value = fields
                    .get(name)
                    .cloned()
                    .or_else(|| schema.key_default(path, name));
                if let Some(value) = value {
                    key.insert(name.clone(), value);
                }
            }
            Element::key(&key)
        }
        _ => Element::Index(index),
    }
}

/// The first item of an associative list in `value` that lacks one of the list's keys (and
/// has no default for it), as structured merge words it:
/// `.spec.ports: element 0: associative list with keys has an element that omits key field
/// "port" (and doesn't have default value)`.
pub fn missing_key(schema: &dyn Schema, value: &Value) -> Option<String> {
    missing_key_at(schema, &mut Vec::new(), &mut Vec::new(), value)
}

fn missing_key_at<'a>(
    schema: &dyn Schema,
    path: &mut Vec<&'a str>,
    shown: &mut Vec<Element>,
    value: &'a Value,
) -> Option<String> {
    let map = value.as_object()?;
    for (name, child) in map {
        path.push(name);
        shown.push(Element::Field(name.clone()));
        let found = match shape(schema, path, child) {
            Shape::Map(_) => missing_key_at(schema, path, shown, child),
            Shape::List(ListType::Map(keys), items) => {
                missing_in_items(schema, path, shown, &keys, items)
            }
            _ => None,
        };
        shown.pop();
        path.pop();
        if found.is_some() {
            return found;
        }
    }
    None
}

fn missing_in_items<'a>(
    schema: &dyn Schema,
    path: &mut Vec<&'a str>,
    shown: &mut Vec<Element>,
    keys: &[String],
    items: &'a [Value],
) -> Option<String> {
    let list_type = ListType::Map(keys.to_vec());
    for (i, item) in items.iter().enumerate() {
        let missing = keys
            .iter()
            .find(|k| item.get(k.as_str()).is_none() && schema.key_default(path, k).is_none());
        if let Some(key) = missing {
            return Some(format!(
                "{}: element {i}: associative list with keys has an element that omits key field {key:?} (and doesn't have default value)",
                super::fieldset::display(shown)
            ));
        }
        shown.push(item_element(schema, path, &list_type, item, i));
        let found = missing_key_at(schema, path, shown, item);
        shown.pop();
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The items of a list by element, first occurrence of each, in list order.
pub(crate) fn index_items<'a>(
    schema: &dyn Schema,
    path: &[&str],
    list_type: &ListType,
    items: &'a [Value],
) -> Vec<(Element, &'a Value)> {
    let mut out: Vec<(Element, &Value)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let element = item_element(schema, path, list_type, item, i);
        if !out.iter().any(|(e, _)| *e == element) {
            out.push((element, item));
        }
    }
    out
}

/// The fields an applied configuration sets: leaves, and list items (members themselves).
/// Maps are not members: applying a map owns what is in it.
pub fn applied_set(schema: &dyn Schema, config: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    if let Value::Object(map) = config {
        applied_map(schema, &mut Vec::new(), map, &mut set);
    }
    set.prune();
    set
}

fn applied_map<'a>(
    schema: &dyn Schema,
    path: &mut Vec<&'a str>,
    map: &'a Map<String, Value>,
    set: &mut FieldSet,
) {
    for (name, value) in map {
        path.push(name);
        let element = Element::Field(name.clone());
        applied_value(schema, path, element, value, set);
        path.pop();
    }
}

fn applied_value<'a>(
    schema: &dyn Schema,
    path: &mut Vec<&'a str>,
    element: Element,
    value: &'a Value,
    set: &mut FieldSet,
) {
    match shape(schema, path, value) {
        // An empty map or associative list names nothing to own, as upstream's field sets.
        Shape::Leaf if value.as_object().is_some_and(Map::is_empty) => {}
        Shape::Leaf
            if value.as_array().is_some_and(Vec::is_empty)
                && schema.list_type(path) != ListType::Atomic => {}
        Shape::Leaf => set.insert(element),
        Shape::Map(map) => applied_map(schema, path, map, set.child(element)),
        Shape::List(list_type, items) => {
            let inner = set.child(element);
            for (item_element, item) in index_items(schema, path, &list_type, items) {
                inner.insert(item_element.clone());
                if let Value::Object(fields) = item {
                    applied_map(schema, path, fields, inner.child(item_element));
                }
            }
        }
    }
}

/// What changed from `old` to `new`: the fields added or modified, and those removed. A map or
/// list item that appears is itself added (its `.` in fieldsV1), as upstream's comparison of
/// typed objects makes it.
pub struct Comparison {
    /// Added or modified fields.
    pub changed: FieldSet,
    /// Removed fields.
    pub removed: FieldSet,
}

/// Compares two objects (`old` is `None` on create).
pub fn compare(schema: &dyn Schema, old: Option<&Value>, new: &Value) -> Comparison {
    let mut comparison = Comparison {
        changed: FieldSet::new(),
        removed: FieldSet::new(),
    };
    let empty = Map::new();
    let old_map = old.and_then(Value::as_object).unwrap_or(&empty);
    let new_map = new.as_object().unwrap_or(&empty);
    compare_maps(
        schema,
        &mut Vec::new(),
        old_map,
        new_map,
        true,
        &mut comparison.changed,
        &mut comparison.removed,
    );
    comparison.changed.prune();
    comparison.removed.prune();
    comparison
}

fn compare_maps<'a>(
    schema: &dyn Schema,
    path: &mut Vec<&'a str>,
    old: &'a Map<String, Value>,
    new: &'a Map<String, Value>,
    present: bool,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    let mut names: Vec<&'a String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        path.push(name);
        let implicit = present && ALWAYS_PRESENT.contains(&name.as_str());
        compare_values(
            schema,
            path,
            Element::Field(name.clone()),
            old.get(name),
            new.get(name),
            implicit,
            changed,
            removed,
        );
        path.pop();
    }
}

/// Whether a value is walked as a map (`Some(true)`), a list (`Some(false)`) or is a leaf.
fn container(schema: &dyn Schema, path: &[&str], value: &Value) -> Option<bool> {
    match value {
        Value::Object(_) if !schema.atomic_map(path) => Some(true),
        Value::Array(_) if schema.list_type(path) != ListType::Atomic => Some(false),
        _ => None,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

#[allow(clippy::too_many_arguments)]
fn compare_values<'a>(
    schema: &dyn Schema,
    path: &mut Vec<&'a str>,
    element: Element,
    old: Option<&'a Value>,
    new: Option<&'a Value>,
    implicit: bool,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    // A field kube's zero object always has counts as there, empty.
    let old = match (old, new) {
        (None, Some(Value::Object(_))) if implicit => Some(&*EMPTY_MAP),
        (None, Some(Value::Array(_))) if implicit => Some(&*EMPTY_LIST),
        _ => old,
    };
    let old_kind = old.map(|v| container(schema, path, v));
    let new_kind = new.map(|v| container(schema, path, v));
    let both_empty = old.is_none_or(is_empty) && new.is_none_or(is_empty);
    // Maps and lists compare by what is in them, unless both are empty: then, as upstream,
    // they are leaves, which keeps the difference between empty and absent.
    let walked = match (old_kind, new_kind) {
        (Some(Some(a)), Some(Some(b))) if a == b => Some(a),
        (None, Some(Some(a))) | (Some(Some(a)), None) => Some(a),
        _ => None,
    };
    match walked {
        Some(is_map) if !both_empty => {
            let changed_below = changed.child(element.clone());
            let removed_below = removed.child(element.clone());
            if is_map {
                let o = old.and_then(Value::as_object).unwrap_or(&EMPTY);
                let n = new.and_then(Value::as_object).unwrap_or(&EMPTY);
                compare_maps(
                    schema,
                    path,
                    o,
                    n,
                    old.is_some(),
                    changed_below,
                    removed_below,
                );
            } else {
                let list_type = schema.list_type(path);
                let o = old.and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
                let n = new.and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
                compare_lists(schema, path, &list_type, o, n, changed_below, removed_below);
            }
            if old.is_none() {
                changed.insert(element);
            } else if new.is_none() {
                removed.insert(element);
            }
        }
        _ => match (old, new) {
            (None, Some(_)) => changed.insert(element),
            (Some(_), None) => removed.insert(element),
            (Some(o), Some(n)) if o != n => changed.insert(element),
            _ => {}
        },
    }
}

fn compare_lists<'a>(
    schema: &dyn Schema,
    path: &mut Vec<&'a str>,
    list_type: &ListType,
    old: &'a [Value],
    new: &'a [Value],
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    let old_items = index_items(schema, path, list_type, old);
    let new_items = index_items(schema, path, list_type, new);
    let find = |items: &[(Element, &'a Value)], e: &Element| {
        items.iter().find(|(x, _)| x == e).map(|(_, v)| *v)
    };
    for (element, new_item) in &new_items {
        let old_item = find(&old_items, element);
        compare_item(
            schema,
            path,
            element,
            old_item,
            Some(new_item),
            changed,
            removed,
        );
    }
    for (element, old_item) in &old_items {
        if find(&new_items, element).is_none() {
            compare_item(
                schema,
                path,
                element,
                Some(old_item),
                None,
                changed,
                removed,
            );
        }
    }
}

fn compare_item<'a>(
    schema: &dyn Schema,
    path: &mut Vec<&'a str>,
    element: &Element,
    old: Option<&'a Value>,
    new: Option<&'a Value>,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    let empty: &'static Map<String, Value> = &EMPTY;
    match (old, new) {
        (Some(Value::Object(o)), Some(Value::Object(n))) => compare_maps(
            schema,
            path,
            o,
            n,
            true,
            changed.child(element.clone()),
            removed.child(element.clone()),
        ),
        (None, Some(item)) => {
            if let Value::Object(n) = item {
                compare_maps(
                    schema,
                    path,
                    empty,
                    n,
                    false,
                    changed.child(element.clone()),
                    removed.child(element.clone()),
                );
            }
            changed.insert(element.clone());
        }
        (Some(item), None) => {
            if let Value::Object(o) = item {
                compare_maps(
                    schema,
                    path,
                    o,
                    empty,
                    false,
                    changed.child(element.clone()),
                    removed.child(element.clone()),
                );
            }
            removed.insert(element.clone());
        }
        (Some(o), Some(n)) if o != n => changed.insert(element.clone()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::schema::Builtin;
    use serde_json::json;

    #[test]
    fn applied_set_owns_leaves_and_items() {
        let config = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}}}});
        let set = applied_set(&Builtin, &config);
        let empty = json!({"data": {}, "metadata": {"finalizers": []}, "spec": {"args": []}});
        assert_eq!(
            applied_set(&Builtin, &empty).to_fields_v1(),
            json!({"f:spec": {"f:args": {}}})
        );
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}, "f:ports": {
                    "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}}}})
        );
    }

    #[test]
    fn compare_on_create_marks_new_maps_but_not_zero_structs() {
        let new = json!({"metadata": {"labels": {"a": "b"}}, "data": {"x": "1"},
            "spec": {"strategy": {}, "template": {"spec": {"containers": [
                {"name": "c", "resources": {}, "env": [{"name": "E", "value": "v"}]}]}}}});
        let c = compare(&Builtin, None, &new);
        assert_eq!(
            c.changed.to_fields_v1(),
            json!({
                "f:data": {".": {}, "f:x": {}},
                "f:metadata": {"f:labels": {".": {}, "f:a": {}}},
                "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
                    ".": {}, "f:name": {}, "f:resources": {},
                    "f:env": {".": {}, "k:{\"name\":\"E\"}": {".": {}, "f:name": {}, "f:value": {}}}}}}}}
            })
        );
        assert!(c.removed.is_empty());
    }

    #[test]
    fn items_without_their_keys_are_named() {
        let config = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "env": [{"value": "v"}], "ports": [{"containerPort": 80}]}]}}}});
        assert_eq!(
            missing_key(&Builtin, &config).as_deref(),
            Some(
                ".spec.template.spec.containers[name=\"c\"].env: element 0: associative list with keys has an element that omits key field \"name\" (and doesn't have default value)"
            )
        );
        let fine = json!({"spec": {"ports": [{"port": 80}]}});
        assert_eq!(missing_key(&Builtin, &fine), None);
    }

    #[test]
    fn compare_finds_modified_and_removed() {
        let old = json!({"data": {"a": "1", "b": "2"}, "metadata": {"finalizers": ["x"]}});
        let new = json!({"data": {"a": "9"}, "metadata": {"finalizers": ["x", "y"]}});
        let c = compare(&Builtin, Some(&old), &new);
        assert_eq!(
            c.changed.to_fields_v1(),
            json!({"f:data": {"f:a": {}}, "f:metadata": {"f:finalizers": {"v:\"y\"": {}}}})
        );
        assert_eq!(c.removed.to_fields_v1(), json!({"f:data": {"f:b": {}}}));
    }
}

//! Merging an applied configuration into the live object, and removing what its manager
//! stopped applying: maps merge by field, associative lists and sets by item, everything else
//! (scalars, atomic lists and maps) is replaced.

use serde_json::{Map, Value};

use super::fieldset::{Element, FieldSet};
use super::schema::{ListType, Schema};
use super::walk::{Shape, index_items, item_element, shape};

/// `config` merged into `live`.
pub fn merge(schema: &dyn Schema, live: &Value, config: &Value) -> Value {
    merge_at(schema, &mut Vec::new(), live, config)
}

fn merge_at<'a>(
    schema: &dyn Schema,
    path: &mut Vec<&'a str>,
    live: &'a Value,
    config: &'a Value,
) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) if !schema.atomic_map(path) => {
            let mut out = l.clone();
            for (name, value) in c {
                path.push(name);
                // A null in a configuration unsets the field.
                if value.is_null() {
                    out.remove(name);
                } else {
                    let merged = match l.get(name) {
                        Some(current) => merge_at(schema, path, current, value),
                        None => value.clone(),
                    };
                    out.insert(name.clone(), merged);
                }
                path.pop();
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => match schema.list_type(path) {
            ListType::Atomic => config.clone(),
            list_type => Value::Array(merge_lists(schema, path, &list_type, l, c)),
        },
        _ => config.clone(),
    }
}

/// Items of both lists: live items the configuration does not name stay where they were, the
/// configuration's items come in its order, each merged with its live counterpart.
fn merge_lists<'a>(
    schema: &dyn Schema,
    path: &mut Vec<&'a str>,
    list_type: &ListType,
    live: &'a [Value],
    config: &'a [Value],
) -> Vec<Value> {
    let lhs = index_items(schema, path, list_type, live);
    let rhs = index_items(schema, path, list_type, config);
    let in_rhs = |e: &Element| rhs.iter().any(|(x, _)| x == e);
    let lhs_item = |e: &Element| lhs.iter().find(|(x, _)| x == e).map(|(_, v)| *v);
    let merged_item = |path: &mut Vec<&'a str>, e: &Element, c: &'a Value| match lhs_item(e) {
        Some(l) => merge_at(schema, path, l, c),
        None => c.clone(),
    };
    let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
    let mut next = 0;
    for (element, item) in &lhs {
        if !in_rhs(element) {
            out.push((*item).clone());
            continue;
        }
        // A shared item: the configuration's items up to it come first, in its order.
        while next < rhs.len() {
            let (e, c) = &rhs[next];
            next += 1;
            out.push(merged_item(path, e, c));
            if e == element {
                break;
            }
        }
    }
    for (e, c) in &rhs[next..] {
        out.push(merged_item(path, e, c));
    }
    out
}

/// Removes from `object` the leaves and list items of `removed` (a list item with everything
/// in it); a map left empty by the removal goes too (as upstream makes named fields members).
pub fn remove(schema: &dyn Schema, object: &mut Value, removed: &FieldSet) {
    if let Value::Object(map) = object {
        remove_in_map(schema, &mut Vec::new(), map, removed, true);
    }
}

fn remove_in_map<'a>(
    schema: &dyn Schema,
    path: &mut Vec<&'a str>,
    map: &mut Map<String, Value>,
    removed: &'a FieldSet,
    root: bool,
) {
    for (element, member, below) in removed.entries() {
        let Element::Field(name) = element else {
            continue;
        };
        let Some(value) = map.get_mut(name) else {
            continue;
        };
        path.push(name);
        // Only leaves and list items go whole; a map or list named as a member (the `.` of
        // an update's set) loses only what else is removed below it, as upstream prunes
        // the leaves of the merged object.
        if member && matches!(shape(schema, path, value), Shape::Leaf) {
            path.pop();
            map.remove(name);
            continue;
        }
        let was_empty = matches!(value, Value::Object(m) if m.is_empty());
        remove_in_value(schema, path, value, below);
        path.pop();
        let now_empty = match value {
            Value::Object(m) => m.is_empty(),
            Value::Array(items) => items.is_empty(),
            _ => false,
        };
        if now_empty && !was_empty && !root {
            map.remove(name);
        }
    }
}

fn remove_in_value<'a>(
    schema: &dyn Schema,
    path: &mut Vec<&'a str>,
    value: &mut Value,
    removed: &'a FieldSet,
) {
    match shape(schema, path, value) {
        Shape::Map(_) => {
            if let Value::Object(map) = value {
                remove_in_map(schema, path, map, removed, false);
            }
        }
        Shape::List(list_type, _) => {
            let Value::Array(items) = value else { return };
            let elements: Vec<Element> = items
                .iter()
                .enumerate()
                .map(|(i, item)| item_element(schema, path, &list_type, item, i))
                .collect();
            let mut kept = Vec::with_capacity(items.len());
            for (item, element) in items.drain(..).zip(elements) {
                if removed.has_member(&element) {
                    continue;
                }
                let mut item = item;
                if let (Some(below), Value::Object(fields)) = (removed.get(&element), &mut item) {
                    let keys: Vec<String> = match &list_type {
                        ListType::Map(keys) => keys.clone(),
                        _ => Vec::new(),
                    };
                    let saved: Vec<(String, Value)> = keys
                        .iter()
                        .filter_map(|k| fields.get(k).map(|v| (k.clone(), v.clone())))
                        .collect();
                    remove_in_map(schema, path, fields, below, false);
                    // An item keeps its keys while it stays.
                    for (k, v) in saved {
                        fields.insert(k, v);
                    }
                }
                kept.push(item);
            }
            *items = kept;
        }
        Shape::Leaf => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::schema::Builtin;
    use crate::apply::walk::applied_set;
    use serde_json::json;

    #[test]
    fn merges_containers_by_name_and_replaces_atomic_lists() {
        let live = json!({"spec": {"containers": [{"name": "a", "image": "a:1", "args": ["x"]},
                                                   {"name": "b", "image": "b:1"}],
                                   "tolerations": [{"key": "k"}]}});
        let config = json!({"spec": {"containers": [{"name": "b", "image": "b:2"},
                                                     {"name": "c", "image": "c:1"}],
                                     "tolerations": [{"key": "t"}]}});
        let merged = merge(&Builtin, &live, &config);
        assert_eq!(
            merged,
            json!({"spec": {"containers": [{"name": "a", "image": "a:1", "args": ["x"]},
                                           {"name": "b", "image": "b:2"},
                                           {"name": "c", "image": "c:1"}],
                            "tolerations": [{"key": "t"}]}})
        );
    }

    #[test]
    fn remove_drops_members_and_emptied_maps() {
        let mut object = json!({"metadata": {"labels": {"a": "1"}},
            "spec": {"replicas": 2, "containers": [{"name": "a", "image": "i"}, {"name": "b"}]}});
        let dropped = applied_set(
            &Builtin,
            &json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 2,
                "containers": [{"name": "a", "image": "i"}]}}),
        );
        let kept = applied_set(&Builtin, &json!({"spec": {"containers": [{"name": "a"}]}}));
        remove(&Builtin, &mut object, &dropped.difference(&kept));
        assert_eq!(
            object,
            json!({"metadata": {}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}})
        );
    }
}

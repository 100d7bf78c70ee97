//! `additionalPrinterColumns`: the Table (`kubectl get`) of custom resources, Name then the
//! definition's columns (Age when it lists none), each cell read by a simple JSONPath.

use serde_json::{Value, json};

use super::CustomVersion;
use crate::table::human_age;

/// One printer column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The header.
    pub name: String,
    /// `integer`, `number`, `string`, `boolean` or `date`.
    pub kind: String,
    /// The OpenAPI format, e.g. `int32`.
    pub format: String,
    /// The description.
    pub description: String,
    /// 0 for the default view; more only in `-o wide`.
    pub priority: i64,
    /// Where the cell's value is, e.g. `.spec.size`.
    pub json_path: String,
}

/// The columns of one version of a definition; Age when it lists none, as upstream.
pub fn of_version(version: &Value) -> Vec<Column> {
    let listed: Vec<Column> = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|columns| {
            columns
                .iter()
                .map(|c| {
                    let text = |f: &str| c.get(f).and_then(Value::as_str).unwrap_or("").to_string();
                    Column {
                        name: text("name"),
                        kind: text("type"),
                        format: text("format"),
                        description: text("description"),
                        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                        json_path: text("jsonPath"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if !listed.is_empty() {
        return listed;
    }
    vec![Column {
        name: "Age".into(),
        kind: "date".into(),
        format: String::new(),
        description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    }]
}

/// The value at a simple JSONPath (`.a.b`, `.a[0].b`, `.a['b.c']`), if any.
pub fn lookup<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut current = object;
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let (field, tail) = after.split_at(end);
            if !field.is_empty() {
                current = current.get(field)?;
            }
            rest = tail;
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let inside = after[..end].trim();
            rest = &after[end + 1..];
            let quoted = inside
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inside.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
            current = match quoted {
                Some(key) => current.get(key)?,
                None => current.get(inside.parse::<usize>().ok()?)?,
            };
        } else {
            return None;
        }
    }
    Some(current)
}

fn cell(column: &Column, object: &Value, ages: bool) -> Value {
    let Some(value) = lookup(object, &column.json_path) else {
        return Value::Null;
    };
    if column.kind == "date" && ages {
        if let Some(time) = value
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        {
            let age = chrono::Utc::now() - time.with_timezone(&chrono::Utc);
            return json!(human_age(age.num_seconds()));
        }
    }
    // Each type shows what it can of the value, nothing (`<none>`) otherwise, as upstream.
    match (column.kind.as_str(), value) {
        ("string", Value::String(_)) => value.clone(),
        ("string", other) => json!(other.to_string()),
        ("integer", Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map_or(Value::Null, |i| json!(i)),
        ("number", Value::Number(_)) | ("boolean", Value::Bool(_)) => value.clone(),
        ("date", Value::String(_)) => value.clone(),
        _ => Value::Null,
    }
}

/// The Table of definitions: Name and the creation time as a timestamp, as upstream's
/// default table shows them.
pub fn definitions_table(objects: &[Value], metadata: Option<Value>) -> Value {
    let columns = CustomVersion {
        definition: String::new(),
        storage_version: "v1",
        schema: None,
        apply: Default::default(),
        columns: vec![Column {
            name: "Created At".into(),
            kind: "date".into(),
            format: String::new(),
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
            priority: 0,
            json_path: ".metadata.creationTimestamp".into(),
        }],
        scale: None,
        terminating: false,
        deprecation: None,
        selectable: Vec::new(),
        list_kind: String::new(),
    };
    build(&columns, objects, metadata, false)
}

/// The Table of custom objects of one version (dates as ages); `metadata` is the list's.
pub fn table(custom: &CustomVersion, objects: &[Value], metadata: Option<Value>) -> Value {
    build(custom, objects, metadata, true)
}

fn build(custom: &CustomVersion, objects: &[Value], metadata: Option<Value>, ages: bool) -> Value {
    let mut definitions = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    for column in &custom.columns {
        definitions.push(json!({
            "name": column.name, "type": column.kind, "format": column.format,
            "description": column.description, "priority": column.priority,
        }));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![
                object
                    .pointer("/metadata/name")
                    .cloned()
                    .unwrap_or_else(|| json!("")),
            ];
            cells.extend(custom.columns.iter().map(|c| cell(c, object, ages)));
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata.unwrap_or_else(|| json!({})),
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_reach_fields_items_and_quoted_keys() {
        let object = json!({"spec": {"size": 3, "list": [{"a": 1}], "x.y": "q"}});
        assert_eq!(lookup(&object, ".spec.size"), Some(&json!(3)));
        assert_eq!(lookup(&object, ".spec.list[0].a"), Some(&json!(1)));
        assert_eq!(lookup(&object, ".spec['x.y']"), Some(&json!("q")));
        assert_eq!(lookup(&object, ".spec.none"), None);
    }
}

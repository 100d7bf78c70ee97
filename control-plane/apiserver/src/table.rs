//! `meta.k8s.io/v1` Tables, which `kubectl get` asks for: server-side printing of a few columns
//! per kind, each row carrying the object's metadata as kubectl needs it.

use serde_json::{Value, json};

use crate::kinds::Kind;

/// Whether an `Accept` header asks for a Table first.
pub fn wanted(accept: Option<&str>) -> bool {
    accept
        .and_then(|a| a.split(',').next())
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

/// A column: its name, type and description.
fn column(name: &str, kind: &str, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": 0})
}

/// kube's human durations: `45s`, `3m20s`, `5h`, `2d3h`, `40d`.
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => format!("{m}m{}s", s % 60),
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if d < 8 => format!("{d}d{}h", h % 24),
        _ => format!("{d}d"),
    }
}

fn age(object: &Value) -> String {
    let created = object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    match created {
        Some(t) => human_age((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()),
        None => "<unknown>".into(),
    }
}

fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The Table of `objects`; `metadata` is the list's (resourceVersion, continue).
pub fn of_objects(kind: &Kind, objects: &[Value], metadata: Option<Value>) -> Value {
    if let Some(custom) = &kind.custom {
        return crate::crd::columns::table(custom, objects, metadata);
    }
    if crate::crd::is_definition(kind) {
        return crate::crd::columns::definitions_table(objects, metadata);
    }
    if let Some(printed) = crate::printers::columns(kind) {
        let definitions: Vec<Value> = printed
            .iter()
            .map(|(name, kind, priority)| {
                let mut definition = column(name, kind, name);
                definition["priority"] = json!(priority);
                definition
            })
            .collect();
        let rows = objects
            .iter()
            .map(|object| row_of(crate::printers::cells(kind, object), object))
            .collect();
        return table(definitions, rows, metadata);
    }
    // Kinds upstream prints with no columns of their own: Name and Age.
    let mut definitions = vec![column(
        "Name",
        "string",
        "Name must be unique within a namespace.",
    )];
    definitions.push(column("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created."));
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let row = vec![json!(str_at(object, "/metadata/name")), json!(age(object))];
            row_of(row, object)
        })
        .collect();
    table(definitions, rows, metadata)
}

/// One row: its cells and the object's metadata, as kubectl reads them.
fn row_of(cells: Vec<Value>, object: &Value) -> Value {
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
        },
    })
}

fn table(definitions: Vec<Value>, rows: Vec<Value>, metadata: Option<Value>) -> Value {
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
    fn ages_read_as_kubectl_prints_them() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(200), "3m20s");
        assert_eq!(human_age(3 * 3600 + 60), "3h1m");
        assert_eq!(human_age(50 * 3600), "2d2h");
        assert!(wanted(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        )));
        assert!(!wanted(Some("application/json")));
    }
}

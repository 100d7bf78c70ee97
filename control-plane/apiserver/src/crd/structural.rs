//! Upstream's structural-schema rules for the `openAPIV3Schema` of a definition version: a
//! type everywhere, an object at the root, items for arrays, no `$ref`, no
//! `additionalProperties` beside `properties`, valid and pruned defaults, and a refusal of
//! what this server does not evaluate (CEL rules).

use serde_json::{Value, json};

use super::field::{self, child, key};
use crate::status::Cause;

/// The causes `schema`, the root schema at `path`, is refused with.
pub fn check(schema: &Value, path: &str, out: &mut Vec<Cause>) {
    structural(schema, path, Level::Root, out);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Root,
    Field,
    Item,
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

/// The rules at one node of the schema, then at its children.
fn structural(schema: &Value, path: &str, level: Level, out: &mut Vec<Cause>) {
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    let embedded = flag(schema, "x-kubernetes-embedded-resource");
    if embedded && ty != "object" {
        out.push(if ty.is_empty() {
            field::required(
                &child(path, "type"),
                "must be object if x-kubernetes-embedded-resource is true",
            )
        } else {
            field::invalid(
                &child(path, "type"),
                &json!(ty),
                "must be object if x-kubernetes-embedded-resource is true",
            )
        });
    } else if ty.is_empty() && !int_or_string && !preserve {
        let detail = match level {
            Level::Root => "must not be empty at the root",
            Level::Field => "must not be empty for specified object fields",
            Level::Item => "must not be empty for specified array items",
        };
        out.push(field::required(&child(path, "type"), detail));
    }
    if level == Level::Root && !ty.is_empty() && ty != "object" {
        out.push(field::invalid(
            &child(path, "type"),
            &json!(ty),
            "must be object at the root",
        ));
    }
    if schema.get("$ref").is_some() {
        out.push(field::forbidden(
            &child(path, "$ref"),
            "$ref is not supported",
        ));
    }
    if flag(schema, "uniqueItems") {
        out.push(field::forbidden(
            &child(path, "uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    if schema.get("x-kubernetes-validations").is_some() {
        // Not pretended: CEL is not evaluated here, so rules would silently not hold.
        out.push(field::forbidden(
            &child(path, "x-kubernetes-validations"),
            "CEL validation rules are not supported by this server (capstan)",
        ));
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(additional) = schema.get("additionalProperties") {
        if properties.is_some_and(|p| !p.is_empty()) && additional != &Value::Bool(true) {
            out.push(field::forbidden(
                &child(path, "additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            ));
        }
        if additional.is_object() {
            structural(
                additional,
                &child(path, "additionalProperties"),
                Level::Field,
                out,
            );
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        if let Err(error) = regex::Regex::new(pattern) {
            out.push(field::invalid(
                &child(path, "pattern"),
                &json!(pattern),
                &format!("must be a valid regular expression, but isn't: {error}"),
            ));
        }
    }
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map")
        && schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    {
        out.push(field::required(
            &child(path, "x-kubernetes-list-map-keys"),
            "must not be empty if x-kubernetes-list-type is map",
        ));
    }
    if ty == "array" {
        match schema.get("items") {
            Some(items) if items.is_object() => {
                structural(items, &child(path, "items"), Level::Item, out)
            }
            _ => out.push(field::required(&child(path, "items"), "must be specified")),
        }
    }
    if let Some(default) = schema.get("default") {
        // A default must be what the schema accepts, and already pruned.
        let at = child(path, "default");
        let mut pruned = default.clone();
        for dropped in super::prune::prune(schema, &mut pruned, "") {
            out.push(field::invalid(
                &at,
                default,
                &format!("must not have unknown fields: {dropped:?}"),
            ));
        }
        out.extend(super::schema::validate(schema, default, &at));
    }
    if level == Level::Root {
        if let Some(metadata) = properties.and_then(|p| p.get("metadata")) {
            let restricted = metadata
                .as_object()
                .is_some_and(|m| m.keys().any(|k| k != "type" && k != "properties"))
                || metadata
                    .get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|p| p.keys().any(|k| k != "name" && k != "generateName"));
            if restricted {
                out.push(field::forbidden(
                    &key(&child(path, "properties"), "metadata"),
                    "must not specify anything other than name and generateName, but metadata is implicitly specified",
                ));
            }
        }
    }
    for (name, property) in properties.into_iter().flatten() {
        structural(
            property,
            &key(&child(path, "properties"), name),
            Level::Field,
            out,
        );
    }
}

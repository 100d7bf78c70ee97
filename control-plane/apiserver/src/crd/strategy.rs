//! What writes and reads do to definitions and custom objects beyond the generic strategy:
//! definitions are defaulted, validated and accepted at once (NamesAccepted, Established);
//! custom objects are stored in the storage version, pruned, defaulted and validated by their
//! schema, and read back in the version asked for, defaulted.

use serde_json::{Value, json};

use super::cleanup::set_condition;
use super::{CLEANUP_FINALIZER, definition, is_definition, prune, schema, validate};
use crate::kinds::Kind;
use crate::status::{ApiError, ApiResult};
use crate::strategy::{meta_str, metadata_mut};

/// The Invalid error of a custom object or definition, whose message names the kind with its
/// group (`Widget.example.com "w" is invalid: ...`), as upstream's.
fn invalid(kind: &Kind, name: &str, causes: Vec<crate::status::Cause>) -> ApiError {
    ApiError::invalid(kind.group, kind.kind, name, causes)
}

/// Prepares `object` of `kind`, about to be stored (`old` on updates), after the generic
/// strategy: nothing for built-in kinds.
pub fn prepare(kind: &Kind, object: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    if is_definition(kind) {
        return prepare_definition(kind, object, old);
    }
    let Some(custom) = &kind.custom else {
        return Ok(());
    };
    if custom.terminating && old.is_none() {
        let mut error = ApiError::method_not_allowed("create");
        error.message = "create not allowed while custom resource definition is terminating".into();
        return Err(error);
    }
    object["apiVersion"] = json!(format!("{}/{}", kind.group, custom.storage_version));
    if old.is_none() && kind.status_subresource {
        // Upstream creates custom objects without status when status is a subresource; the
        // generic strategy already dropped what the client sent.
        if let Some(map) = object.as_object_mut() {
            map.remove("status");
        }
    }
    if let Some(old) = old.filter(|_| !kind.status_subresource) {
        // Without a status subresource status is part of what generation counts, as upstream.
        let generation = |o: &Value| o.pointer("/metadata/generation").and_then(Value::as_i64);
        if object.get("status") != old.get("status") && generation(object) == generation(old) {
            let next = generation(old).unwrap_or(0) + 1;
            metadata_mut(object).insert("generation".into(), json!(next));
        }
    }
    let Some(schema) = &custom.schema else {
        return Ok(());
    };
    prune::prune(schema, object, "");
    prune::default(schema, object);
    let causes = schema::validate(schema, object, "");
    if causes.is_empty() {
        return Ok(());
    }
    let name = meta_str(object, "name").unwrap_or("").to_string();
    Err(invalid(kind, &name, causes))
}

/// What a custom object read from the store is shown as: in the version of `kind`, with the
/// defaults its schema gives (upstream defaults on read too).
pub fn read(kind: &Kind, object: &mut Value) {
    let Some(custom) = &kind.custom else {
        return;
    };
    object["apiVersion"] = json!(kind.api_version());
    if let Some(schema) = &custom.schema {
        prune::default(schema, object);
    }
}

/// `fieldValidation=Strict` for custom objects: what pruning would drop is an error, as
/// upstream's `unknown field "spec.foo"`.
pub fn strict(kind: &Kind, object: &Value, directive: Option<&str>) -> ApiResult<()> {
    let Some(schema) = kind.custom.as_ref().and_then(|c| c.schema.as_ref()) else {
        return Ok(());
    };
    if directive != Some("Strict") {
        return Ok(());
    }
    let mut pruned = object.clone();
    let dropped = prune::prune(schema, &mut pruned, "");
    if dropped.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = dropped
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    Err(ApiError::bad_request(format!(
        "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
        listed.join(", "),
        kind = kind.kind,
        version = kind.version,
    )))
}

/// The `Warning` texts of unknown fields of a custom object under `fieldValidation=Warn`,
/// which is also what no parameter means (kube-apiserver's default).
pub fn warnings(kind: &Kind, object: &Value, directive: Option<&str>) -> Vec<String> {
    let Some(schema) = kind.custom.as_ref().and_then(|c| c.schema.as_ref()) else {
        return Vec::new();
    };
    if !matches!(directive, None | Some("Warn") | Some("")) {
        return Vec::new();
    }
    let mut pruned = object.clone();
    prune::prune(schema, &mut pruned, "")
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect()
}

/// `response`, with `warnings` joined to its request's: the server writes them all as
/// `Warning: 299 - "<text>"` headers, once each, as kube sends them.
pub fn with_warnings(
    response: http::Response<crate::body::ApiBody>,
    warnings: &[String],
) -> http::Response<crate::body::ApiBody> {
    for warning in warnings {
        crate::admission::warnings::add(warning.clone());
    }
    response
}

/// Defaults of a definition: singular and listKind from the kind, conversion `None`.
fn default_definition(crd: &mut Value) {
    let kind = crd
        .pointer("/spec/names/kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(names) = crd
        .pointer_mut("/spec/names")
        .and_then(Value::as_object_mut)
    {
        if !kind.is_empty() {
            names
                .entry("singular")
                .or_insert_with(|| json!(kind.to_lowercase()));
            names
                .entry("listKind")
                .or_insert_with(|| json!(format!("{kind}List")));
        }
    }
    if let Some(spec) = crd.get_mut("spec").and_then(Value::as_object_mut) {
        spec.entry("conversion")
            .or_insert_with(|| json!({"strategy": "None"}));
    }
}

fn prepare_definition(kind: &Kind, crd: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    default_definition(crd);
    let causes = validate::definition(crd, old);
    if !causes.is_empty() {
        let name = meta_str(crd, "name").unwrap_or("").to_string();
        return Err(invalid(kind, &name, causes));
    }
    if old.is_none() {
        let meta = metadata_mut(crd);
        let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(list) = finalizers.as_array_mut() {
            if !list.iter().any(|f| f == CLEANUP_FINALIZER) {
                list.push(json!(CLEANUP_FINALIZER));
            }
        }
    }
    // Names are accepted and the resource established at once: this server has no separate
    // controllers, and serves the definition as soon as it is stored.
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    if !crd.get("status").is_some_and(Value::is_object) {
        crd["status"] = json!({});
    }
    crd["status"]["acceptedNames"] = names;
    let storage = definition::storage_version(crd).unwrap_or("").to_string();
    let mut stored: Vec<Value> = crd
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !stored.contains(&json!(storage)) {
        stored.push(json!(storage));
    }
    crd["status"]["storedVersions"] = Value::Array(stored);
    let now = crate::strategy::now();
    set_condition(
        crd,
        json!({"type": "NamesAccepted", "status": "True", "lastTransitionTime": now,
               "reason": "NoConflicts", "message": "no conflicts found"}),
    );
    set_condition(
        crd,
        json!({"type": "Established", "status": "True", "lastTransitionTime": now,
               "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status_subresource: bool) -> Kind {
        let mut version = json!({"name": "v1", "served": true, "storage": true,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {"n": {"type": "integer", "default": 1}}},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}});
        if status_subresource {
            version["subresources"] = json!({"status": {}});
        }
        let crd = json!({"metadata": {"name": "things.example.com"}, "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "things", "kind": "Thing"}, "versions": [version]}});
        match definition::kinds_of(&crd).into_iter().next() {
            Some(kind) => kind,
            None => panic!("no kind"),
        }
    }

    #[test]
    fn status_counts_for_generation_only_without_the_subresource() {
        for (subresource, expected) in [(false, 2), (true, 1)] {
            let kind = kind(subresource);
            let old = json!({"metadata": {"name": "t", "generation": 1}, "spec": {"n": 1}});
            let mut new = json!({"metadata": {"name": "t", "generation": 1}, "spec": {"n": 1},
                                 "status": {"ok": true}});
            crate::strategy::prepare_update(&kind, &mut new, &old);
            assert_eq!(prepare(&kind, &mut new, Some(&old)), Ok(()));
            assert_eq!(
                new["metadata"]["generation"], expected,
                "subresource {subresource}"
            );
            assert_eq!(new["apiVersion"], "example.com/v1");
        }
    }

    #[test]
    fn strict_names_every_unknown_field() {
        let kind = kind(true);
        let object = json!({"metadata": {"name": "t"}, "spec": {"n": 1, "x": 1, "y": 2}});
        let error = strict(&kind, &object, Some("Strict")).map_err(|e| e.message);
        assert_eq!(
            error,
            Err("Thing in version \"v1\" cannot be handled as a Thing: strict decoding error: unknown field \"spec.x\", unknown field \"spec.y\"".into())
        );
        assert_eq!(strict(&kind, &object, Some("Warn")), Ok(()));
    }
}

//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the common cases of
//! strategic merge patch (lists merged by key, `$patch`, `$retainKeys`,
//! `$deleteFromPrimitiveList`, `$setElementOrder`), which kubectl apply, label and annotate send.
//!
//! Strategic merge knows list merge keys by field name rather than from per-type schemas: the
//! names used are the ones the built-in kinds declare with `patchMergeKey`, and a list field not
//! in the table is replaced, as with merge patch. Kinds that reuse a name with another meaning
//! would need the per-type tables.

use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};

/// The patch types a PATCH may carry, by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// The patch type of a content type, if it is one.
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        match essence {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Applies `patch` (the raw body) of `patch_type` to `current`.
pub fn apply(current: &Value, patch_type: PatchType, patch: &[u8]) -> ApiResult<Value> {
    match patch_type {
        PatchType::Json => {
            let operations: json_patch::Patch = serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut target = current.clone();
            json_patch::patch(&mut target, &operations).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
            Ok(target)
        }
        PatchType::Merge => {
            let patch = decode_object(patch)?;
            let mut target = current.clone();
            json_patch::merge(&mut target, &patch);
            Ok(target)
        }
        PatchType::Strategic => {
            let patch = decode_object(patch)?;
            Ok(strategic(current, &patch))
        }
        PatchType::Apply => Err(ApiError::unsupported_media_type(
            "application/apply-patch+yaml (server-side apply merges in the apply module, not here)",
        )),
    }
}

fn decode_object(patch: &[u8]) -> ApiResult<Value> {
    let value: Value = serde_json::from_slice(patch)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(ApiError::bad_request(
            "error decoding patch: a merge patch must be a JSON object",
        ))
    }
}

/// The merge key of list fields the built-in kinds merge by key.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates"
        | "readinessGates" => match field {
            "readinessGates" => "conditionType",
            _ => "name",
        },
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ownerReferences" => "uid",
        "conditions" | "taints" => match field {
            "taints" => "key",
            _ => "type",
        },
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        // Container ports merge by containerPort, service ports by port: told apart per item.
        "ports" => "containerPort",
        _ => return None,
    })
}

/// Primitive lists whose strategy is merge (union) rather than replace.
fn merges_primitives(field: &str) -> bool {
    matches!(field, "finalizers")
}

/// A strategic merge of `patch` into `current`.
pub fn strategic(current: &Value, patch: &Value) -> Value {
    match (current, patch) {
        (Value::Object(current), Value::Object(patch)) => Value::Object(merge_maps(current, patch)),
        _ => strip_directives(patch),
    }
}

fn merge_maps(current: &Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        replaced.remove("$patch");
        return strip_map(&replaced);
    }
    let mut out = current.clone();
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" || key == "$patch" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) = (out.get_mut(field), value) {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        match value {
            Value::Null => {
                out.remove(key);
            }
            Value::Object(patch_map) => {
                if patch_map.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.remove(key);
                    continue;
                }
                let merged = match out.get(key) {
                    Some(Value::Object(current_map)) => merge_maps(current_map, patch_map),
                    _ => strip_map(patch_map),
                };
                out.insert(key.clone(), Value::Object(merged));
            }
            Value::Array(patch_list) => {
                let merged = match out.get(key) {
                    Some(Value::Array(current_list)) => merge_lists(key, current_list, patch_list),
                    _ => strip_list(patch_list),
                };
                out.insert(key.clone(), Value::Array(merged));
            }
            other => {
                out.insert(key.clone(), other.clone());
            }
        }
    }
    out
}

fn merge_lists(field: &str, current: &[Value], patch: &[Value]) -> Vec<Value> {
    if patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return strip_list(
            &patch
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    if merges_primitives(field) {
        let mut out = current.to_vec();
        for item in patch {
            if !out.contains(item) {
                out.push(item.clone());
            }
        }
        return out;
    }
    let Some(default_key) = merge_key(field) else {
        return strip_list(patch);
    };
    let key_of = |item: &Value| -> Option<(&'static str, Value)> {
        // Service ports carry `port` and no `containerPort`.
        let key = if default_key == "containerPort" && item.get("containerPort").is_none() {
            "port"
        } else {
            default_key
        };
        item.get(key).map(|v| (key, v.clone()))
    };
    if !patch.iter().all(|i| i.is_object() && key_of(i).is_some()) {
        return strip_list(patch);
    }
    let mut out: Vec<Value> = current.to_vec();
    for item in patch {
        let Some((key, wanted)) = key_of(item) else {
            continue;
        };
        let position = out
            .iter()
            .position(|existing| existing.get(key) == Some(&wanted));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(at), true) => {
                out.remove(at);
            }
            (None, true) => {}
            (Some(at), false) => {
                let merged = strategic(&out[at], item);
                out[at] = merged;
            }
            (None, false) => out.push(strip_directives(item)),
        }
    }
    out
}

fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(strip_map(map)),
        Value::Array(list) => Value::Array(strip_list(list)),
        other => other.clone(),
    }
}

/// A patch value put where nothing was: its directives dropped, its nulls too (a merge patch
/// null deletes, and there is nothing to delete).
fn strip_map(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .map(|(k, v)| (k.clone(), strip_directives(v)))
        .collect()
}

fn strip_list(list: &[Value]) -> Vec<Value> {
    list.iter().map(strip_directives).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let current = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "b:2"}]}});
        let merged = strategic(&current, &patch);
        assert_eq!(
            merged,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}]}})
        );
    }

    #[test]
    fn strategic_deletes_and_labels() {
        let current = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
                             "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({"metadata": {"labels": {"a": null, "c": "3"},
                                        "$deleteFromPrimitiveList/finalizers": ["x"]},
                           "spec": {"containers": [{"name": "a", "$patch": "delete"}]}});
        let merged = strategic(&current, &patch);
        assert_eq!(
            merged,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}, "finalizers": []},
                   "spec": {"containers": [{"name": "b"}]}})
        );
    }

    #[test]
    fn json_patch_and_merge_patch() {
        let current = json!({"data": {"a": "1"}});
        let merged = apply(
            &current,
            PatchType::Merge,
            br#"{"data":{"a":null,"b":"2"}}"#,
        );
        assert_eq!(merged, Ok(json!({"data": {"b": "2"}})));
        let patched = apply(
            &current,
            PatchType::Json,
            br#"[{"op":"replace","path":"/data/a","value":"9"}]"#,
        );
        assert_eq!(patched, Ok(json!({"data": {"a": "9"}})));
        let failed = apply(
            &current,
            PatchType::Json,
            br#"[{"op":"test","path":"/data/a","value":"0"}]"#,
        );
        assert_eq!(failed.map_err(|e| e.code), Err(422));
        let broken = apply(&current, PatchType::Merge, b"{");
        assert_eq!(broken.map_err(|e| e.code), Err(400));
    }
}

//! What upstream's naming controller decides: a definition whose kind, list kind or short
//! names another definition of the group already uses (the older one wins) is not served, and
//! says so in its `NamesAccepted` and `Established` conditions.

use std::collections::HashMap;
use std::sync::Arc;

use capstan_store::{Store, StoreError};
use serde_json::{Value, json};

use super::cleanup::set_condition;

/// Why a definition's names are refused: the condition reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `KindConflict`, `ListKindConflict` or `ShortNamesConflict`.
    pub reason: &'static str,
    /// `"Widget" is already in use`.
    pub message: String,
}

fn text<'a>(crd: &'a Value, pointer: &str) -> &'a str {
    crd.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The definitions (by name) whose names clash with an older definition of the same group.
pub fn conflicts(definitions: &[Value]) -> HashMap<String, Conflict> {
    let mut ordered: Vec<&Value> = definitions.iter().collect();
    ordered.sort_by(|a, b| {
        let key = |d: &Value| {
            (
                text(d, "/metadata/creationTimestamp").to_string(),
                text(d, "/metadata/name").to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
    // Per group: the kinds and the resource names (plurals, singulars, short names) in use.
    let mut kinds: HashMap<String, Vec<String>> = HashMap::new();
    let mut resources: HashMap<String, Vec<String>> = HashMap::new();
    let mut refused = HashMap::new();
    for crd in ordered {
        let group = text(crd, "/spec/group").to_string();
        let kind = text(crd, "/spec/names/kind").to_string();
        let list_kind = text(crd, "/spec/names/listKind").to_string();
        let short: Vec<String> = crd
            .pointer("/spec/names/shortNames")
            .and_then(Value::as_array)
            .map(|s| {
                s.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let used_kinds = kinds.entry(group.clone()).or_default();
        let used_resources = resources.entry(group).or_default();
        let conflict = if used_kinds.contains(&kind) {
            Some(("KindConflict", kind.clone()))
        } else if used_kinds.contains(&list_kind) {
            Some(("ListKindConflict", list_kind.clone()))
        } else {
            short
                .iter()
                .find(|s| used_resources.contains(s))
                .map(|s| ("ShortNamesConflict", s.clone()))
        };
        match conflict {
            Some((reason, name)) => {
                refused.insert(
                    text(crd, "/metadata/name").to_string(),
                    Conflict {
                        reason,
                        message: format!("{name:?} is already in use"),
                    },
                );
            }
            None => {
                used_kinds.extend([kind, list_kind]);
                used_resources.extend(short);
                for field in ["plural", "singular"] {
                    used_resources.push(text(crd, &format!("/spec/names/{field}")).to_string());
                }
            }
        }
    }
    refused
}

/// Whether the stored definition already says it is refused for `conflict`.
pub fn reported(crd: &Value, conflict: &Conflict) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter().any(|c| {
                c["type"] == "NamesAccepted"
                    && c["status"] == "False"
                    && c["reason"] == conflict.reason
            })
        })
}

/// Records the refusal in the definition's conditions (retrying once when it changed).
pub async fn report(store: &Arc<dyn Store>, name: &str, conflict: &Conflict) {
    let key = super::definition_kind().key(None, name);
    for _ in 0..2 {
        let Ok(Some(kv)) = store.get(&key).await else {
            return;
        };
        let Ok(mut crd) = serde_json::from_slice::<Value>(&kv.value) else {
            return;
        };
        if reported(&crd, conflict) {
            return;
        }
        let now = crate::strategy::now();
        set_condition(
            &mut crd,
            json!({"type": "NamesAccepted", "status": "False", "lastTransitionTime": now,
                   "reason": conflict.reason, "message": conflict.message}),
        );
        set_condition(
            &mut crd,
            json!({"type": "Established", "status": "False", "lastTransitionTime": now,
                   "reason": "NotAccepted", "message": "not all names are accepted"}),
        );
        match store
            .update(&key, crd.to_string().into_bytes(), kv.mod_revision)
            .await
        {
            Err(StoreError::Conflict { .. }) => continue,
            Err(error) => {
                tracing::warn!(definition = name, %error, "could not report a name conflict");
                return;
            }
            Ok(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(name: &str, created: &str, kind: &str, short: &[&str]) -> Value {
        json!({"metadata": {"name": format!("{name}.example.com"), "creationTimestamp": created},
               "spec": {"group": "example.com", "names": {"plural": name, "singular": name,
                        "kind": kind, "listKind": format!("{kind}List"), "shortNames": short}}})
    }

    #[test]
    fn the_older_definition_keeps_its_names() {
        let found = conflicts(&[
            crd("gizmos", "2024-01-02T00:00:00Z", "Widget", &[]),
            crd("widgets", "2024-01-01T00:00:00Z", "Widget", &["wd"]),
            crd("doodads", "2024-01-03T00:00:00Z", "Doodad", &["wd"]),
            crd("things", "2024-01-04T00:00:00Z", "Thing", &[]),
        ]);
        assert_eq!(found.len(), 2);
        assert_eq!(found["gizmos.example.com"].reason, "KindConflict");
        assert_eq!(
            found["gizmos.example.com"].message,
            "\"Widget\" is already in use"
        );
        assert_eq!(found["doodads.example.com"].reason, "ShortNamesConflict");
    }
}

//! `metadata.managedFields`: one entry per manager, operation (Apply or Update) and
//! subresource, each with the set of fields it owns in `fieldsV1`; decoding, encoding in
//! upstream's order, and the conflict error of an apply.

use serde_json::{Map, Value, json};

use super::fieldset::{self, FieldSet, Path};
use crate::status::{ApiError, Cause};

/// The most Update entries an object keeps, as upstream's `DefaultMaxUpdateManagers`.
pub const MAX_UPDATE_MANAGERS: usize = 10;

/// The manager the oldest Update entries are merged into beyond the cap.
const ANCIENT: &str = "ancient-changes";

/// What a manager did to own its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Server-side apply.
    Apply,
    /// Any other write: create, update, patch.
    Update,
}

impl Operation {
    /// The operation as `managedFields` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One manager's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The field manager, e.g. `kubectl-client-side-apply`.
    pub manager: String,
    /// How it wrote.
    pub operation: Operation,
    /// The API version it wrote in.
    pub api_version: String,
    /// When its set last changed.
    pub time: Option<String>,
    /// The subresource it wrote through, e.g. `status`.
    pub subresource: Option<String>,
    /// The fields it owns.
    pub set: FieldSet,
}

impl Entry {
    /// Whether this entry is the one of `manager` writing with `operation` through
    /// `subresource`: entries merge on that identity.
    pub fn is(&self, manager: &str, operation: Operation, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    /// The manager as conflict messages name it, as upstream's `printManager`.
    pub fn describe(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            out.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == Operation::Update {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    fn decode(value: &Value) -> Option<Entry> {
        let text = |name: &str| value.get(name).and_then(Value::as_str);
        let operation = match text("operation")? {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return None,
        };
        let set = match value.get("fieldsV1") {
            Some(fields) => {
                if text("fieldsType") != Some("FieldsV1") {
                    return None;
                }
                FieldSet::from_fields_v1(fields)?
            }
            None => FieldSet::new(),
        };
        Some(Entry {
            manager: text("manager").unwrap_or("").to_string(),
            operation,
            api_version: text("apiVersion").unwrap_or("").to_string(),
            time: text("time").map(str::to_string),
            subresource: text("subresource")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            set,
        })
    }

    fn encode(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("manager".into(), json!(self.manager));
        entry.insert("operation".into(), json!(self.operation.as_str()));
        entry.insert("apiVersion".into(), json!(self.api_version));
        if let Some(time) = &self.time {
            entry.insert("time".into(), json!(time));
        }
        entry.insert("fieldsType".into(), json!("FieldsV1"));
        entry.insert("fieldsV1".into(), self.set.to_fields_v1());
        if let Some(sub) = &self.subresource {
            entry.insert("subresource".into(), json!(sub));
        }
        Value::Object(entry)
    }
}

/// The managed fields of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Managed {
    /// The entries.
    pub entries: Vec<Entry>,
}

impl Managed {
    /// The entries of `managedFields`; an absent or null field has none. `None` when they do
    /// not decode.
    pub fn decode(value: Option<&Value>) -> Option<Managed> {
        let entries = match value {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(Entry::decode)
                .collect::<Option<Vec<Entry>>>()?,
            Some(_) => return None,
        };
        Some(Managed { entries })
    }

    /// The `managedFields` of an object: its entries decoded, none when invalid.
    pub fn of(object: &Value) -> Managed {
        Managed::decode(object.pointer("/metadata/managedFields")).unwrap_or_default()
    }

    /// The entry of `manager`, `operation` and `subresource`, made empty if missing.
    pub fn entry(
        &mut self,
        manager: &str,
        operation: Operation,
        subresource: Option<&str>,
    ) -> &mut Entry {
        let at = match self
            .entries
            .iter()
            .position(|e| e.is(manager, operation, subresource))
        {
            Some(at) => at,
            None => {
                self.entries.push(Entry {
                    manager: manager.to_string(),
                    operation,
                    api_version: String::new(),
                    time: None,
                    subresource: subresource.map(str::to_string),
                    set: FieldSet::new(),
                });
                self.entries.len() - 1
            }
        };
        &mut self.entries[at]
    }

    /// Merges the oldest Update entries into `ancient-changes` (one per API version) while
    /// there are more than [`MAX_UPDATE_MANAGERS`], as upstream caps them.
    pub fn cap_updates(&mut self) {
        self.entries.retain(|e| !e.set.is_empty());
        // The buckets count as Update entries too.
        let updates = |m: &Managed| {
            m.entries
                .iter()
                .filter(|e| e.operation == Operation::Update)
                .count()
        };
        while updates(self) > MAX_UPDATE_MANAGERS {
            let oldest = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.operation == Operation::Update && e.manager != ANCIENT)
                .min_by(|(_, a), (_, b)| a.time.cmp(&b.time))
                .map(|(at, _)| at);
            let Some(at) = oldest else { break };
            let merged = self.entries.remove(at);
            let bucket = match self.entries.iter().position(|e| {
                e.manager == ANCIENT
                    && e.operation == Operation::Update
                    && e.api_version == merged.api_version
            }) {
                Some(bucket) => bucket,
                None => {
                    self.entries.push(Entry {
                        manager: ANCIENT.into(),
                        set: FieldSet::new(),
                        time: None,
                        subresource: None,
                        ..merged.clone()
                    });
                    self.entries.len() - 1
                }
            };
            let bucket = &mut self.entries[bucket];
            bucket.set = bucket.set.union(&merged.set);
            bucket.time = bucket.time.clone().max(merged.time);
        }
    }

    /// Writes the entries into `object` (drops the field when there are none), empty sets
    /// left out, in upstream's order: Apply before Update, then by time, manager, version
    /// and subresource.
    pub fn store(mut self, object: &mut Value) {
        self.entries.retain(|e| !e.set.is_empty());
        self.entries.sort_by(|a, b| {
            (
                a.operation.as_str(),
                &a.time,
                &a.manager,
                &a.api_version,
                &a.subresource,
            )
                .cmp(&(
                    b.operation.as_str(),
                    &b.time,
                    &b.manager,
                    &b.api_version,
                    &b.subresource,
                ))
        });
        let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
            return;
        };
        if self.entries.is_empty() {
            meta.remove("managedFields");
        } else {
            let encoded: Vec<Value> = self.entries.iter().map(Entry::encode).collect();
            meta.insert("managedFields".into(), Value::Array(encoded));
        }
    }
}

/// Whether a request's `managedFields` asks for them to be cleared: exactly one empty entry.
pub fn is_reset(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::Array(items))
        if items.len() == 1 && items[0].as_object().is_some_and(Map::is_empty))
}

/// The 409 of an apply whose fields other managers own: one `FieldManagerConflict` cause per
/// field, and upstream's message.
pub fn conflict_error(conflicts: &[(&Entry, Path)]) -> ApiError {
    let causes: Vec<Cause> = conflicts
        .iter()
        .map(|(entry, path)| Cause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with {}", entry.describe()),
            field: fieldset::display(path),
        })
        .collect();
    let message = match conflicts {
        [(entry, path)] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            entry.describe(),
            fieldset::display(path)
        ),
        _ => {
            let mut managers: Vec<String> = conflicts.iter().map(|(e, _)| e.describe()).collect();
            managers.sort();
            managers.dedup();
            let mut lines = Vec::new();
            for manager in &managers {
                lines.push(format!("conflicts with {manager}:"));
                for (_, path) in conflicts.iter().filter(|(e, _)| e.describe() == *manager) {
                    lines.push(format!("- {}", fieldset::display(path)));
                }
            }
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        }
    };
    let mut error = ApiError::new(409, "Conflict", message);
    error.details.causes = causes;
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::fieldset::Element;

    #[test]
    fn entries_round_trip_and_invalid_ones_do_not_decode() {
        let encoded = json!([{"manager": "m", "operation": "Update", "apiVersion": "v1",
            "time": "2025-01-01T00:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {".": {}, "f:a": {}}}, "subresource": "status"}]);
        let Some(managed) = Managed::decode(Some(&encoded)) else {
            panic!("not decoded")
        };
        let mut object = json!({"metadata": {}});
        managed.store(&mut object);
        assert_eq!(object["metadata"]["managedFields"], encoded);
        assert_eq!(
            Managed::decode(Some(&json!([{"operation": "Sideways"}]))),
            None
        );
        assert!(is_reset(Some(&json!([{}]))));
        assert!(!is_reset(Some(&json!([]))));
    }

    #[test]
    fn update_managers_are_capped_into_ancient_changes() {
        let mut managed = Managed::default();
        for i in 0..12 {
            let entry = managed.entry(&format!("m{i:02}"), Operation::Update, None);
            entry.api_version = "v1".into();
            entry.time = Some(format!("2025-01-01T00:00:{i:02}Z"));
            entry.set.insert(Element::Field(format!("f{i}")));
        }
        managed.cap_updates();
        let names: Vec<&str> = managed.entries.iter().map(|e| e.manager.as_str()).collect();
        assert_eq!(managed.entries.len(), MAX_UPDATE_MANAGERS, "{names:?}");
        assert!(
            !names.contains(&"m02") && names.contains(&"m03"),
            "{names:?}"
        );
        let ancient = managed.entries.iter().find(|e| e.manager == ANCIENT);
        assert_eq!(ancient.map(|e| e.set.paths().len()), Some(3));
    }

    #[test]
    fn conflict_message_as_upstream() {
        let entry = Entry {
            manager: "kubectl-client-side-apply".into(),
            operation: Operation::Update,
            api_version: "v1".into(),
            time: None,
            subresource: None,
            set: FieldSet::new(),
        };
        let path = vec![
            Element::Field("spec".into()),
            Element::Field("replicas".into()),
        ];
        let error = conflict_error(&[(&entry, path)]);
        assert_eq!(error.code, 409);
        assert_eq!(
            error.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .spec.replicas"
        );
        assert_eq!(error.details.causes[0].reason, "FieldManagerConflict");
        assert_eq!(error.details.causes[0].field, ".spec.replicas");
    }
}

//! `events.k8s.io/v1` Events are another view of the core `v1` Events: both are stored once,
//! in the core form (as kube-apiserver stores them), and converted on the way in and out
//! with upstream's field mapping (`note` is `message`, `regarding` is `involvedObject`,
//! `reportingController` is `reportingComponent`, the `deprecated*` fields are the old ones).

use serde_json::{Map, Value, json};

use crate::kinds::Kind;
use crate::status::Cause;

const GROUP_VERSION: &str = "events.k8s.io/v1";

/// (events.k8s.io name, core name) of the fields whose names differ.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Whether `kind` is the events.k8s.io view.
pub fn is_view(kind: &Kind) -> bool {
    kind.group == "events.k8s.io" && kind.kind == "Event"
}

fn rename(object: &Map<String, Value>, to_view: bool) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in object {
        let renamed = RENAMED.iter().find_map(|(view, core)| {
            if to_view {
                (key == core).then_some(*view)
            } else {
                (key == view).then_some(*core)
            }
        });
        out.insert(renamed.unwrap_or(key).to_string(), value.clone());
    }
    out
}

/// The object as `kind` serves it: a stored core Event converted for the events.k8s.io view,
/// anything else unchanged.
pub fn to_view(kind: &Kind, object: Value) -> Value {
    if !is_view(kind) || object.get("apiVersion").and_then(Value::as_str) != Some("v1") {
        return object;
    }
    let Some(map) = object.as_object() else {
        return object;
    };
    let mut converted = rename(map, true);
    converted.insert("apiVersion".into(), json!(GROUP_VERSION));
    Value::Object(converted)
}

/// The stored (core) form of an events.k8s.io Event; `None` for anything else.
pub fn to_storage(object: &Value) -> Option<Value> {
    if object.get("apiVersion").and_then(Value::as_str) != Some(GROUP_VERSION)
        || object.get("kind").and_then(Value::as_str) != Some("Event")
    {
        return None;
    }
    let mut converted = rename(object.as_object()?, false);
    converted.insert("apiVersion".into(), json!("v1"));
    Some(Value::Object(converted))
}

/// What upstream requires of an Event created through events.k8s.io/v1.
pub fn check(object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    for field in [
        "eventTime",
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        let present = object
            .get(field)
            .is_some_and(|v| !v.is_null() && v.as_str() != Some(""));
        if !present {
            causes.push(Cause::required(field));
        }
    }
    let kind = object.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "Normal" && kind != "Warning" {
        causes.push(Cause::invalid(
            "type",
            kind,
            &format!("has invalid value: {kind}"),
        ));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::KindTable;

    #[test]
    fn both_views_read_the_same_fields() {
        let table = KindTable::default();
        let Some(view) = table.find("events.k8s.io", "v1", "events") else {
            panic!("no events.k8s.io");
        };
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "hi", "count": 2,
            "reportingComponent": "kubelet", "reason": "Started"});
        let new = to_view(view, core.clone());
        assert_eq!(new["apiVersion"], "events.k8s.io/v1");
        assert_eq!(new["regarding"]["name"], "p");
        assert_eq!(new["note"], "hi");
        assert_eq!(new["deprecatedCount"], 2);
        assert_eq!(new["reportingController"], "kubelet");
        assert_eq!(to_storage(&new), Some(core));
    }
}

//! Pod updates as upstream's ValidatePodUpdate: only containers' and init containers' images,
//! a lowered or newly set activeDeadlineSeconds, added tolerations, removed scheduling gates
//! and a negative grace period raised to 1 may change; anything else is Forbidden on `spec`.

use serde_json::Value;

use crate::status::Cause;

/// Upstream's list of what a pod update may change, in its words and order.
const UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

fn forbidden(field: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueForbidden".into(),
        message: format!("Forbidden: {detail}"),
        field: field.into(),
    }
}

fn invalid(field: &str, shown: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {shown}: {detail}"),
        field: field.into(),
    }
}

/// Drops what Go's decoding would make equal to absent (nulls, empty lists and maps, false,
/// empty strings, which upstream's semantic equality does not tell from unset), so that a
/// client sending `"stdin": false` or `"volumes": []` does not change the spec.
fn normalized(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let kept: serde_json::Map<String, Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect();
            Value::Object(kept)
        }
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::Number(_) => false,
    }
}

fn active_deadline(spec: &Value) -> Option<i64> {
    spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
}

/// Whether `new` keeps every toleration of `old`, allowing only tolerationSeconds to differ
/// (upstream's validateOnlyAddedTolerations).
fn only_added_tolerations(new: &Value, old: &Value) -> bool {
    let list = |v: &Value| -> Vec<Value> {
        v.get("tolerations")
            .and_then(Value::as_array)
            .map(|l| l.iter().map(normalized).collect())
            .unwrap_or_default()
    };
    let (new, old) = (list(new), list(old));
    old.iter().all(|kept| {
        new.iter().any(|candidate| {
            let mut kept = kept.clone();
            match candidate.get("tolerationSeconds") {
                Some(seconds) => kept["tolerationSeconds"] = seconds.clone(),
                None => {
                    if let Some(map) = kept.as_object_mut() {
                        map.remove("tolerationSeconds");
                    }
                }
            }
            kept == *candidate
        })
    })
}

/// What is wrong with an update from `old` to `new` (both whole Pods, `new` defaulted).
pub fn check_update(new: &Value, old: &Value) -> Vec<Cause> {
    let null = Value::Null;
    let new_spec = new.get("spec").unwrap_or(&null);
    let old_spec = old.get("spec").unwrap_or(&null);
    let mut causes = Vec::new();
    let count = |s: &Value| s.get("containers").and_then(Value::as_array).map(Vec::len);
    if count(new_spec) != count(old_spec) {
        causes.push(forbidden(
            "spec.containers",
            "pod updates may not add or remove containers",
        ));
        return causes;
    }
    match (active_deadline(new_spec), active_deadline(old_spec)) {
        (Some(new), _) if !(0..=i64::from(i32::MAX)).contains(&new) => {
            causes.push(invalid(
                "spec.activeDeadlineSeconds",
                &new.to_string(),
                "must be between 0 and 2147483647, inclusive",
            ));
            return causes;
        }
        (Some(new), Some(old)) if old < new => {
            causes.push(invalid(
                "spec.activeDeadlineSeconds",
                &new.to_string(),
                "must be less than or equal to previous value",
            ));
            return causes;
        }
        (None, Some(_)) => causes.push(invalid(
            "spec.activeDeadlineSeconds",
            "null",
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    // The new spec with what may change taken back to the old values: any difference left
    // is a change upstream forbids.
    let mut munged = new_spec.clone();
    for list in ["containers", "initContainers"] {
        let old_list = old_spec.get(list).and_then(Value::as_array);
        if let (Some(items), Some(old_items)) =
            (munged.get_mut(list).and_then(Value::as_array_mut), old_list)
        {
            for (item, old_item) in items.iter_mut().zip(old_items) {
                if let (Some(item), Some(image)) = (item.as_object_mut(), old_item.get("image")) {
                    item.insert("image".into(), image.clone());
                }
            }
        }
    }
    let restore = |munged: &mut Value, key: &str| match old_spec.get(key) {
        Some(value) => munged[key] = value.clone(),
        None => {
            if let Some(map) = munged.as_object_mut() {
                map.remove(key);
            }
        }
    };
    if munged.is_object() {
        restore(&mut munged, "activeDeadlineSeconds");
        restore(&mut munged, "tolerations");
        // Scheduling gates may only be removed.
        let gates = |s: &Value| -> Vec<Value> {
            s.get("schedulingGates")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        if gates(new_spec).iter().all(|g| gates(old_spec).contains(g)) {
            restore(&mut munged, "schedulingGates");
        }
        let grace = |s: &Value| {
            s.get("terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        };
        if grace(old_spec).is_some_and(|g| g < 0) && grace(new_spec) == Some(1) {
            restore(&mut munged, "terminationGracePeriodSeconds");
        }
    }
    if normalized(&munged) != normalized(old_spec) {
        // Upstream follows this with a cmp.Diff of the Go structs, which has no JSON
        // equivalent worth imitating; the sentence is upstream's.
        causes.push(forbidden(
            "spec",
            &format!("pod updates may not change fields other than {UPDATABLE}"),
        ));
    }
    if !only_added_tolerations(new_spec, old_spec) {
        causes.push(forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    }
    causes
}

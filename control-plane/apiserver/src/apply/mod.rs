//! Server-side apply and field management, as kube-apiserver's fieldmanager over
//! structured-merge-diff: every write records which manager owns which fields in
//! `metadata.managedFields`, and an apply merges a configuration into the live object by the
//! kind's list semantics, removes what its manager stopped applying, and refuses (409) to
//! change fields other managers own unless forced.

pub mod fieldset;
pub mod managed;
pub mod merge;
pub mod options;
pub mod schema;
pub mod verb;
pub mod walk;

use serde_json::{Map, Value};

use crate::kinds::Kind;
use crate::status::ApiResult;
use managed::{Managed, Operation};

/// The manager upstream gives objects that had no managed fields when first applied to.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Metadata the server owns: never in a manager's set.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
];

/// The part of `object` field sets are made of: without type and system metadata, and
/// without what the write cannot change (status through the main resource of a kind with a
/// status subresource; all but status through `status`).
fn tracked(kind: &Kind, object: &Value, subresource: Option<&str>) -> Value {
    let mut out = object.clone();
    let Some(map) = out.as_object_mut() else {
        return out;
    };
    map.remove("apiVersion");
    map.remove("kind");
    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
        for field in SYSTEM_METADATA {
            meta.remove(*field);
        }
    }
    match subresource {
        Some(_) => map.retain(|k, _| k == "status"),
        None if kind.status_subresource => {
            map.remove("status");
        }
        None => {}
    }
    out
}

/// The managed fields an update starts from, as upstream: through a subresource, the live
/// object's; `[{}]` in the request clears them; otherwise the request's when they are valid
/// and not empty, else the live object's.
fn managed_for_update(live: Option<&Value>, new: &Value, subresource: Option<&str>) -> Managed {
    let of_live = || live.map(Managed::of).unwrap_or_default();
    if subresource.is_some() {
        return of_live();
    }
    let requested = new.pointer("/metadata/managedFields");
    if managed::is_reset(requested) {
        return Managed::default();
    }
    match Managed::decode(requested) {
        Some(m) if !m.entries.is_empty() => m,
        _ => of_live(),
    }
}

/// Records a create (`live` is `None`), update or patch by `manager` in `new`'s managed
/// fields: the manager takes the fields it added or changed, and fields it removed leave
/// every manager.
pub fn record_update(
    kind: &Kind,
    live: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
) {
    let schema = schema::for_kind(kind);
    let schema = schema.as_ref();
    let mut managed = managed_for_update(live, new, subresource);
    let before = live.map(|l| tracked(kind, l, subresource));
    let after = tracked(kind, new, subresource);
    let comparison = walk::compare(schema, before.as_ref(), &after);
    for entry in &mut managed.entries {
        entry.set = entry
            .set
            .difference(&comparison.changed)
            .difference(&comparison.removed);
    }
    if !comparison.changed.is_empty() {
        let entry = managed.entry(manager, Operation::Update, subresource);
        entry.set = entry.set.union(&comparison.changed);
        entry.api_version = kind.api_version();
        entry.time = Some(crate::strategy::now());
    }
    managed.cap_updates();
    managed.store(new);
}

/// Applies `config` for `manager` to `live` (`None`: the object is created): returns the
/// object to store, with its managed fields, or the conflict error.
pub fn apply(
    kind: &Kind,
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
) -> ApiResult<Value> {
    let schema = schema::for_kind(kind);
    let schema = schema.as_ref();
    let mut managed = live.map(Managed::of).unwrap_or_default();
    let had_none = live.is_some_and(|l| l.pointer("/metadata/managedFields").is_none());
    if let (Some(live), true) = (live, had_none) {
        // Whatever was there before the first apply belongs to someone, not to nobody.
        let everything = walk::compare(schema, None, &tracked(kind, live, None));
        let entry = managed.entry(BEFORE_FIRST_APPLY, Operation::Update, None);
        entry.set = everything.changed;
        entry.api_version = kind.api_version();
    }
    let config = without_reset_fields(kind, config, subresource);
    let applied = walk::applied_set(schema, &tracked(kind, &config, subresource));
    let base = live.cloned().unwrap_or_else(|| empty_object(kind, &config));
    let mut merged = merge::merge(schema, &base, &config);

    let last = managed
        .entries
        .iter()
        .find(|e| e.is(manager, Operation::Apply, subresource))
        .map(|e| e.set.clone());
    if let Some(last) = last {
        let mut keep = applied.clone();
        for entry in &managed.entries {
            if entry.operation == Operation::Apply
                && !entry.is(manager, Operation::Apply, subresource)
            {
                keep = keep.union(&entry.set);
            }
        }
        merge::remove(schema, &mut merged, &last.difference(&keep));
    }

    let before = live.map(|l| tracked(kind, l, subresource));
    let comparison = walk::compare(
        schema,
        before.as_ref(),
        &tracked(kind, &merged, subresource),
    );
    let conflicts: Vec<(&managed::Entry, fieldset::Path)> = managed
        .entries
        .iter()
        .filter(|e| !e.is(manager, Operation::Apply, subresource))
        .flat_map(|e| {
            e.set
                .intersection(&comparison.changed)
                .paths()
                .into_iter()
                .map(move |p| (e, p))
        })
        .collect();
    if !conflicts.is_empty() && !force {
        return Err(managed::conflict_error(&conflicts));
    }
    for entry in &mut managed.entries {
        if !entry.is(manager, Operation::Apply, subresource) {
            entry.set = entry
                .set
                .difference(&comparison.changed)
                .difference(&comparison.removed);
        }
    }
    let entry = managed.entry(manager, Operation::Apply, subresource);
    let object_changed = !comparison.changed.is_empty() || !comparison.removed.is_empty();
    if entry.set != applied || object_changed || entry.time.is_none() {
        entry.time = Some(crate::strategy::now());
    }
    entry.set = applied;
    entry.api_version = kind.api_version();
    managed.cap_updates();
    managed.store(&mut merged);
    if manager == KUBECTL {
        sync_last_applied(&config, &mut merged);
    }
    Ok(merged)
}

/// The manager `kubectl apply --server-side` uses by default.
const KUBECTL: &str = "kubectl";

/// The annotation client-side apply keeps its last configuration in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Keeps client-side apply's annotation, where there is one, in step with what kubectl
/// applied server-side (as upstream does for the `kubectl` manager only), so a later
/// client-side apply diffs against the right configuration.
fn sync_last_applied(config: &Value, merged: &mut Value) {
    let has_annotation = merged
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .is_some();
    if !has_annotation {
        return;
    }
    let mut last = config.clone();
    if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
        let emptied = match meta.get_mut("annotations").and_then(Value::as_object_mut) {
            Some(annotations) => {
                annotations.remove(LAST_APPLIED);
                annotations.is_empty()
            }
            None => false,
        };
        if emptied {
            meta.remove("annotations");
        }
    }
    let text = format!("{last}\n");
    if let Some(annotations) = merged
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.insert(LAST_APPLIED.into(), Value::from(text));
    }
}

/// Copies `from`'s managed fields to `to` (none when `from` has none).
pub fn carry_managed_fields(from: &Value, to: &mut Value) {
    let managed = from.pointer("/metadata/managedFields").cloned();
    if let Some(meta) = to.get_mut("metadata").and_then(Value::as_object_mut) {
        match managed {
            Some(managed) => meta.insert("managedFields".into(), managed),
            None => meta.remove("managedFields"),
        };
    }
}

/// The configuration without what the write may not set: status through the main resource
/// of a kind with a status subresource, everything but status through `status`.
fn without_reset_fields(kind: &Kind, config: &Value, subresource: Option<&str>) -> Value {
    let mut out = config.clone();
    if let Some(map) = out.as_object_mut() {
        match subresource {
            Some(_) => map
                .retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")),
            None if kind.status_subresource => {
                map.remove("status");
            }
            None => {}
        }
    }
    out
}

/// What an apply that creates merges into: the type and the identity of the configuration.
fn empty_object(kind: &Kind, config: &Value) -> Value {
    let mut meta = Map::new();
    for field in ["name", "namespace"] {
        if let Some(value) = config.pointer(&format!("/metadata/{field}")) {
            meta.insert(field.into(), value.clone());
        }
    }
    serde_json::json!({"apiVersion": kind.api_version(), "kind": kind.kind, "metadata": meta})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::KindTable;
    use serde_json::json;

    fn deployments() -> Kind {
        match KindTable::default().find("apps", "v1", "deployments") {
            Some(k) => k.clone(),
            None => panic!("no deployments"),
        }
    }

    fn managers(object: &Value) -> Vec<(String, String)> {
        Managed::of(object)
            .entries
            .iter()
            .map(|e| (e.manager.clone(), e.operation.as_str().to_string()))
            .collect()
    }

    #[test]
    fn apply_creates_owns_and_prunes() {
        let kind = deployments();
        let config = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"a": "1"}}, "spec": {"replicas": 2, "paused": true}});
        let created = match apply(&kind, None, &config, "mgr", false, None) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(created["spec"]["replicas"], 2);
        assert_eq!(
            created["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:paused": {}, "f:replicas": {}}})
        );
        let smaller = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"replicas": 2}});
        let pruned = match apply(&kind, Some(&created), &smaller, "mgr", false, None) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(pruned["spec"], json!({"replicas": 2}));
        assert_eq!(pruned["metadata"].get("labels"), None);
    }

    #[test]
    fn a_map_owned_whole_keeps_what_is_still_applied() {
        let table = KindTable::default();
        let Some(cm) = table.find("", "v1", "configmaps") else {
            panic!("no configmaps")
        };
        // What kubectl's client-side-apply migration leaves: the applier owns `data` itself.
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c",
            "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {".": {}, "f:x": {}, "f:y": {}}}}]},
            "data": {"x": "1", "y": "2"}});
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"x": "1"}});
        let applied = apply(cm, Some(&live), &config, "kubectl", false, None);
        assert_eq!(applied.map(|o| o["data"].clone()), Ok(json!({"x": "1"})));
    }

    #[test]
    fn objects_without_managers_belong_to_before_first_apply() {
        let table = KindTable::default();
        let Some(cm) = table.find("", "v1", "configmaps") else {
            panic!("no configmaps")
        };
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"x": "1"}});
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"x": "2"}});
        let error = apply(cm, Some(&live), &config, "m", false, None).map(|_| ());
        assert_eq!(
            error.map_err(|e| e.message),
            Err("Apply failed with 1 conflict: conflict with \"before-first-apply\" using v1: .data.x".to_string())
        );
    }

    #[test]
    fn kubectl_keeps_the_client_side_annotation_in_step() {
        let table = KindTable::default();
        let Some(cm) = table.find("", "v1", "configmaps") else {
            panic!("no configmaps")
        };
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c",
            "annotations": {LAST_APPLIED: "{\"data\":{\"x\":\"1\"}}\n"}}, "data": {"x": "1"}});
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
            "data": {"x": "2"}});
        let Ok(by_kubectl) = apply(cm, Some(&live), &config, KUBECTL, true, None) else {
            panic!("kubectl apply failed")
        };
        assert_eq!(
            by_kubectl["metadata"]["annotations"][LAST_APPLIED],
            format!("{config}\n")
        );
        let Ok(by_other) = apply(cm, Some(&live), &config, "other", true, None) else {
            panic!("other apply failed")
        };
        assert_eq!(
            by_other["metadata"]["annotations"][LAST_APPLIED],
            live["metadata"]["annotations"][LAST_APPLIED]
        );
    }

    #[test]
    fn apply_conflicts_with_an_updater_unless_forced() {
        let kind = deployments();
        let mut object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"replicas": 1}});
        record_update(&kind, None, &mut object, "kubectl-client-side-apply", None);
        assert_eq!(
            managers(&object),
            vec![("kubectl-client-side-apply".into(), "Update".into())]
        );
        let config = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"replicas": 3}});
        let error = match apply(&kind, Some(&object), &config, "mgr", false, None) {
            Ok(_) => panic!("no conflict"),
            Err(e) => e,
        };
        assert_eq!(
            error.message,
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        let same = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"replicas": 1}});
        let shared = apply(&kind, Some(&object), &same, "mgr", false, None);
        assert_eq!(
            shared.map(|o| managers(&o).len()),
            Ok(2),
            "same value: shared"
        );
        let forced = match apply(&kind, Some(&object), &config, "mgr", true, None) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(forced["spec"]["replicas"], 3);
        assert_eq!(managers(&forced), vec![("mgr".into(), "Apply".into())]);
    }

    #[test]
    fn updates_merge_per_manager_and_reset_clears() {
        let table = KindTable::default();
        let Some(cm) = table.find("", "v1", "configmaps") else {
            panic!("no configmaps")
        };
        let mut v1 = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        record_update(cm, None, &mut v1, "one", None);
        let mut v2 = v1.clone();
        v2["data"]["b"] = json!("2");
        record_update(cm, Some(&v1), &mut v2, "two", None);
        let mut v3 = v2.clone();
        v3["data"]["a"] = json!("9");
        record_update(cm, Some(&v2), &mut v3, "two", None);
        let managed = Managed::of(&v3);
        assert_eq!(managed.entries.len(), 2, "{v3}");
        let two = managed.entries.iter().find(|e| e.manager == "two");
        assert_eq!(
            two.map(|e| e.set.to_fields_v1()),
            Some(json!({"f:data": {"f:a": {}, "f:b": {}}}))
        );
        let one = managed.entries.iter().find(|e| e.manager == "one");
        assert_eq!(
            one.map(|e| e.set.to_fields_v1()),
            Some(json!({"f:data": {}}))
        );
        let mut cleared = v3.clone();
        cleared["metadata"]["managedFields"] = json!([{}]);
        record_update(cm, Some(&v3), &mut cleared, "two", None);
        assert_eq!(cleared["metadata"].get("managedFields"), None);
    }
}

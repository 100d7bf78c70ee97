//! Reconciles the bootstrap policy at every start, as kube-apiserver's RBAC post-start hook:
//! missing ClusterRoles, ClusterRoleBindings and the Roles and RoleBindings of kube-system and
//! kube-public are created; those annotated
//! `rbac.authorization.kubernetes.io/autoupdate: "true"` get the rules, aggregation selectors,
//! subjects, labels and annotations they lack added (nothing is taken away). Setting the
//! annotation to anything else leaves an object as its owner made it.

use serde_json::{Map, Value, json};

use super::index::GROUP;
use super::policy::{self, AGGREGATE_TO, BootstrapBinding, BootstrapRole};
use super::rules::{self, PolicyRule};
use crate::kinds::Kind;
use crate::rest;
use crate::server::{ApiServer, RequestUser};
use crate::status::{ApiError, ApiResult};

/// The annotation that lets reconciliation add to an object.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
const BOOTSTRAPPING: &str = "kubernetes.io/bootstrapping";

/// How many times an object changed under reconciliation is read again.
const ATTEMPTS: usize = 3;

/// Makes and tops up the bootstrap policy in `server`'s store; fails only when the kind table
/// lacks the RBAC kinds.
pub async fn reconcile(server: &ApiServer) -> ApiResult<()> {
    let kind = |plural| {
        server
            .kinds
            .find(GROUP, "v1", plural)
            .cloned()
            .ok_or_else(|| ApiError::internal(format!("the kind table has no {plural}")))
    };
    let (cluster_roles, roles) = (kind("clusterroles")?, kind("roles")?);
    let (cluster_bindings, bindings) = (kind("clusterrolebindings")?, kind("rolebindings")?);
    let all_roles = policy::cluster_roles()
        .into_iter()
        .map(|r| (&cluster_roles, r))
        .chain(policy::namespace_roles().into_iter().map(|r| (&roles, r)));
    for (kind, role) in all_roles {
        let object = role_object(kind.kind, &role);
        let done = reconcile_one(server, kind, role.namespace, role.name, object, merge_role).await;
        report(done, kind, role.name);
    }
    let all_bindings = policy::cluster_role_bindings()
        .into_iter()
        .map(|b| (&cluster_bindings, b))
        .chain(
            policy::namespace_role_bindings()
                .into_iter()
                .map(|b| (&bindings, b)),
        );
    for (kind, binding) in all_bindings {
        let object = binding_object(kind.kind, &binding);
        let (namespace, name) = (binding.namespace, binding.name);
        let done = reconcile_one(server, kind, namespace, name, object, merge_binding).await;
        report(done, kind, name);
    }
    Ok(())
}

/// One object that cannot be reconciled (unreadable as stored, refused) does not stop the
/// server: it is logged, and the next start tries again.
fn report(done: ApiResult<()>, kind: &Kind, name: &str) {
    if let Err(error) = done {
        tracing::warn!(kind = kind.kind, name, %error, "bootstrap RBAC object not reconciled");
    }
}

fn metadata(name: &str, namespace: &str, labels: &[(&str, &str)]) -> Value {
    let mut all = Map::new();
    all.insert(BOOTSTRAPPING.into(), json!("rbac-defaults"));
    for (k, v) in labels {
        all.insert(k.to_string(), json!(v));
    }
    let mut meta = json!({"name": name, "labels": all, "annotations": {AUTOUPDATE: "true"}});
    if !namespace.is_empty() {
        meta["namespace"] = json!(namespace);
    }
    meta
}

fn role_object(kind: &str, role: &BootstrapRole) -> Value {
    let mut object = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": metadata(role.name, role.namespace, role.labels),
        "rules": role.rules,
    });
    if let Some(to) = role.aggregates {
        object["aggregationRule"] = json!({"clusterRoleSelectors": [
            {"matchLabels": {format!("{AGGREGATE_TO}{to}"): "true"}}
        ]});
        object["rules"] = Value::Null;
    }
    object
}

fn binding_object(kind: &str, binding: &BootstrapBinding) -> Value {
    let subjects: Vec<Value> = binding.subjects.iter().map(|s| subject(*s)).collect();
    let role_kind = if binding.namespace.is_empty() {
        "ClusterRole"
    } else {
        "Role"
    };
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": metadata(binding.name, binding.namespace, &[]),
        "roleRef": {"apiGroup": GROUP, "kind": role_kind, "name": binding.role},
        "subjects": subjects,
    })
}

fn subject((kind, name, namespace): (&str, &str, &str)) -> Value {
    match kind {
        "ServiceAccount" => json!({"kind": kind, "name": name, "namespace": namespace}),
        _ => json!({"kind": kind, "apiGroup": GROUP, "name": name}),
    }
}

async fn reconcile_one(
    server: &ApiServer,
    kind: &Kind,
    namespace: &str,
    name: &str,
    expected: Value,
    merge: fn(&mut Value, &Value) -> bool,
) -> ApiResult<()> {
    let namespace = Some(namespace).filter(|n| !n.is_empty());
    for _ in 0..ATTEMPTS {
        let (mut existing, revision) = match rest::get_object(server, kind, namespace, name).await {
            Ok(found) => found,
            Err(e) if e.code == 404 => {
                let admin = RequestUser::admin();
                let object = expected.clone();
                match rest::create_object(server, kind, namespace, object, &admin, false).await {
                    Ok(_) => {
                        tracing::info!(kind = kind.kind, name, "created bootstrap RBAC object");
                        return Ok(());
                    }
                    // Another API server on the same store made it first: look at it again.
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let autoupdate = existing
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(AUTOUPDATE))
            .and_then(Value::as_str)
            == Some("true");
        if !autoupdate || !merge(&mut existing, &expected) {
            return Ok(());
        }
        let key = kind.key(namespace, name);
        match server
            .store
            .update(&key, rest::encode(&existing), revision)
            .await
        {
            Ok(_) => {
                tracing::info!(kind = kind.kind, name, "topped up bootstrap RBAC object");
                return Ok(());
            }
            Err(capstan_store::StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(rest::store_error(e, kind, name)),
        }
    }
    tracing::warn!(
        kind = kind.kind,
        name,
        "bootstrap RBAC object kept changing; left as is"
    );
    Ok(())
}

/// Adds to `existing`'s labels and annotations those of `expected` it lacks.
fn merge_metadata(existing: &mut Value, expected: &Value) -> bool {
    let mut changed = false;
    for field in ["labels", "annotations"] {
        let Some(wanted) = expected["metadata"][field].as_object() else {
            continue;
        };
        let meta = crate::strategy::metadata_mut(existing);
        let entry = meta.entry(field).or_insert_with(|| json!({}));
        if !entry.is_object() {
            *entry = json!({});
        }
        if let Some(have) = entry.as_object_mut() {
            for (k, v) in wanted {
                if !have.contains_key(k) {
                    have.insert(k.clone(), v.clone());
                    changed = true;
                }
            }
        }
    }
    changed
}

fn merge_role(existing: &mut Value, expected: &Value) -> bool {
    let mut changed = merge_metadata(existing, expected);
    if let Some(wanted) = expected
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
    {
        let rule = existing
            .as_object_mut()
            .map(|o| o.entry("aggregationRule").or_insert_with(|| json!({})));
        if let Some(rule) = rule {
            if !rule.is_object() {
                *rule = json!({});
            }
            let selectors = &mut rule["clusterRoleSelectors"];
            if !selectors.is_array() {
                *selectors = json!([]);
            }
            if let Some(have) = selectors.as_array_mut() {
                for selector in wanted {
                    if !have.contains(selector) {
                        have.push(selector.clone());
                        changed = true;
                    }
                }
            }
        }
        // The aggregation controller owns the rules of an aggregated role.
        return changed;
    }
    let have: Vec<PolicyRule> = existing
        .get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default();
    let wanted: Vec<PolicyRule> = expected
        .get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default();
    let mut rules = have.clone();
    for rule in wanted {
        if !rules::covers(&have, std::slice::from_ref(&rule)).0 {
            rules.push(rule);
        }
    }
    if rules.len() != have.len() {
        existing["rules"] = json!(rules);
        changed = true;
    }
    changed
}

fn merge_binding(existing: &mut Value, expected: &Value) -> bool {
    let mut changed = merge_metadata(existing, expected);
    if existing.get("roleRef") != expected.get("roleRef") {
        existing["roleRef"] = expected["roleRef"].clone();
        changed = true;
    }
    let same = |a: &Value, b: &Value| {
        ["kind", "name", "namespace"].iter().all(|f| {
            a.get(f).and_then(Value::as_str).unwrap_or("")
                == b.get(f).and_then(Value::as_str).unwrap_or("")
        })
    };
    let wanted = expected["subjects"].as_array().cloned().unwrap_or_default();
    if !existing["subjects"].is_array() {
        existing["subjects"] = json!([]);
    }
    if let Some(have) = existing["subjects"].as_array_mut() {
        for subject in wanted {
            if !have.iter().any(|h| same(h, &subject)) {
                have.push(subject);
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_what_is_missing_and_keeps_the_rest() {
        let expected = role_object(
            "ClusterRole",
            &BootstrapRole {
                name: "r",
                namespace: "",
                labels: &[],
                aggregates: None,
                rules: vec![PolicyRule::resource(&["get"], &[""], &["pods"])],
            },
        );
        let mut existing = json!({"metadata": {"name": "r", "labels": {"mine": "x"}},
            "rules": [{"verbs": ["list"], "apiGroups": [""], "resources": ["secrets"]}]});
        assert!(merge_role(&mut existing, &expected));
        assert_eq!(existing["rules"].as_array().map(Vec::len), Some(2));
        assert_eq!(existing["metadata"]["labels"]["mine"], "x");
        assert_eq!(existing["metadata"]["annotations"][AUTOUPDATE], "true");
        assert!(!merge_role(&mut existing, &expected));
        let binding = binding_object(
            "ClusterRoleBinding",
            &BootstrapBinding {
                name: "b",
                namespace: "",
                role: "r",
                subjects: &[("Group", "g", "")],
            },
        );
        let mut have = binding.clone();
        have["subjects"] = json!([{"kind": "User", "name": "u"}]);
        assert!(merge_binding(&mut have, &binding));
        assert_eq!(have["subjects"].as_array().map(Vec::len), Some(2));
    }
}

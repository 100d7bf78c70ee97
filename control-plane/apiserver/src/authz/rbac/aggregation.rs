//! ClusterRole aggregation (kube's clusterrole-aggregation controller): a ClusterRole with an
//! `aggregationRule` gets, as its rules, the rules of every other ClusterRole its label
//! selectors match, kept so whenever ClusterRoles change. The write goes to the store with the
//! revision read, so two API servers on one store cannot undo each other's newer result.

use std::collections::BTreeMap;
use std::sync::Arc;

use capstan_store::{Store, StoreError};
use serde_json::{Value, json};

use super::index::{Index, Policy};
use super::rules::PolicyRule;

/// Reconciles aggregated ClusterRoles every time the index says ClusterRoles changed.
pub async fn run(index: Index, store: Arc<dyn Store>) {
    let changed = Arc::clone(&index.cluster_roles_changed);
    loop {
        changed.notified().await;
        let updates = index.read(wanted_updates);
        for (key, value, revision) in updates {
            match store.update(&key, value, revision).await {
                Ok(_) => tracing::info!(%key, "aggregated ClusterRole updated"),
                // The role changed meanwhile: its watch event brings another round.
                Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {}
                Err(error) => tracing::warn!(%key, %error, "aggregating a ClusterRole failed"),
            }
        }
    }
}

/// The aggregated ClusterRoles whose rules are not what their selectors gather: the key, the
/// new stored bytes and the revision they replace.
fn wanted_updates(policy: &Policy) -> Vec<(String, Vec<u8>, i64)> {
    let mut updates = Vec::new();
    for (name, role) in &policy.cluster_roles {
        let Some(selectors) = &role.selectors else {
            continue;
        };
        let mut rules: Vec<PolicyRule> = Vec::new();
        for (other_name, other) in &policy.cluster_roles {
            if other_name == name || !selectors.iter().any(|s| matches(s, &other.labels)) {
                continue;
            }
            for rule in &other.rules {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
        if rules == role.rules {
            continue;
        }
        let Ok(mut object) = serde_json::from_slice::<Value>(&role.stored.value) else {
            continue;
        };
        if !object.is_object() {
            continue;
        }
        object["rules"] = json!(rules);
        updates.push((
            role.stored.key.clone(),
            object.to_string().into_bytes(),
            role.stored.mod_revision,
        ));
    }
    updates
}

/// Whether a `metav1.LabelSelector` (as JSON) matches `labels`. An empty selector matches
/// everything; one that cannot be read matches nothing.
pub fn matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let value = labels.get(key).map(String::as_str);
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => value.is_some_and(|v| values.contains(&v)),
                Some("NotIn") => value.is_none_or(|v| !values.contains(&v)),
                Some("Exists") => value.is_some(),
                Some("DoesNotExist") => value.is_none(),
                _ => false,
            }
        });
    selector.is_object() && match_labels && expressions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [(
            "rbac.authorization.k8s.io/aggregate-to-view".into(),
            "true".into(),
        )]
        .into();
        let view = json!({"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}});
        let edit = json!({"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}});
        assert!(matches(&view, &labels));
        assert!(!matches(&edit, &labels));
        let exists = json!({"matchExpressions": [
            {"key": "rbac.authorization.k8s.io/aggregate-to-view", "operator": "Exists"}]});
        assert!(matches(&exists, &labels));
        assert!(!matches(&json!("bogus"), &labels));
    }
}

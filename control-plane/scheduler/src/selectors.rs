//! Matching of label selectors, node selector terms and tolerations, as apimachinery's
//! `labels.Selector`, the node affinity helpers and `v1.Toleration.ToleratesTaint` do.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// Whether `selector` selects `labels`; an empty selector selects everything.
pub fn selects(selector: &LabelSelector, labels: &Labels) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_labels
        && selector.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

fn requirement_matches(requirement: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(value), Some(bound)) = (value, values.first()) else {
                return false;
            };
            match (value.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if requirement.operator == "Gt" => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether a node selector term matches a node with `name` and `labels`; a term with no
/// requirements matches nothing, as upstream.
pub fn term_matches(term: &NodeSelectorTerm, name: &str, labels: &Labels) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let name = name.to_string();
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key)))
        && fields.iter().all(|r| {
            // Only metadata.name is a supported field.
            r.key == "metadata.name" && requirement_matches(r, Some(&name))
        })
}

/// Whether `toleration` tolerates `taint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// Whether any of `tolerations` tolerates `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        match serde_json::from_value(value) {
            Ok(v) => v,
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn label_selectors() {
        let labels: Labels = [("app".to_string(), "web".to_string())].into();
        let s: LabelSelector = from(json!({"matchLabels": {"app": "web"}}));
        assert!(selects(&s, &labels));
        let s: LabelSelector = from(
            json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}),
        );
        assert!(!selects(&s, &labels));
        assert!(selects(&LabelSelector::default(), &labels));
    }

    #[test]
    fn node_terms_and_tolerations() {
        let labels: Labels = [
            ("zone".to_string(), "a".to_string()),
            ("n".to_string(), "5".to_string()),
        ]
        .into();
        let t: NodeSelectorTerm = from(json!({"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a", "b"]},
            {"key": "n", "operator": "Gt", "values": ["3"]}]}));
        assert!(term_matches(&t, "node-0", &labels));
        let t: NodeSelectorTerm = from(json!({"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["node-1"]}]}));
        assert!(!term_matches(&t, "node-0", &labels));
        assert!(!term_matches(
            &NodeSelectorTerm::default(),
            "node-0",
            &labels
        ));
        let taint: Taint = from(json!({"key": "k", "value": "v", "effect": "NoSchedule"}));
        assert!(tolerates(&from(json!({"key": "k", "value": "v"})), &taint));
        assert!(tolerates(&from(json!({"operator": "Exists"})), &taint));
        assert!(!tolerates(
            &from(json!({"key": "k", "value": "v", "effect": "NoExecute"})),
            &taint
        ));
        assert!(!tolerates(&from(json!({"key": "k", "value": "w"})), &taint));
    }
}

//! A pod's quality-of-service class, as kube computes `status.qosClass` when a pod is created:
//! from the cpu and memory requests and limits of its containers and init containers.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::quantity::Quantity;

/// The resources QoS looks at; others (hugepages, extended resources) don't count.
const QOS_RESOURCES: &[&str] = &["cpu", "memory"];

/// `Guaranteed`, `Burstable` or `BestEffort` for the pod `pod`. Quantities that do not parse
/// count as unset: validation refuses such pods anyway.
pub fn class(pod: &Value) -> &'static str {
    let mut requests: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut limits: BTreeMap<&str, Quantity> = BTreeMap::new();
    let mut guaranteed = true;
    let containers = ["containers", "initContainers"]
        .into_iter()
        .filter_map(|list| pod.pointer(&format!("/spec/{list}"))?.as_array())
        .flatten();
    for container in containers {
        let set = |section: &str| -> BTreeMap<&'static str, Quantity> {
            QOS_RESOURCES
                .iter()
                .filter_map(|name| {
                    let text = container
                        .pointer(&format!("/resources/{section}/{name}"))?
                        .as_str()?;
                    let quantity = Quantity::parse(text).ok()?;
                    (!quantity.is_zero()).then_some((*name, quantity))
                })
                .collect()
        };
        let container_limits = set("limits");
        for (name, quantity) in set("requests") {
            let sum = requests.entry(name).or_insert(Quantity::ZERO);
            *sum = sum.add(&quantity);
        }
        if container_limits.len() < QOS_RESOURCES.len() {
            guaranteed = false;
        }
        for (name, quantity) in container_limits {
            let sum = limits.entry(name).or_insert(Quantity::ZERO);
            *sum = sum.add(&quantity);
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    let requests_match_limits = requests
        .iter()
        .all(|(name, request)| limits.get(name) == Some(request));
    if guaranteed
        && requests_match_limits
        && requests.len() == limits.len()
        && limits.len() == QOS_RESOURCES.len()
    {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(resources: &[Value]) -> Value {
        let containers: Vec<Value> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| json!({"name": format!("c{i}"), "image": "busybox", "resources": r}))
            .collect();
        json!({"spec": {"containers": containers}})
    }

    #[test]
    fn classes_follow_kubes_rules() {
        assert_eq!(class(&pod(&[json!({})])), "BestEffort");
        assert_eq!(
            class(&pod(&[json!({"requests": {"cpu": "0", "memory": "0"}})])),
            "BestEffort"
        );
        let full = json!({"requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"cpu": "0.5", "memory": "64Mi"}});
        assert_eq!(class(&pod(std::slice::from_ref(&full))), "Guaranteed");
        assert_eq!(
            class(&pod(&[full.clone(), json!({"requests": {"cpu": "1"}})])),
            "Burstable"
        );
        assert_eq!(
            class(&pod(&[
                json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}})
            ])),
            "Burstable"
        );
        assert_eq!(class(&pod(&[json!({"limits": {"cpu": "1"}})])), "Burstable");
        // Only cpu and memory decide.
        assert_eq!(
            class(&pod(&[json!({"limits": {"hugepages-2Mi": "2Mi"}})])),
            "BestEffort"
        );
    }
}

//! NodeResourcesFit's filter: the pod count, then CPU, memory, ephemeral storage and the
//! scalar resources, each `Insufficient <name>` when the node's free allocatable is short.

use super::{Code, Status};
use crate::resources::Resources;
use crate::snapshot::{NodeInfo, PodInfo};

/// The reasons of a node that cannot hold `requests` besides what it already holds
/// (`requested`, `pod_count` pods); whether every shortage exceeds allocatable itself.
pub fn insufficient(
    requests: &Resources,
    allocatable: &Resources,
    requested: &Resources,
    pod_count: usize,
) -> Vec<(String, bool)> {
    let mut reasons = Vec::new();
    if pod_count as i64 + 1 > allocatable.allowed_pods {
        reasons.push(("Too many pods".to_string(), false));
    }
    if requests.is_zero() {
        return reasons;
    }
    let mut check = |name: &str, want: i64, have: i64, used: i64| {
        if want > 0 && have < want + used {
            reasons.push((format!("Insufficient {name}"), want > have));
        }
    };
    check(
        "cpu",
        requests.milli_cpu,
        allocatable.milli_cpu,
        requested.milli_cpu,
    );
    check(
        "memory",
        requests.memory,
        allocatable.memory,
        requested.memory,
    );
    check(
        "ephemeral-storage",
        requests.ephemeral_storage,
        allocatable.ephemeral_storage,
        requested.ephemeral_storage,
    );
    for (name, want) in &requests.scalar {
        let have = allocatable.scalar.get(name).copied().unwrap_or(0);
        let used = requested.scalar.get(name).copied().unwrap_or(0);
        check(name, *want, have, used);
    }
    reasons
}

/// The filter: `Unschedulable`, or `UnschedulableAndUnresolvable` when some request exceeds
/// the node's allocatable outright (removing pods cannot help).
pub fn fit(pod: &PodInfo, node: &NodeInfo) -> Option<Status> {
    let reasons = insufficient(
        &pod.requests,
        &node.allocatable,
        &node.requested,
        node.pods.len(),
    );
    if reasons.is_empty() {
        return None;
    }
    let code = if reasons.iter().any(|(_, unresolvable)| *unresolvable) {
        Code::UnschedulableAndUnresolvable
    } else {
        Code::Unschedulable
    };
    Some(Status {
        code,
        reasons: reasons.into_iter().map(|(r, _)| r).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_in_upstream_order() {
        let allocatable = Resources {
            milli_cpu: 1000,
            memory: 1000,
            allowed_pods: 1,
            ..Resources::default()
        };
        let mut want = Resources {
            milli_cpu: 500,
            memory: 2000,
            ..Resources::default()
        };
        want.scalar.insert("example.com/gpu".into(), 1);
        let used = Resources {
            milli_cpu: 600,
            ..Resources::default()
        };
        let reasons = insufficient(&want, &allocatable, &used, 1);
        assert_eq!(
            reasons,
            vec![
                ("Too many pods".to_string(), false),
                ("Insufficient cpu".to_string(), false),
                ("Insufficient memory".to_string(), true),
                ("Insufficient example.com/gpu".to_string(), true),
            ]
        );
        assert!(insufficient(&Resources::default(), &allocatable, &used, 0).is_empty());
    }
}

//! `spec.podFailurePolicy`: the first rule matching a failed pod decides what its failure
//! means (FailJob, FailIndex, Ignore, Count), as upstream's matchPodFailurePolicy.

use k8s_openapi::api::batch::v1::{
    PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// What a matching rule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fail the whole Job, with this condition message.
    FailJob(String),
    /// Fail the pod's index (backoffLimitPerIndex).
    FailIndex,
    /// Do not count the failure.
    Ignore,
    /// Count it (also what happens when no rule matches).
    Count,
}

/// The action for a failed `pod` under `policy`.
pub fn evaluate(policy: &PodFailurePolicy, pod: &Pod) -> Action {
    for (at, rule) in policy.rules.iter().enumerate() {
        if let Some(requirement) = &rule.on_exit_codes {
            if let Some(container) = matching_container(requirement, pod) {
                return act(rule, || {
                    let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
                    let name = pod.metadata.name.as_deref().unwrap_or("");
                    let code = container
                        .state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .map_or(0, |t| t.exit_code);
                    format!(
                        "Container {} for pod {namespace}/{name} failed with exit code {code} matching FailJob rule at index {at}",
                        container.name
                    )
                });
            }
        }
        if let Some(patterns) = &rule.on_pod_conditions {
            let conditions = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .cloned()
                .unwrap_or_default();
            for pattern in patterns {
                let wanted = pattern.status.as_str();
                if let Some(condition) = conditions
                    .iter()
                    .find(|c| c.type_ == pattern.type_ && c.status == wanted)
                {
                    return act(rule, || {
                        let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
                        let name = pod.metadata.name.as_deref().unwrap_or("");
                        format!(
                            "Pod {namespace}/{name} has condition {} matching FailJob rule at index {at}",
                            condition.type_
                        )
                    });
                }
            }
        }
    }
    Action::Count
}

fn act(rule: &PodFailurePolicyRule, message: impl FnOnce() -> String) -> Action {
    match rule.action.as_str() {
        "FailJob" => Action::FailJob(message()),
        "FailIndex" => Action::FailIndex,
        "Ignore" => Action::Ignore,
        _ => Action::Count,
    }
}

/// The first container (init containers first, as upstream) whose terminated exit code, other
/// than 0, satisfies the requirement.
fn matching_container<'a>(
    requirement: &PodFailurePolicyOnExitCodesRequirement,
    pod: &'a Pod,
) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .filter(|c| {
            requirement
                .container_name
                .as_ref()
                .is_none_or(|name| *name == c.name)
        })
        .find(|c| {
            let Some(code) = c
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code)
            else {
                return false;
            };
            if code == 0 {
                return false;
            }
            let listed = requirement.values.contains(&code);
            match requirement.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_pod(code: i32) -> Pod {
        let value = serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": "main", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code}},
            }]},
        });
        serde_json::from_value(value).unwrap_or_default()
    }

    fn policy(action: &str, operator: &str, values: Vec<i32>) -> PodFailurePolicy {
        let value = serde_json::json!({"rules": [
            {"action": action, "onExitCodes": {"operator": operator, "values": values}},
        ]});
        serde_json::from_value(value).unwrap_or_default()
    }

    #[test]
    fn exit_codes_pick_the_action_with_upstreams_message() {
        assert_eq!(
            evaluate(&policy("FailJob", "In", vec![42]), &failed_pod(42)),
            Action::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0"
                    .into()
            )
        );
        assert_eq!(
            evaluate(&policy("FailJob", "In", vec![42]), &failed_pod(1)),
            Action::Count
        );
        assert_eq!(
            evaluate(&policy("Ignore", "NotIn", vec![42]), &failed_pod(1)),
            Action::Ignore
        );
    }
}

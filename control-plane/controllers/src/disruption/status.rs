//! A PodDisruptionBudget's status from its pods and the scale of their controllers, as
//! upstream's disruption controller computes it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::podutil;

/// How long an evicted pod may stay undeleted before its budget counts it again.
pub const DELETION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// The condition the status carries.
pub const CONDITION: &str = "DisruptionAllowed";

/// Why the numbers could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// A percentage that does not parse.
    #[error("invalid value for IntOrString: invalid value {0:?}")]
    BadPercent(String),
    /// A pod's controller could not be found (its scale is unknown).
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    /// An API call failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
}

/// `intstr.GetScaledValueFromIntOrPercent` with rounding up.
pub fn scaled(value: &IntOrString, total: i32) -> Result<i32, StatusError> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| StatusError::BadPercent(s.clone()))?;
            let scaled = (percent * i64::from(total) + 99).div_euclid(100);
            Ok(scaled as i32)
        }
    }
}

/// Whether a budget's numbers need the controllers' scale (percentages and maxUnavailable).
pub fn needs_scale(pdb: &PodDisruptionBudget) -> bool {
    let spec = pdb.spec.as_ref();
    spec.and_then(|s| s.max_unavailable.as_ref()).is_some()
        || matches!(
            spec.and_then(|s| s.min_available.as_ref()),
            Some(IntOrString::String(_))
        )
}

/// (expectedPods, desiredHealthy) from the pods and, when needed, the summed scale.
pub fn expected(
    pdb: &PodDisruptionBudget,
    pods: usize,
    scale: Option<i32>,
) -> Result<(i32, i32), StatusError> {
    let spec = pdb.spec.as_ref();
    if let Some(max_unavailable) = spec.and_then(|s| s.max_unavailable.as_ref()) {
        let expected = scale.unwrap_or_default();
        let unavailable = scaled(max_unavailable, expected)?;
        return Ok((expected, (expected - unavailable).max(0)));
    }
    match spec.and_then(|s| s.min_available.as_ref()) {
        Some(IntOrString::Int(n)) => Ok((pods as i32, *n)),
        Some(percent) => {
            let expected = scale.unwrap_or_default();
            Ok((expected, scaled(percent, expected)?))
        }
        None => Ok((0, 0)),
    }
}

/// The disruptedPods still awaited (pods evicted, not yet deleted, within the timeout), and
/// when the earliest of them expires.
pub fn disrupted(
    pdb: &PodDisruptionBudget,
    pods: &[&Pod],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Timestamp>) {
    let recorded = pdb
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    let mut kept = BTreeMap::new();
    let mut recheck: Option<Timestamp> = None;
    for pod in pods {
        if podutil::is_terminating(pod) {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(when) = recorded.get(&name) else {
            continue;
        };
        let Ok(expires) = when.0.checked_add(DELETION_TIMEOUT) else {
            continue;
        };
        if expires < now {
            tracing::info!(pod = %name, "pod was expected to be deleted by its disruption budget but was not");
            continue;
        }
        recheck = Some(recheck.map_or(expires, |r| r.min(expires)));
        kept.insert(name, when.clone());
    }
    (kept, recheck)
}

/// Pods that count as healthy: Ready, not being deleted, not just evicted.
pub fn healthy(pods: &[&Pod], disrupted: &BTreeMap<String, Time>) -> i32 {
    pods.iter()
        .filter(|p| !podutil::is_terminating(p))
        .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or("")))
        .filter(|p| podutil::is_ready(p))
        .count() as i32
}

/// The new status of `pdb`, its condition set as `meta.SetStatusCondition` does.
pub fn status(
    pdb: &PodDisruptionBudget,
    current_healthy: i32,
    desired_healthy: i32,
    expected_pods: i32,
    disrupted_pods: BTreeMap<String, Time>,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let mut allowed = current_healthy - desired_healthy;
    if expected_pods <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let generation = pdb.metadata.generation;
    let (status, reason) = if allowed > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let previous = pdb.status.clone().unwrap_or_default();
    PodDisruptionBudgetStatus {
        current_healthy,
        desired_healthy,
        expected_pods,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted_pods.is_empty()).then_some(disrupted_pods),
        observed_generation: generation,
        conditions: Some(set_condition(
            previous.conditions.unwrap_or_default(),
            status,
            reason,
            "",
            generation,
            now,
        )),
    }
}

/// The status written when the sync fails: no disruptions allowed until it works.
pub fn failed(
    pdb: &PodDisruptionBudget,
    message: &str,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let mut status = pdb.status.clone().unwrap_or_default();
    status.disruptions_allowed = 0;
    status.observed_generation = pdb.metadata.generation;
    status.conditions = Some(set_condition(
        status.conditions.take().unwrap_or_default(),
        "False",
        "SyncFailed",
        message,
        pdb.metadata.generation,
        now,
    ));
    status
}

/// A selector as Go's `%v` prints a `*metav1.LabelSelector` (upstream's event texts).
pub fn go_selector(
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> String {
    let Some(selector) = selector else {
        return "nil".into();
    };
    let labels: String = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}: {v},"))
        .collect();
    let expressions: String = selector
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            format!(
                "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
                e.key,
                e.operator,
                e.values.clone().unwrap_or_default().join(" ")
            )
        })
        .collect();
    format!(
        "&LabelSelector{{MatchLabels:map[string]string{{{labels}}},\
         MatchExpressions:[]LabelSelectorRequirement{{{expressions}}},}}"
    )
}

fn set_condition(
    mut conditions: Vec<Condition>,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let transition = conditions
        .iter()
        .find(|c| c.type_ == CONDITION && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    conditions.retain(|c| c.type_ != CONDITION);
    conditions.push(Condition {
        type_: CONDITION.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: transition,
    });
    conditions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3).ok(), Some(2));
        assert_eq!(scaled(&IntOrString::String("10%".into()), 10).ok(), Some(1));
        assert_eq!(scaled(&IntOrString::Int(2), 10).ok(), Some(2));
        assert!(scaled(&IntOrString::String("x".into()), 3).is_err());
    }
}

//! RollingUpdate of a DaemonSet (`rollingUpdate` in upstream's update.go): without surge, old
//! pods are deleted while fewer than maxUnavailable pods are unavailable (unavailable old pods
//! always); with surge, new pods are created beside old ones up to maxSurge, and an old pod is
//! deleted once its new neighbour is available.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::eligibility::Eligibility;
use super::sync::{Plan, is_updated};
use crate::apps_shared::pods;

/// The number of nodes that should run a pod.
fn desired(eligible: &BTreeMap<String, Eligibility>) -> i32 {
    i32::try_from(eligible.values().filter(|e| e.should_run).count()).unwrap_or(i32::MAX)
}

/// An int-or-percent scaled against `total`, rounding up (`GetScaledValueFromIntOrPercent`).
fn scaled(value: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    match value {
        None => default,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
                Some(percent) => {
                    let value = (percent * i64::from(total) + 99) / 100;
                    i32::try_from(value).unwrap_or(i32::MAX)
                }
                None => s.parse().unwrap_or(default),
            }
        }
    }
}

fn rolling(set: &DaemonSet) -> Option<&k8s_openapi::api::apps::v1::RollingUpdateDaemonSet> {
    set.spec
        .as_ref()?
        .update_strategy
        .as_ref()
        .filter(|s| s.type_.as_deref() != Some("OnDelete"))?
        .rolling_update
        .as_ref()
}

/// maxSurge against the desired count (0 for OnDelete).
pub fn max_surge(set: &DaemonSet, eligible: &BTreeMap<String, Eligibility>) -> i32 {
    rolling(set).map_or(0, |r| scaled(r.max_surge.as_ref(), desired(eligible), 0))
}

/// maxUnavailable against the desired count; 1 when both it and maxSurge come out 0.
fn max_unavailable(set: &DaemonSet, eligible: &BTreeMap<String, Eligibility>) -> i32 {
    let value = rolling(set).map_or(1, |r| {
        scaled(r.max_unavailable.as_ref(), desired(eligible), 1)
    });
    if value == 0 && max_surge(set, eligible) == 0 {
        1
    } else {
        value
    }
}

/// The one new and one old live pod on a node; `None` when there are more (manage cleans up).
fn split<'a>(
    pods: &'a [Pod],
    hash: &str,
    generation: Option<i64>,
) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let (mut new, mut old) = (None, None);
    for pod in pods.iter().filter(|p| !pods::is_terminating(p)) {
        let slot = if is_updated(pod, hash, generation) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(pod);
    }
    Some((new, old))
}

/// What the rolling update deletes and creates now.
pub fn plan(
    set: &DaemonSet,
    hash: &str,
    eligible: &BTreeMap<String, Eligibility>,
    by_node: &BTreeMap<String, Vec<Pod>>,
) -> Plan {
    let min_ready = set
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let now = jiff::Timestamp::now();
    let generation = set.metadata.generation;
    let available = |p: &Pod| pods::is_available(p, min_ready, now);
    let mut plan = Plan::default();
    let surge = max_surge(set, eligible);
    if surge == 0 {
        let limit = max_unavailable(set, eligible);
        let mut unavailable = 0;
        let (mut replace, mut candidates) = (Vec::new(), Vec::new());
        for pods_on in by_node.values() {
            let Some((new, old)) = split(pods_on, hash, generation) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !available(new) {
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !available(old) {
                        replace.push(old.clone());
                    } else if unavailable < limit {
                        candidates.push(old.clone());
                    }
                }
            }
        }
        let room = usize::try_from((limit - unavailable).max(0)).unwrap_or(0);
        tracing::debug!(
            daemonset = set.metadata.name.as_deref().unwrap_or_default(),
            unavailable,
            limit,
            candidates = candidates.len(),
            replace = replace.len(),
            "rolling update"
        );
        candidates.truncate(room);
        plan.delete = replace;
        plan.delete.extend(candidates);
        return plan;
    }
    let mut surged = 0;
    let (mut allowed, mut candidates) = (Vec::new(), Vec::new());
    for (node, pods_on) in by_node {
        let Some((new, old)) = split(pods_on, hash, generation) else {
            surged += 1;
            continue;
        };
        let should_run = eligible.get(node).is_some_and(|e| e.should_run);
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                if !should_run {
                    continue;
                }
                if !available(old) {
                    allowed.push(node.clone());
                } else {
                    candidates.push(node.clone());
                }
            }
            (Some(new), Some(old)) => {
                if available(new) {
                    plan.delete.push(old.clone());
                } else {
                    surged += 1;
                }
            }
        }
    }
    let room = usize::try_from((surge - surged).max(0)).unwrap_or(0);
    candidates.truncate(room);
    plan.create = allowed;
    plan.create.extend(candidates);
    plan
}

//! Pod readiness gates: a pod that lists `spec.readinessGates` is Ready only when its
//! containers are and each gate's condition, set on the pod's status by some other writer
//! (a load balancer controller, say), is True. The kubelet evaluates them when it pushes the
//! status, against the conditions the API server holds; so does the status sync here.

use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};

/// The reason of a Ready condition held back by its gates.
pub const GATES_NOT_READY: &str = "ReadinessGatesNotReady";

/// Sets the Ready condition of `status` from its ContainersReady condition and the gates of
/// `spec`, with the kubelet's reason and message for gates not passed. Pods without gates,
/// and finished pods, are left as they are.
pub fn apply(spec: Option<&PodSpec>, status: &mut PodStatus) {
    let gates = spec
        .and_then(|s| s.readiness_gates.as_ref())
        .filter(|g| !g.is_empty());
    let Some(gates) = gates else {
        return;
    };
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let holds = |kind: &str| conditions.iter().find(|c| c.type_ == kind).cloned();
    let containers_ready = holds("ContainersReady").is_some_and(|c| c.status == "True");
    let unready: Vec<String> = gates
        .iter()
        .filter_map(|gate| match holds(&gate.condition_type) {
            None => Some(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                gate.condition_type
            )),
            Some(c) if c.status != "True" => Some(format!(
                "the status of pod readiness gate \"{}\" is not \"True\", but {}",
                gate.condition_type, c.status
            )),
            Some(_) => None,
        })
        .collect();
    let Some(ready) = conditions.iter_mut().find(|c| c.type_ == "Ready") else {
        return;
    };
    if ready.reason.as_deref() == Some("PodCompleted") {
        return;
    }
    set(ready, containers_ready, &unready);
}

fn set(ready: &mut PodCondition, containers_ready: bool, unready: &[String]) {
    if !containers_ready {
        // The containers' own reason and message stand.
        ready.status = "False".into();
        return;
    }
    if unready.is_empty() {
        ready.status = "True".into();
        ready.reason = None;
        ready.message = None;
    } else {
        ready.status = "False".into();
        ready.reason = Some(GATES_NOT_READY.into());
        ready.message = Some(unready.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodReadinessGate;

    fn condition(kind: &str, status: &str) -> PodCondition {
        PodCondition {
            type_: kind.into(),
            status: status.into(),
            ..Default::default()
        }
    }

    fn spec(gates: &[&str]) -> PodSpec {
        PodSpec {
            readiness_gates: Some(
                gates
                    .iter()
                    .map(|g| PodReadinessGate {
                        condition_type: g.to_string(),
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn ready_of(status: &PodStatus) -> PodCondition {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .cloned()
            .unwrap()
    }

    #[test]
    fn ready_waits_for_every_gate_with_the_kubelets_messages() {
        let mut status = PodStatus {
            conditions: Some(vec![
                condition("ContainersReady", "True"),
                condition("Ready", "False"),
                condition("example.com/lb", "False"),
            ]),
            ..Default::default()
        };
        apply(
            Some(&spec(&["example.com/lb", "example.com/dns"])),
            &mut status,
        );
        let ready = ready_of(&status);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some(GATES_NOT_READY));
        assert_eq!(
            ready.message.as_deref(),
            Some(
                "the status of pod readiness gate \"example.com/lb\" is not \"True\", but False, \
                 corresponding condition of pod readiness gate \"example.com/dns\" does not exist."
            )
        );
        // Both gates True: Ready.
        let conditions = status.conditions.as_mut().unwrap();
        conditions.retain(|c| !c.type_.starts_with("example.com"));
        conditions.push(condition("example.com/lb", "True"));
        conditions.push(condition("example.com/dns", "True"));
        apply(
            Some(&spec(&["example.com/lb", "example.com/dns"])),
            &mut status,
        );
        assert_eq!(ready_of(&status).status, "True");
        assert_eq!(ready_of(&status).reason, None);
    }

    #[test]
    fn unready_containers_keep_ready_false_whatever_the_gates() {
        let mut status = PodStatus {
            conditions: Some(vec![
                condition("ContainersReady", "False"),
                PodCondition {
                    reason: Some("ContainersNotReady".into()),
                    ..condition("Ready", "False")
                },
                condition("example.com/lb", "True"),
            ]),
            ..Default::default()
        };
        apply(Some(&spec(&["example.com/lb"])), &mut status);
        let ready = ready_of(&status);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        // Without gates nothing is touched.
        let before = status.clone();
        apply(Some(&PodSpec::default()), &mut status);
        assert_eq!(status, before);
    }
}

//! PodStatus as the kubelet computes it: phase, conditions, container statuses (app, init and
//! ephemeral), IPs, QoS class.
//! A pure function of the pod, what the runtime holds and what the worker decided.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::pods::resources;
use crate::pods::view::{ContainerInfo, PodView};

/// Why a container is not running right now, as the worker decided (CrashLoopBackOff,
/// ErrImagePull, CreateContainerError, PodInitializing, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The reason, a CamelCase word.
    pub reason: String,
    /// A sentence for people.
    pub message: String,
}

/// Everything besides the pod and the runtime view that the status depends on.
#[derive(Debug, Clone, Default)]
pub struct StatusInputs {
    /// Containers held back, by name.
    pub waiting: HashMap<String, Waiting>,
    /// Readiness probe results by container name; no entry: the container has no probe.
    pub ready: HashMap<String, bool>,
    /// Startup probe results by container name; no entry: no startup probe.
    pub started: HashMap<String, bool>,
    /// The node's IPs.
    pub host_ips: Vec<String>,
    /// When the agent first accepted the pod.
    pub start_time: Option<Timestamp>,
    /// The runtime's name, for container IDs (`capstan://...`).
    pub runtime_name: String,
    /// The pod was rejected at admission: (reason, message).
    pub rejected: Option<(String, String)>,
    /// The sandbox could not be created: (reason, message).
    pub sandbox_error: Option<(String, String)>,
}

/// The current time (k8s-openapi's jiff is built without its clock).
pub fn now() -> Timestamp {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or_default();
    Timestamp::from_nanosecond(nanos).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The runtime's own ID in a status `containerID` (`capstan://abc` → `abc`), the way
/// container statuses form their IDs.
pub fn runtime_container_id(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, rest)| rest)
}

/// Nanoseconds since the epoch as an API time.
pub fn time_from_nanos(nanos: i64) -> Option<Time> {
    (nanos > 0)
        .then(|| Timestamp::from_nanosecond(nanos as i128).ok())
        .flatten()
        .map(Time)
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn terminated(info: &ContainerInfo, runtime: &str) -> ContainerStateTerminated {
    let s = &info.status;
    let reason = if s.reason.is_empty() {
        if s.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .to_string()
    } else {
        s.reason.clone()
    };
    ContainerStateTerminated {
        exit_code: s.exit_code,
        reason: Some(reason),
        message: (!s.message.is_empty()).then(|| s.message.clone()),
        started_at: time_from_nanos(s.started_at),
        finished_at: time_from_nanos(s.finished_at),
        container_id: Some(format!("{runtime}://{}", s.id)),
        signal: None,
    }
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: (!message.is_empty()).then(|| message.to_string()),
        }),
        ..Default::default()
    }
}

/// The status of one container.
fn container_status(
    container: &Container,
    view: &PodView,
    inputs: &StatusInputs,
    default_waiting: &str,
) -> ContainerStatus {
    let runtime = inputs.runtime_name.as_str();
    let latest = view.latest(&container.name);
    let held = inputs.waiting.get(&container.name);
    let (state, last) = match (latest, held) {
        (Some(latest), Some(held)) if latest.exited() => (
            waiting(&held.reason, &held.message),
            Some(terminated(latest, runtime)),
        ),
        (_, Some(held)) => (
            waiting(&held.reason, &held.message),
            latest
                .and_then(|_| view.previous(&container.name))
                .filter(|p| p.exited())
                .map(|p| terminated(p, runtime)),
        ),
        (Some(latest), None) => {
            let last = view
                .previous(&container.name)
                .filter(|p| p.exited())
                .map(|p| terminated(p, runtime));
            let state = if latest.running() {
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: time_from_nanos(latest.status.started_at),
                    }),
                    ..Default::default()
                }
            } else if latest.exited() {
                ContainerState {
                    terminated: Some(terminated(latest, runtime)),
                    ..Default::default()
                }
            } else {
                waiting("ContainerCreating", "")
            };
            (state, last)
        }
        (None, None) => (waiting(default_waiting, ""), None),
    };
    let running = state.running.is_some();
    let started = running && inputs.started.get(&container.name).copied().unwrap_or(true);
    let ready = started && inputs.ready.get(&container.name).copied().unwrap_or(true);
    ContainerStatus {
        name: container.name.clone(),
        image: container.image.clone().unwrap_or_default(),
        image_id: latest
            .map(|l| l.status.image_ref.clone())
            .unwrap_or_default(),
        container_id: latest.map(|l| format!("{runtime}://{}", l.status.id)),
        restart_count: latest.map(|l| l.attempt as i32).unwrap_or(0),
        ready,
        started: Some(started),
        state: Some(state),
        last_state: Some(ContainerState {
            terminated: last,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, now: &Time) -> PodCondition {
    PodCondition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: (!ok)
            .then(|| reason.unwrap_or_default().to_string())
            .filter(|r| !r.is_empty()),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    }
}

/// Computes the pod's status.
pub fn pod_status(pod: &Pod, view: &PodView, inputs: &StatusInputs) -> PodStatus {
    let now = Time(now());
    let qos = resources::qos_class(pod).as_str().to_string();
    let host_ips: Vec<HostIP> = inputs
        .host_ips
        .iter()
        .map(|ip| HostIP { ip: ip.clone() })
        .collect();
    if let Some((reason, message)) = &inputs.rejected {
        return PodStatus {
            phase: Some("Failed".into()),
            reason: Some(reason.clone()),
            message: Some(message.clone()),
            qos_class: Some(qos),
            host_ip: inputs.host_ips.first().cloned(),
            host_ips: Some(host_ips),
            start_time: inputs.start_time.map(Time),
            ..Default::default()
        };
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let restart_policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let inits = spec.init_containers.clone().unwrap_or_default();

    let mut init_statuses = Vec::new();
    let mut initialized = true;
    let mut init_failed = false;
    for init in &inits {
        let status = container_status(init, view, inputs, "PodInitializing");
        let state = status.state.clone().unwrap_or_default();
        let done = if is_sidecar(init) {
            status.started == Some(true)
        } else {
            state.terminated.as_ref().is_some_and(|t| t.exit_code == 0)
        };
        if !is_sidecar(init)
            && restart_policy == "Never"
            && state.terminated.as_ref().is_some_and(|t| t.exit_code != 0)
        {
            init_failed = true;
        }
        initialized &= done;
        init_statuses.push(status);
    }
    let app_waiting = if initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(c, view, inputs, app_waiting))
        .collect();

    // Ephemeral containers count for neither phase nor readiness; they are never ready and
    // carry no `started` (the kubelet's prober knows nothing of them).
    let default_waiting = if inits.is_empty() {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let ephemeral_statuses: Vec<ContainerStatus> = super::ephemeral::of(pod)
        .iter()
        .map(|e| {
            let container = super::ephemeral::as_container(e);
            ContainerStatus {
                ready: false,
                started: None,
                ..container_status(&container, view, inputs, default_waiting)
            }
        })
        .collect();

    let (mut running, mut waiting_count, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for status in &statuses {
        let state = status.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = &state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some()
        {
            stopped += 1;
        } else {
            waiting_count += 1;
        }
    }
    let phase = if init_failed {
        "Failed"
    } else if !initialized || waiting_count > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if restart_policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if restart_policy == "OnFailure" {
            "Running"
        } else {
            "Failed"
        }
    } else {
        "Pending"
    };

    let sandbox_ready = view.ready_sandbox().is_some();
    let containers_ready = statuses.iter().all(|s| s.ready);
    let mut conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, &now),
        condition(
            "Initialized",
            initialized,
            Some("ContainersNotInitialized"),
            &now,
        ),
        condition(
            "ContainersReady",
            containers_ready,
            Some("ContainersNotReady"),
            &now,
        ),
        // Readiness gates are judged after, against the conditions other writers set.
        condition("Ready", containers_ready, Some("ContainersNotReady"), &now),
        condition("PodScheduled", true, None, &now),
    ];
    if phase == "Succeeded" || phase == "Failed" {
        for c in conditions
            .iter_mut()
            .filter(|c| c.type_ == "Ready" || c.type_ == "ContainersReady")
        {
            c.status = "False".into();
            c.reason = Some("PodCompleted".into());
        }
    }
    let pod_ips: Vec<PodIP> = if spec.host_network.unwrap_or(false) {
        inputs
            .host_ips
            .iter()
            .map(|ip| PodIP { ip: ip.clone() })
            .collect()
    } else {
        view.pod_ips
            .iter()
            .map(|ip| PodIP { ip: ip.clone() })
            .collect()
    };
    let (reason, message) = match &inputs.sandbox_error {
        Some((r, m)) => (Some(r.clone()), Some(m.clone())),
        None => (None, None),
    };
    let mut status = PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        ephemeral_container_statuses: (!ephemeral_statuses.is_empty())
            .then_some(ephemeral_statuses),
        host_ip: inputs.host_ips.first().cloned(),
        host_ips: Some(host_ips),
        pod_ip: pod_ips.first().map(|ip| ip.ip.clone()),
        pod_ips: Some(pod_ips),
        qos_class: Some(qos),
        start_time: inputs.start_time.map(Time),
        reason,
        message,
        ..Default::default()
    };
    super::readiness_gates::apply(Some(&spec), &mut status);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_proto::{ContainerMetadata, ContainerState as CriState, ContainerStatus as Cri};

    fn instance(name: &str, state: CriState, exit_code: i32) -> ContainerInfo {
        ContainerInfo {
            status: Cri {
                id: format!("{name}-id"),
                metadata: Some(ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                state: state as i32,
                exit_code,
                image_ref: "sha256:abc".into(),
                ..Default::default()
            },
            name: name.into(),
            attempt: 0,
            sandbox_id: "s".into(),
        }
    }

    #[test]
    fn ephemeral_containers_are_reported_apart_and_never_ready() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "c", "image": "app"}],
                "ephemeralContainers": [
                    {"name": "done", "image": "busybox"},
                    {"name": "new", "image": "busybox"},
                ],
            }
        }))
        .expect("a pod");
        let view = PodView {
            containers: vec![
                instance("c", CriState::ContainerRunning, 0),
                instance("done", CriState::ContainerExited, 3),
            ],
            ..Default::default()
        };
        let inputs = StatusInputs {
            runtime_name: "capstan".into(),
            ..Default::default()
        };
        let status = pod_status(&pod, &view, &inputs);
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ephemeral = status.ephemeral_container_statuses.expect("statuses");
        let names: Vec<&str> = ephemeral.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["done", "new"]);
        let done = &ephemeral[0];
        let terminated = done.state.as_ref().and_then(|s| s.terminated.as_ref());
        assert_eq!(terminated.map(|t| t.exit_code), Some(3));
        assert_eq!(terminated.and_then(|t| t.reason.as_deref()), Some("Error"));
        assert_eq!(done.container_id.as_deref(), Some("capstan://done-id"));
        assert_eq!(done.image_id, "sha256:abc");
        assert!(!done.ready && done.started.is_none());
        let waiting = ephemeral[1].state.as_ref().and_then(|s| s.waiting.as_ref());
        assert_eq!(
            waiting.and_then(|w| w.reason.as_deref()),
            Some("ContainerCreating")
        );
        // A pod without any has no such list.
        let mut plain = pod.clone();
        if let Some(spec) = plain.spec.as_mut() {
            spec.ephemeral_containers = None;
        }
        assert!(
            pod_status(&plain, &view, &inputs)
                .ephemeral_container_statuses
                .is_none()
        );
    }
}

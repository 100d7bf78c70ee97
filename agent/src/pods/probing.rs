//! The probes of one pod's running containers: startup first, then liveness and readiness, as
//! the kubelet gates them. Every change of a probe's result wakes the pod's worker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use tokio::sync::mpsc;

use super::mailbox::WorkerMessage;
use super::view::PodView;
use crate::cri::Cri;
use crate::probes::{
    ProbeCounters, ProbeHandle, ProbeKind, ProbeResult, ProbeTarget, spawn_probe_worker,
};

/// A container whose liveness or startup probe failed: it must be restarted.
#[derive(Debug, Clone)]
pub struct ProbeFailure {
    /// Container name.
    pub name: String,
    /// CRI id of the failing instance.
    pub container_id: String,
    /// Which probe.
    pub kind: ProbeKind,
    /// The probe's message.
    pub message: String,
    /// The probe-level terminationGracePeriodSeconds, if set.
    pub grace_seconds: Option<i64>,
}

/// What the probes say now.
#[derive(Debug, Default)]
pub struct ProbeReport {
    /// Started (startup probe passed, or none), by container name.
    pub started: HashMap<String, bool>,
    /// Ready (readiness probe passing, or none), by container name.
    pub ready: HashMap<String, bool>,
    /// Containers to restart.
    pub failed: Vec<ProbeFailure>,
}

#[derive(Default)]
struct ContainerProbes {
    container_id: String,
    startup: Option<ProbeHandle>,
    liveness: Option<ProbeHandle>,
    readiness: Option<ProbeHandle>,
    gated_open: bool,
}

/// Probe workers of one pod, by container name.
pub struct Probing {
    containers: HashMap<String, ContainerProbes>,
    wake: mpsc::UnboundedSender<WorkerMessage>,
}

fn passed(handle: &ProbeHandle) -> bool {
    let state = handle.current();
    state.probed && state.result == ProbeResult::Success
}

fn failed(handle: &ProbeHandle) -> Option<String> {
    let state = handle.current();
    (state.probed && state.result == ProbeResult::Failure)
        .then(|| state.message.unwrap_or_else(|| "probe failed".into()))
}

impl Probing {
    /// No probes yet; result changes are sent to `wake`.
    pub fn new(wake: mpsc::UnboundedSender<WorkerMessage>) -> Self {
        Probing {
            containers: HashMap::new(),
            wake,
        }
    }

    fn spawn(
        &self,
        kind: ProbeKind,
        probe: &Probe,
        target: &ProbeTarget,
        cri: &Cri,
        started_at: SystemTime,
        counters: &std::sync::Arc<ProbeCounters>,
    ) -> ProbeHandle {
        let handle = spawn_probe_worker(
            kind,
            probe.clone(),
            target.clone(),
            cri.clone(),
            started_at,
            std::sync::Arc::clone(counters),
        );
        let mut changes = handle.subscribe();
        let wake = self.wake.clone();
        tokio::spawn(async move {
            // Ends when the handle, and with it the probe worker, is dropped.
            while changes.changed().await.is_ok() {
                if wake.send(WorkerMessage::Wake).is_err() {
                    return;
                }
            }
        });
        handle
    }

    /// Brings the probe workers in line with the running containers of `sandbox_id` and reports
    /// what they say.
    pub fn update(
        &mut self,
        pod: &Pod,
        view: &PodView,
        sandbox_id: &str,
        cri: &Cri,
        counters: &std::sync::Arc<ProbeCounters>,
    ) -> ProbeReport {
        let spec = pod.spec.clone().unwrap_or_default();
        let host_network = spec.host_network.unwrap_or(false);
        let pod_ip: Option<IpAddr> = view.pod_ips.first().and_then(|ip| ip.parse().ok());
        let probed: Vec<&Container> = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .chain(spec.containers.iter())
            .collect();
        let mut report = ProbeReport::default();
        let mut running_names = Vec::new();
        for container in probed {
            let Some(latest) = view
                .latest(&container.name)
                .filter(|c| c.running() && c.sandbox_id == sandbox_id)
            else {
                continue;
            };
            running_names.push(container.name.clone());
            let id = latest.status.id.clone();
            let started_at = SystemTime::UNIX_EPOCH
                + Duration::from_nanos(latest.status.started_at.max(0) as u64);
            let target = ProbeTarget {
                pod_ip,
                host_network,
                container_id: id.clone(),
                container: container.clone(),
            };
            let mut entry = self.containers.remove(&container.name).unwrap_or_default();
            if entry.container_id != id {
                entry = ContainerProbes {
                    container_id: id.clone(),
                    ..Default::default()
                };
            }
            if let (Some(probe), None, false) =
                (&container.startup_probe, &entry.startup, entry.gated_open)
            {
                entry.startup = Some(self.spawn(
                    ProbeKind::Startup,
                    probe,
                    &target,
                    cri,
                    started_at,
                    counters,
                ));
            }
            let started = match &entry.startup {
                Some(handle) => {
                    if let Some(message) = failed(handle) {
                        report.failed.push(ProbeFailure {
                            name: container.name.clone(),
                            container_id: id.clone(),
                            kind: ProbeKind::Startup,
                            message,
                            grace_seconds: container
                                .startup_probe
                                .as_ref()
                                .and_then(|p| p.termination_grace_period_seconds),
                        });
                    }
                    passed(handle)
                }
                None => true,
            };
            if started && !entry.gated_open {
                entry.gated_open = true;
                // Liveness and readiness run only once the container has started.
                let since = SystemTime::now().max(started_at);
                if let Some(probe) = &container.liveness_probe {
                    entry.liveness =
                        Some(self.spawn(ProbeKind::Liveness, probe, &target, cri, since, counters));
                }
                if let Some(probe) = &container.readiness_probe {
                    entry.readiness = Some(self.spawn(
                        ProbeKind::Readiness,
                        probe,
                        &target,
                        cri,
                        since,
                        counters,
                    ));
                }
            }
            if let Some(message) = entry.liveness.as_ref().and_then(failed) {
                report.failed.push(ProbeFailure {
                    name: container.name.clone(),
                    container_id: id.clone(),
                    kind: ProbeKind::Liveness,
                    message,
                    grace_seconds: container
                        .liveness_probe
                        .as_ref()
                        .and_then(|p| p.termination_grace_period_seconds),
                });
            }
            let ready = started && entry.readiness.as_ref().is_none_or(passed);
            report.started.insert(container.name.clone(), started);
            report.ready.insert(container.name.clone(), ready);
            self.containers.insert(container.name.clone(), entry);
        }
        // Probes of containers that stopped running stop with them.
        self.containers
            .retain(|name, _| running_names.contains(name));
        report
    }

    /// Forgets the probes of container `name` (it is being restarted).
    pub fn forget(&mut self, name: &str) {
        self.containers.remove(name);
    }
}

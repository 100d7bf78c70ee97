//! What the runtime holds for one pod: its sandboxes and its containers' detailed statuses,
//! read through CRI by the pod's UID label.

use std::collections::HashMap;

use capstan_proto::{
    ContainerFilter, ContainerState, ContainerStatus, ContainerStatusRequest,
    ListContainersRequest, ListPodSandboxRequest, PodSandbox, PodSandboxFilter, PodSandboxState,
    PodSandboxStatusRequest,
};
use tonic::{Request, Status};

use super::labels;
use crate::cri::Cri;

/// One container instance as the pod worker reasons about it.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    /// The full CRI status.
    pub status: ContainerStatus,
    /// Container name in the pod spec.
    pub name: String,
    /// Attempt number (the restart count when it was created).
    pub attempt: u32,
    /// The sandbox it belongs to.
    pub sandbox_id: String,
}

impl ContainerInfo {
    /// Whether the container is running.
    pub fn running(&self) -> bool {
        self.status.state == ContainerState::ContainerRunning as i32
    }
    /// Whether the container has exited.
    pub fn exited(&self) -> bool {
        self.status.state == ContainerState::ContainerExited as i32
    }
    /// Whether the container was created but never started.
    pub fn created(&self) -> bool {
        self.status.state == ContainerState::ContainerCreated as i32
    }
}

/// The runtime's side of one pod.
#[derive(Debug, Clone, Default)]
pub struct PodView {
    /// Sandboxes of the pod, newest first.
    pub sandboxes: Vec<PodSandbox>,
    /// Every container instance of the pod, newest first within each name.
    pub containers: Vec<ContainerInfo>,
    /// IPs of the newest ready sandbox.
    pub pod_ips: Vec<String>,
}

impl PodView {
    /// Reads the pod `uid`'s sandboxes and containers.
    pub async fn load(cri: &Cri, uid: &str) -> Result<PodView, Status> {
        let selector = HashMap::from([(labels::POD_UID.to_string(), uid.to_string())]);
        let mut sandboxes = cri
            .runtime
            .list_pod_sandbox(Request::new(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    label_selector: selector.clone(),
                    ..Default::default()
                }),
            }))
            .await?
            .into_inner()
            .items;
        sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        let listed = cri
            .runtime
            .list_containers(Request::new(ListContainersRequest {
                filter: Some(ContainerFilter {
                    label_selector: selector,
                    ..Default::default()
                }),
            }))
            .await?
            .into_inner()
            .containers;
        let mut containers = Vec::with_capacity(listed.len());
        for container in listed {
            let reply = cri
                .runtime
                .container_status(Request::new(ContainerStatusRequest {
                    container_id: container.id.clone(),
                    verbose: false,
                }))
                .await;
            // Removed between list and status: it no longer exists.
            let Ok(reply) = reply else { continue };
            let Some(status) = reply.into_inner().status else {
                continue;
            };
            let metadata = status.metadata.clone().unwrap_or_default();
            containers.push(ContainerInfo {
                sandbox_id: container.pod_sandbox_id.clone(),
                name: metadata.name,
                attempt: metadata.attempt,
                status,
            });
        }
        containers.sort_by(|a, b| {
            b.attempt
                .cmp(&a.attempt)
                .then(b.status.created_at.cmp(&a.status.created_at))
        });
        let mut view = PodView {
            sandboxes,
            containers,
            pod_ips: Vec::new(),
        };
        if let Some(ready) = view.ready_sandbox() {
            let id = ready.id.clone();
            if let Ok(reply) = cri
                .runtime
                .pod_sandbox_status(Request::new(PodSandboxStatusRequest {
                    pod_sandbox_id: id,
                    verbose: false,
                }))
                .await
            {
                if let Some(network) = reply.into_inner().status.and_then(|s| s.network) {
                    if !network.ip.is_empty() {
                        view.pod_ips.push(network.ip);
                    }
                    view.pod_ips
                        .extend(network.additional_ips.into_iter().map(|ip| ip.ip));
                }
            }
        }
        Ok(view)
    }

    /// The newest sandbox, if it is ready.
    pub fn ready_sandbox(&self) -> Option<&PodSandbox> {
        self.sandboxes
            .first()
            .filter(|s| s.state == PodSandboxState::SandboxReady as i32)
    }

    /// The newest instance of container `name`.
    pub fn latest(&self, name: &str) -> Option<&ContainerInfo> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// The instance before the newest one of container `name` (the kubelet's lastState).
    pub fn previous(&self, name: &str) -> Option<&ContainerInfo> {
        self.containers.iter().filter(|c| c.name == name).nth(1)
    }
}

//! The pods bound to hollow nodes: one watch over all bound pods, a small task per pod that
//! reports it Running (then Ready, exited, restarted as its annotations say), and deletion
//! finished with grace 0 once the API server marks a pod terminating.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::node::HollowNode;
use crate::{EXIT_AFTER, EXIT_CODE, Nodes, READY, READY_AFTER};

/// Watches every bound pod and drives those of live hollow nodes; runs until dropped.
pub(crate) async fn run(client: kube::Client, nodes: Arc<Nodes>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields("spec.nodeName!=");
    let mut events = watcher::watcher(pods.clone(), config).boxed();
    let mut running: HashMap<String, Running> = HashMap::new();
    // Killed nodes' pods are looked at again every few seconds, so that a revived node picks
    // its pods up without a relist.
    let mut idle: HashMap<String, Pod> = HashMap::new();
    let mut recheck = tokio::time::interval(Duration::from_secs(1));
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = recheck.tick() => {
                let revived: Vec<Pod> = idle
                    .values()
                    .filter(|pod| node_of(pod).and_then(|n| nodes.serving(&n)).is_some())
                    .cloned()
                    .collect();
                for pod in revived {
                    idle.remove(&uid(&pod));
                    observe(&pods, &nodes, &mut running, &mut idle, pod);
                }
                continue;
            }
        };
        match event {
            None => return,
            Some(Err(error)) => {
                tracing::debug!(%error, "hollow pod watch failed; the watcher retries");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some(Ok(Event::Apply(pod) | Event::InitApply(pod))) => {
                observe(&pods, &nodes, &mut running, &mut idle, pod)
            }
            Some(Ok(Event::Delete(pod))) => {
                let uid = uid(&pod);
                idle.remove(&uid);
                if let Some(task) = running.remove(&uid) {
                    task.handle.abort();
                }
            }
            Some(Ok(Event::Init | Event::InitDone)) => {}
        }
    }
}

struct Running {
    handle: JoinHandle<()>,
    terminating: bool,
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.node_name.clone()
}

fn observe(
    pods: &Api<Pod>,
    nodes: &Arc<Nodes>,
    running: &mut HashMap<String, Running>,
    idle: &mut HashMap<String, Pod>,
    pod: Pod,
) {
    let uid = uid(&pod);
    let Some(node_name) = node_of(&pod) else {
        return;
    };
    let Some(node) = nodes.serving(&node_name) else {
        // Not ours, or ours but dead: keep ours for when the node comes back.
        if nodes
            .alive
            .lock()
            .is_ok_and(|all| all.contains_key(&node_name))
        {
            if let Some(task) = running.remove(&uid) {
                task.handle.abort();
            }
            idle.insert(uid, pod);
        }
        return;
    };
    let terminating = pod.metadata.deletion_timestamp.is_some();
    // A pod already served stays served: a finished live task (the pod reached Ready, or
    // ended) is not restarted by its own status writes, which would reset it to not Ready;
    // a finished deletion is tried again.
    if let Some(task) = running.get(&uid)
        && (task.terminating || !terminating)
        && (!task.terminating || !task.handle.is_finished())
    {
        return;
    }
    if let Some(task) = running.remove(&uid) {
        task.handle.abort();
    }
    let handle = if terminating {
        tokio::spawn(finish_deletion(pods.clone(), pod))
    } else {
        tokio::spawn(live(pods.clone(), node, pod))
    };
    running.insert(
        uid,
        Running {
            handle,
            terminating,
        },
    );
}

/// The kubelet's part of graceful deletion: containers stopped, then the pod deleted with
/// grace 0, on the condition that it is still the same pod.
async fn finish_deletion(pods: Api<Pod>, pod: Pod) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(pods.into_client(), &namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(error) = pods.delete(&name, &params).await {
        tracing::debug!(pod = %name, %error, "hollow pod deletion not finished");
    }
}

fn annotation(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(key).cloned()
}

fn seconds(pod: &Pod, key: &str) -> Option<Duration> {
    annotation(pod, key)?
        .parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// The pod's life on a hollow node: started, maybe Ready later, maybe exiting.
async fn live(pods: Api<Pod>, node: Arc<HollowNode>, pod: Pod) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(pods.into_client(), &namespace);
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if phase == "Succeeded" || phase == "Failed" {
        return;
    }
    let mut life = Life::new(&pod, &node);
    if phase == "Running" {
        // Picked up again (a revived node, a restarted process): its IP stays.
        if let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) {
            life.pod_ip = ip;
        }
    }
    let ready_after = seconds(&pod, READY_AFTER);
    let never_ready = annotation(&pod, READY).as_deref() == Some("false");
    let exit_after = seconds(&pod, EXIT_AFTER);
    let exit_code: i32 = annotation(&pod, EXIT_CODE)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let restart_policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    loop {
        life.ready = !never_ready && ready_after.is_none();
        life.post(&pods, "Running", None).await;
        if let Some(wait) = ready_after.filter(|_| !never_ready) {
            tokio::time::sleep(wait).await;
            life.ready = true;
            life.post(&pods, "Running", None).await;
        }
        let Some(exit_after) = exit_after else {
            return;
        };
        tokio::time::sleep(exit_after.saturating_sub(ready_after.unwrap_or_default())).await;
        let restart = match restart_policy.as_str() {
            "Never" => false,
            "OnFailure" => exit_code != 0,
            _ => true,
        };
        if !restart {
            let phase = if exit_code == 0 {
                "Succeeded"
            } else {
                "Failed"
            };
            life.ready = false;
            life.post(&pods, phase, Some(exit_code)).await;
            return;
        }
        life.restarts += 1;
        life.last_exit = Some(exit_code);
    }
}

/// What a pod's status says now.
struct Life {
    name: String,
    pod_ip: String,
    host_ip: String,
    started: String,
    containers: Vec<(String, String)>,
    init_containers: Vec<(String, String)>,
    uid: String,
    ready: bool,
    restarts: i32,
    last_exit: Option<i32>,
}

impl Life {
    fn new(pod: &Pod, node: &HollowNode) -> Life {
        let spec = pod.spec.clone().unwrap_or_default();
        let pairs = |list: &[k8s_openapi::api::core::v1::Container]| {
            list.iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
        };
        Life {
            name: pod.metadata.name.clone().unwrap_or_default(),
            pod_ip: node.next_pod_ip(),
            host_ip: node.internal_ip(),
            started: jiff::Timestamp::now().to_string(),
            containers: pairs(&spec.containers),
            init_containers: pairs(spec.init_containers.as_deref().unwrap_or_default()),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            ready: false,
            restarts: 0,
            last_exit: None,
        }
    }

    async fn post(&self, pods: &Api<Pod>, phase: &str, exit: Option<i32>) {
        let now = jiff::Timestamp::now().to_string();
        let running = exit.is_none();
        let ready = if self.ready { "True" } else { "False" };
        let condition = |kind: &str, status: &str| json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
        let container = |(name, image): &(String, String)| {
            let state = match exit {
                None => json!({"running": {"startedAt": self.started}}),
                Some(code) => json!({"terminated": {
                    "exitCode": code,
                    "reason": if code == 0 { "Completed" } else { "Error" },
                    "startedAt": self.started, "finishedAt": now,
                }}),
            };
            let last_state = match self.last_exit {
                Some(code) => json!({"terminated": {
                    "exitCode": code,
                    "reason": if code == 0 { "Completed" } else { "Error" },
                    "startedAt": self.started, "finishedAt": now,
                }}),
                None => json!({}),
            };
            json!({
                "name": name, "image": image, "imageID": format!("hollow://{image}"),
                "containerID": format!("hollow://{}-{name}", self.uid),
                "ready": self.ready && running, "started": running,
                "restartCount": self.restarts, "state": state, "lastState": last_state,
            })
        };
        let init: Vec<Value> = self
            .init_containers
            .iter()
            .map(|(name, image)| {
                json!({
                    "name": name, "image": image, "imageID": format!("hollow://{image}"),
                    "containerID": format!("hollow://{}-{name}", self.uid),
                    "ready": true, "started": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                              "startedAt": self.started, "finishedAt": self.started}},
                })
            })
            .collect();
        let status = json!({"status": {
            "phase": phase,
            "conditions": [
                condition("PodReadyToStartContainers", if running { "True" } else { "False" }),
                condition("Initialized", "True"),
                condition("Ready", ready),
                condition("ContainersReady", ready),
                condition("PodScheduled", "True"),
            ],
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.started,
            "containerStatuses": self.containers.iter().map(container).collect::<Vec<_>>(),
            "initContainerStatuses": init,
        }});
        if let Err(error) = pods
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            tracing::debug!(pod = %self.name, %error, "hollow pod status not posted");
        }
    }
}

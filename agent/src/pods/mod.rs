//! Pods on this node: a worker per pod, the registry that starts and stops workers as the
//! desired set changes, and the routing of runtime events to the workers they concern.

pub mod admission;
pub mod backoff;
pub mod container_config;
pub mod context;
pub mod downward;
pub mod env;
pub mod ephemeral;
pub mod events;
pub mod hooks;
pub mod labels;
pub mod mailbox;
pub mod probing;
pub mod pull_auth;
pub mod readiness_gates;
pub mod resources;
pub mod sandbox_config;
pub mod status;
pub mod status_sync;
pub mod view;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use capstan_proto::{GetEventsRequest, ListPodSandboxRequest, PodSandboxFilter};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use tonic::Request;

use admission::Allocatable;
pub use context::{NodeContext, NodeSettings, PodRecord, PodStore};
use mailbox::{WorkerHandle, WorkerMessage};
use view::PodView;

/// The pod workers, keyed by pod UID.
pub struct PodWorkers {
    ctx: Arc<NodeContext>,
    allocatable: Allocatable,
    workers: Arc<Mutex<HashMap<String, (Pod, WorkerHandle)>>>,
    rejected: Mutex<HashMap<String, Pod>>,
    orphans_swept: Mutex<bool>,
}

impl PodWorkers {
    /// A registry with no pods yet.
    pub fn new(ctx: Arc<NodeContext>, allocatable: Allocatable) -> Self {
        PodWorkers {
            ctx,
            allocatable,
            workers: Arc::default(),
            rejected: Mutex::default(),
            orphans_swept: Mutex::new(false),
        }
    }

    /// The shared context.
    pub fn context(&self) -> &Arc<NodeContext> {
        &self.ctx
    }

    /// Makes the set of pods the node runs `desired` (keyed by UID): new pods are admitted and
    /// get a worker, pods no longer desired are stopped. The first call also stops pods the
    /// agent ran before a restart that no source wants any more.
    ///
    /// Until every source has reported (`sources_ready`), a pod missing from the set may only
    /// not have been listed yet: nothing is stopped then.
    pub async fn apply(&self, desired: &BTreeMap<String, Pod>, sources_ready: bool) {
        // A pod marked for deletion in the API server is stopped within the deletion's grace
        // period and never (re)started; the status sync deletes it once its worker is done.
        let deleting: BTreeMap<&String, i64> = desired
            .iter()
            .filter(|(_, pod)| pod.metadata.deletion_timestamp.is_some())
            .map(|(uid, pod)| (uid, pod.metadata.deletion_grace_period_seconds.unwrap_or(0)))
            .collect();
        let sweep = sources_ready
            && self
                .orphans_swept
                .lock()
                .map(|mut swept| !std::mem::replace(&mut *swept, true))
                .unwrap_or(false);
        if sweep {
            // A pod deleted while the agent was down is an orphan too.
            let wanted: BTreeMap<String, Pod> = desired
                .iter()
                .filter(|(uid, _)| !deleting.contains_key(uid))
                .map(|(uid, pod)| (uid.clone(), pod.clone()))
                .collect();
            self.stop_orphans(&wanted).await;
        }
        let Ok(mut workers) = self.workers.lock() else {
            return;
        };
        for (uid, (known, handle)) in workers.iter_mut() {
            if let Some(grace_seconds) = deleting.get(uid) {
                handle.send(WorkerMessage::Delete {
                    grace_seconds: *grace_seconds,
                });
            } else if let Some(pod) = desired.get(uid) {
                if changed(known, pod) {
                    *known = pod.clone();
                    handle.send(WorkerMessage::Update(Box::new(pod.clone())));
                }
            } else if sources_ready {
                handle.send(WorkerMessage::Terminate);
            }
        }
        if let Ok(mut rejected) = self.rejected.lock() {
            rejected.retain(|uid, _| {
                let keep = desired.contains_key(uid);
                if !keep {
                    self.ctx.store.remove(uid);
                }
                keep
            });
        }
        // Admit in a stable order (by creation in the source, here by name) so that which pod
        // is rejected does not depend on hashing.
        let mut new: Vec<(&String, &Pod)> = desired
            .iter()
            .filter(|(uid, _)| !workers.contains_key(*uid) && !deleting.contains_key(uid))
            .filter(|(uid, _)| !self.rejected.lock().is_ok_and(|r| r.contains_key(*uid)))
            .collect();
        new.sort_by_key(|(_, pod)| pod.metadata.name.clone());
        for (uid, pod) in new {
            let running: Vec<&Pod> = workers
                .iter()
                .filter(|(uid, _)| desired.contains_key(*uid))
                .map(|(_, (pod, _))| pod)
                .collect();
            if let Err(rejection) = admission::admit(pod, &running, self.allocatable) {
                tracing::warn!(pod = ?pod.metadata.name, reason = %rejection.reason, message = %rejection.message, "pod rejected");
                let inputs = crate::pods::status::StatusInputs {
                    rejected: Some((rejection.reason, rejection.message)),
                    host_ips: self.ctx.settings.host_ips.clone(),
                    ..Default::default()
                };
                let status = crate::pods::status::pod_status(pod, &PodView::default(), &inputs);
                self.ctx.store.set(
                    uid,
                    PodRecord {
                        pod: pod.clone(),
                        status,
                        ready_after: None,
                    },
                );
                if let Ok(mut rejected) = self.rejected.lock() {
                    rejected.insert(uid.clone(), pod.clone());
                }
                continue;
            }
            let registry = Arc::clone(&self.workers);
            let done_uid = uid.clone();
            let ctx = Arc::clone(&self.ctx);
            let handle = worker::spawn(Arc::clone(&self.ctx), pod.clone(), move || {
                if let Ok(mut workers) = registry.lock() {
                    workers.remove(&done_uid);
                }
                // The status sync waits for this to finish a deletion.
                ctx.store.notify_changed();
            });
            workers.insert(uid.clone(), (pod.clone(), handle));
        }
        let burstable: i64 = workers
            .values()
            .map(|(pod, _)| pod)
            .filter(|pod| {
                crate::pods::resources::qos_class(pod)
                    == crate::pods::resources::QosClass::Burstable
            })
            .map(|pod| {
                crate::pods::resources::pod_requests(pod)
                    .cpu_millis
                    .unwrap_or(0)
            })
            .sum();
        if let Err(e) = self.ctx.cgroups.size_burstable(burstable) {
            tracing::debug!(error = %e, "burstable cgroup not resized");
        }
    }

    /// Whether the pod `uid` has a worker (running or stopping).
    pub fn has_worker(&self, uid: &str) -> bool {
        self.workers
            .lock()
            .map(|w| w.contains_key(uid))
            .unwrap_or(true)
    }

    /// Whether any worker is still running (pods stopping included).
    pub fn busy(&self) -> bool {
        self.workers.lock().map(|w| !w.is_empty()).unwrap_or(false)
    }

    /// Wakes the worker of the pod `uid`, if it has one.
    pub fn wake_pod(&self, uid: &str) {
        if let Some((_, handle)) = self.workers.lock().ok().as_ref().and_then(|w| w.get(uid)) {
            handle.send(WorkerMessage::Wake);
        }
    }

    /// Wakes the worker owning `container_id`, or every worker when the owner is unknown.
    pub fn wake(&self, container_id: &str) {
        let owner = self
            .ctx
            .container_owners
            .lock()
            .ok()
            .and_then(|owners| owners.get(container_id).cloned());
        let Ok(workers) = self.workers.lock() else {
            return;
        };
        match owner.and_then(|uid| workers.get(&uid)) {
            Some((_, handle)) => handle.send(WorkerMessage::Wake),
            None => workers
                .values()
                .for_each(|(_, h)| h.send(WorkerMessage::Wake)),
        }
    }

    /// Follows the runtime's container events and wakes the workers they concern, until the
    /// stream ends (then it reconnects after a pause: a remote runtime may restart).
    pub async fn follow_events(self: Arc<Self>) {
        loop {
            match self
                .ctx
                .cri
                .runtime
                .get_container_events(Request::new(GetEventsRequest {}))
                .await
            {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    while let Some(event) = stream.next().await {
                        match event {
                            Ok(event) => self.wake(&event.container_id),
                            Err(e) => {
                                tracing::debug!(error = %e.message(), "container event stream error");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e.message(), "cannot follow container events"),
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// Stops sandboxes this agent made for pods that are no longer wanted.
    async fn stop_orphans(&self, desired: &BTreeMap<String, Pod>) {
        let listed = self
            .ctx
            .cri
            .runtime
            .list_pod_sandbox(Request::new(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    label_selector: HashMap::from([(
                        labels::MANAGED_BY.to_string(),
                        labels::MANAGED_BY_AGENT.to_string(),
                    )]),
                    ..Default::default()
                }),
            }))
            .await;
        let Ok(listed) = listed else { return };
        let mut orphans: BTreeMap<String, ()> = BTreeMap::new();
        for sandbox in listed.into_inner().items {
            let uid = sandbox
                .labels
                .get(labels::POD_UID)
                .cloned()
                .unwrap_or_default();
            if !desired.contains_key(&uid) {
                orphans.insert(uid, ());
            }
        }
        for uid in orphans.into_keys() {
            let ctx = Arc::clone(&self.ctx);
            tracing::info!(uid = %uid, "stopping a pod no source wants any more");
            tokio::spawn(async move {
                let view = PodView::load(&ctx.cri, &uid).await.unwrap_or_default();
                let grace = view
                    .sandboxes
                    .first()
                    .and_then(|s| s.annotations.get(labels::GRACE_PERIOD))
                    .and_then(|g| g.parse::<u64>().ok())
                    .unwrap_or(30);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(grace);
                let running: Vec<&view::ContainerInfo> =
                    view.containers.iter().filter(|c| c.running()).collect();
                let timeout = deadline
                    .saturating_duration_since(std::time::Instant::now())
                    .as_millis()
                    .div_ceil(1000) as i64;
                futures::future::join_all(running.iter().map(|c| {
                    ctx.cri.runtime.stop_container(Request::new(
                        capstan_proto::StopContainerRequest {
                            container_id: c.status.id.clone(),
                            timeout,
                        },
                    ))
                }))
                .await;
                worker::remove_sandboxes(&ctx, &view).await;
                let pod_dir = ctx.pod_dir(&uid);
                if let Err(e) = crate::volumes::teardown(&pod_dir) {
                    tracing::warn!(dir = %pod_dir.display(), error = %e, "orphan pod directory not removed");
                }
                remove_orphan_cgroup(&ctx, &uid);
            });
        }
    }
}

/// Whether `new` differs from `known` in what its worker reads (its spec, labels and
/// annotations); a status-only change, the most common, does not wake the worker.
fn changed(known: &Pod, new: &Pod) -> bool {
    known.spec != new.spec
        || known.metadata.labels != new.metadata.labels
        || known.metadata.annotations != new.metadata.annotations
}

/// An orphan's pod object is gone, so its QoS class is unknown: try each class.
fn remove_orphan_cgroup(ctx: &NodeContext, uid: &str) {
    use crate::pods::resources::QosClass;
    for qos in [
        QosClass::Guaranteed,
        QosClass::Burstable,
        QosClass::BestEffort,
    ] {
        let path = format!("{}/pod{uid}", ctx.cgroups.qos_path(qos));
        let _ = ctx.cgroups.hierarchy().remove(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_hear_of_spec_and_metadata_changes_only() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "resourceVersion": "1"},
            "spec": {"containers": [{"name": "c", "image": "app"}]},
        }))
        .expect("a pod");
        let mut status_only = pod.clone();
        status_only.metadata.resource_version = Some("2".into());
        status_only.status = Some(Default::default());
        assert!(!changed(&pod, &status_only));
        let mut debugged = pod.clone();
        if let Some(spec) = debugged.spec.as_mut() {
            spec.ephemeral_containers = Some(vec![Default::default()]);
        }
        assert!(changed(&pod, &debugged));
        let mut labelled = pod.clone();
        labelled.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        assert!(changed(&pod, &labelled));
    }
}

//! The scheduler's loop while leader: watch events keep the cache and the queue current;
//! between them one pod at a time is scheduled, assumed on its node at once (so a burst of
//! pods cannot overcommit a node before the binding comes back through the watch) and bound
//! in the background (after its claims' volumes, when it has any to bind).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::SchedulerOptions;
use crate::bind;
use crate::cycle;
use crate::events::Recorder;
use crate::filters::volume_binding::PodVolumes;
use crate::message::fit_error;
use crate::prebind;
use crate::preempt;
use crate::queue::{ClusterEvent, Queue};
use crate::snapshot::{Cache, PodInfo, PodKey, pod_key};
use crate::volumes::{Volumes, object_key};

/// Why a binding done in the background failed.
enum BindFailure {
    /// VolumeBinding's PreBind failed.
    PreBind(prebind::Error),
    /// `pods/binding` failed.
    Bind(kube::Error),
}

/// The outcome of a binding done in the background.
struct Bound {
    key: PodKey,
    node: String,
    result: Result<(), BindFailure>,
}

/// A binding being written: the pod, its failed attempts before, and the volume bindings and
/// claim annotations assumed for it.
struct InFlight {
    pod: Arc<PodInfo>,
    attempts: u32,
    assumed_volumes: Vec<String>,
    assumed_claims: Vec<String>,
}

/// The state of the loop.
pub struct Scheduler {
    client: kube::Client,
    options: SchedulerOptions,
    cache: Cache,
    volumes: Volumes,
    queue: Queue,
    recorder: Recorder,
    in_flight: HashMap<PodKey, InFlight>,
    /// Pending pods with a `nominatedNodeName`, by key.
    nominated: HashMap<PodKey, Arc<PodInfo>>,
    /// PodDisruptionBudgets by `namespace/name`.
    pdbs: HashMap<String, Arc<PodDisruptionBudget>>,
    bound_tx: mpsc::UnboundedSender<Bound>,
    relist_pods: Option<HashSet<PodKey>>,
    relist_nodes: Option<HashSet<String>>,
    relist_pdbs: Option<HashSet<String>>,
    pods_synced: bool,
    nodes_synced: bool,
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn name_key(namespace: Option<&str>, name: Option<&str>) -> String {
    format!(
        "{}/{}",
        namespace.unwrap_or_default(),
        name.unwrap_or_default()
    )
}

impl Scheduler {
    /// Runs the loop until dropped.
    pub async fn run(client: kube::Client, options: SchedulerOptions) {
        let (bound_tx, mut bound_rx) = mpsc::unbounded_channel();
        let recorder = Recorder::new(client.clone(), &options.scheduler_name, &options.identity);
        let mut scheduler = Scheduler {
            client: client.clone(),
            options,
            cache: Cache::default(),
            volumes: Volumes::default(),
            queue: Queue::default(),
            recorder,
            in_flight: HashMap::new(),
            nominated: HashMap::new(),
            pdbs: HashMap::new(),
            bound_tx,
            relist_pods: None,
            relist_nodes: None,
            relist_pdbs: None,
            pods_synced: false,
            nodes_synced: false,
        };
        let config = watcher::Config::default().any_semantic();
        let mut pods: BoxStream<'static, _> =
            watcher::watcher(Api::<Pod>::all(client.clone()), config.clone()).boxed();
        let mut nodes: BoxStream<'static, _> =
            watcher::watcher(Api::<Node>::all(client.clone()), config.clone()).boxed();
        let mut pdbs: BoxStream<'static, _> = watcher::watcher(
            Api::<PodDisruptionBudget>::all(client.clone()),
            config.clone(),
        )
        .boxed();
        let mut claims: BoxStream<'static, _> = watcher::watcher(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            config.clone(),
        )
        .boxed();
        let mut volumes: BoxStream<'static, _> =
            watcher::watcher(Api::<PersistentVolume>::all(client.clone()), config.clone()).boxed();
        let mut classes: BoxStream<'static, _> =
            watcher::watcher(Api::<StorageClass>::all(client), config).boxed();
        let mut flush = tokio::time::interval(Duration::from_secs(30));
        loop {
            // Take in what the watches have ready (bounded, so that scheduling keeps going
            // during bursts), then schedule one pod.
            let mut budget = 256;
            while budget > 0 {
                budget -= 1;
                if let Some(Some(event)) = nodes.next().now_or_never() {
                    scheduler.on_node_event(event);
                } else if let Some(Some(event)) = pods.next().now_or_never() {
                    scheduler.on_pod_event(event);
                } else if let Some(Some(event)) = pdbs.next().now_or_never() {
                    scheduler.on_pdb_event(event);
                } else if let Some(Some(event)) = claims.next().now_or_never() {
                    scheduler.on_claim_event(event);
                } else if let Some(Some(event)) = volumes.next().now_or_never() {
                    scheduler.on_volume_event(event);
                } else if let Some(Some(event)) = classes.next().now_or_never() {
                    scheduler.on_class_event(event);
                } else if let Ok(bound) = bound_rx.try_recv() {
                    scheduler.on_bound(bound);
                } else {
                    break;
                }
            }
            let now = Instant::now();
            scheduler.queue.flush_backoff(now);
            if scheduler.pods_synced
                && scheduler.nodes_synced
                && scheduler.volumes.synced()
                && scheduler.queue.has_active()
            {
                scheduler.schedule_one(now);
                continue;
            }
            let wake = scheduler
                .queue
                .next_backoff()
                .unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                event = nodes.next() => match event {
                    Some(event) => scheduler.on_node_event(event),
                    None => return,
                },
                event = pods.next() => match event {
                    Some(event) => scheduler.on_pod_event(event),
                    None => return,
                },
                event = pdbs.next() => match event {
                    Some(event) => scheduler.on_pdb_event(event),
                    None => return,
                },
                event = claims.next() => match event {
                    Some(event) => scheduler.on_claim_event(event),
                    None => return,
                },
                event = volumes.next() => match event {
                    Some(event) => scheduler.on_volume_event(event),
                    None => return,
                },
                event = classes.next() => match event {
                    Some(event) => scheduler.on_class_event(event),
                    None => return,
                },
                Some(bound) = bound_rx.recv() => scheduler.on_bound(bound),
                _ = tokio::time::sleep_until(wake) => {}
                _ = flush.tick() => scheduler.queue.flush_unschedulable(Instant::now()),
            }
        }
    }

    fn on_node_event(&mut self, event: Result<Event<Node>, watcher::Error>) {
        match event {
            Err(error) => tracing::debug!(%error, "node watch failed; retrying"),
            Ok(Event::Init) => self.relist_nodes = Some(HashSet::new()),
            Ok(Event::InitApply(node)) => {
                if let Some(seen) = self.relist_nodes.as_mut() {
                    seen.insert(node.metadata.name.clone().unwrap_or_default());
                }
                self.apply_node(node);
            }
            Ok(Event::InitDone) => {
                if let Some(seen) = self.relist_nodes.take() {
                    let gone: Vec<String> = self
                        .cache
                        .ready_nodes()
                        .map(|n| n.name.clone())
                        .filter(|n| !seen.contains(n))
                        .collect();
                    for name in gone {
                        self.cache.delete_node(&name);
                    }
                }
                self.nodes_synced = true;
            }
            Ok(Event::Apply(node)) => self.apply_node(node),
            Ok(Event::Delete(node)) => {
                self.cache
                    .delete_node(node.metadata.name.as_deref().unwrap_or_default());
            }
        }
    }

    fn apply_node(&mut self, node: Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let existed = self
            .cache
            .nodes
            .get(&name)
            .is_some_and(|n| n.node.is_some());
        if self.cache.apply_node(node) {
            self.queue.on_event(if existed {
                ClusterEvent::NodeUpdate
            } else {
                ClusterEvent::NodeAdd
            });
        }
    }

    fn on_pdb_event(&mut self, event: Result<Event<PodDisruptionBudget>, watcher::Error>) {
        let key = |pdb: &PodDisruptionBudget| {
            name_key(
                pdb.metadata.namespace.as_deref(),
                pdb.metadata.name.as_deref(),
            )
        };
        match event {
            Err(error) => tracing::debug!(%error, "PDB watch failed; retrying"),
            Ok(Event::Init) => self.relist_pdbs = Some(HashSet::new()),
            Ok(Event::InitApply(pdb)) => {
                let key = key(&pdb);
                if let Some(seen) = self.relist_pdbs.as_mut() {
                    seen.insert(key.clone());
                }
                self.pdbs.insert(key, Arc::new(pdb));
            }
            Ok(Event::InitDone) => {
                if let Some(seen) = self.relist_pdbs.take() {
                    self.pdbs.retain(|k, _| seen.contains(k));
                }
            }
            Ok(Event::Apply(pdb)) => {
                self.pdbs.insert(key(&pdb), Arc::new(pdb));
            }
            Ok(Event::Delete(pdb)) => {
                self.pdbs.remove(&key(&pdb));
            }
        }
    }

    fn on_claim_event(&mut self, event: Result<Event<PersistentVolumeClaim>, watcher::Error>) {
        if self.volumes.on_claim_event(event) {
            self.queue.on_event(ClusterEvent::ClaimChange);
        }
    }

    fn on_volume_event(&mut self, event: Result<Event<PersistentVolume>, watcher::Error>) {
        if self.volumes.on_volume_event(event) {
            self.queue.on_event(ClusterEvent::VolumeChange);
        }
    }

    fn on_class_event(&mut self, event: Result<Event<StorageClass>, watcher::Error>) {
        if self.volumes.on_class_event(event) {
            self.queue.on_event(ClusterEvent::StorageClassChange);
        }
    }

    fn on_pod_event(&mut self, event: Result<Event<Pod>, watcher::Error>) {
        match event {
            Err(error) => tracing::debug!(%error, "pod watch failed; retrying"),
            Ok(Event::Init) => self.relist_pods = Some(HashSet::new()),
            Ok(Event::InitApply(pod)) => {
                if let Some(seen) = self.relist_pods.as_mut() {
                    seen.insert(pod_key(&pod));
                }
                self.apply_pod(pod);
            }
            Ok(Event::InitDone) => {
                if let Some(seen) = self.relist_pods.take() {
                    let gone: Vec<PodKey> = self
                        .cache
                        .assigned
                        .keys()
                        .filter(|k| !self.cache.assumed.contains(*k))
                        .chain(self.queue.keys())
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        self.delete_pod(&key);
                    }
                }
                self.pods_synced = true;
            }
            Ok(Event::Apply(pod)) => self.apply_pod(pod),
            Ok(Event::Delete(pod)) => self.delete_pod(&pod_key(&pod)),
        }
    }

    fn delete_pod(&mut self, key: &str) {
        self.queue.remove(key);
        self.nominated.remove(key);
        self.recorder.forget(key);
        if self.cache.remove_pod(key).is_some() {
            self.queue.on_event(ClusterEvent::AssignedPodDelete);
        }
    }

    fn apply_pod(&mut self, pod: Pod) {
        let terminal = is_terminal(&pod);
        let info = Arc::new(PodInfo::new(Arc::new(pod)));
        let key = info.key.clone();
        if let Some(node) = info.node_name.clone() {
            self.queue.remove(&key);
            self.nominated.remove(&key);
            if terminal {
                // Finished pods hold nothing.
                if self.cache.remove_pod(&key).is_some() {
                    self.queue.on_event(ClusterEvent::AssignedPodDelete);
                }
                return;
            }
            let known =
                self.cache.assigned.contains_key(&key) && !self.cache.assumed.contains(&key);
            self.cache.add_pod(info, &node);
            if !known {
                self.queue.on_event(ClusterEvent::AssignedPodAdd);
            }
            return;
        }
        let responsible = info
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler")
            == self.options.scheduler_name;
        let gated = info
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty());
        if !responsible || terminal || info.terminating || gated {
            self.queue.remove(&key);
            self.nominated.remove(&key);
            return;
        }
        if self.cache.assumed.contains(&key) || self.in_flight.contains_key(&key) {
            // Being bound: the binding's own watch event settles it.
            return;
        }
        let nominated = info
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if nominated {
            self.nominated.insert(key, Arc::clone(&info));
        } else {
            self.nominated.remove(&key);
        }
        self.queue.add_or_update(info);
    }

    fn schedule_one(&mut self, now: Instant) {
        let Some((pod, attempts)) = self.queue.pop(now) else {
            return;
        };
        let nominated = cycle::nominated_for(&pod, self.nominated.values());
        match cycle::schedule(&self.cache, &self.volumes, Arc::clone(&pod), &nominated) {
            Ok((node, volumes)) => self.assume_and_bind(pod, attempts, node, volumes),
            Err(diagnosis) if diagnosis.node_count == 0 => {
                self.fail(
                    pod,
                    attempts + 1,
                    "SchedulerError",
                    "no nodes available to schedule pods",
                    None,
                    false,
                );
            }
            Err(diagnosis) => {
                let outcome = preempt::preempt(
                    &self.cache,
                    &self.volumes,
                    &pod,
                    &diagnosis,
                    &self.pdbs,
                    &nominated,
                );
                let (post, nominate) = match outcome {
                    Ok(candidate) => {
                        preempt::execute(
                            self.client.clone(),
                            &self.options.scheduler_name,
                            &pod,
                            &candidate,
                            &mut self.recorder,
                        );
                        (None, Some(candidate.node))
                    }
                    Err(message) => (Some(message), None),
                };
                let message = fit_error(
                    diagnosis.node_count,
                    diagnosis.statuses.values(),
                    diagnosis.pre_filter.as_deref(),
                    post.as_deref(),
                );
                self.fail(pod, attempts + 1, "Unschedulable", &message, nominate, true);
            }
        }
    }

    fn fail(
        &mut self,
        pod: Arc<PodInfo>,
        attempts: u32,
        reason: &str,
        message: &str,
        nominate: Option<String>,
        unschedulable: bool,
    ) {
        tracing::debug!(pod = %pod.key, %message, "unschedulable");
        self.recorder.record(
            &pod.pod,
            "Warning",
            "FailedScheduling",
            "Scheduling",
            message,
        );
        if let Some(patch) =
            bind::unschedulable_patch(&pod.pod, reason, message, nominate.as_deref())
        {
            let client = self.client.clone();
            let namespace = pod.namespace.clone();
            let name = pod.pod.metadata.name.clone().unwrap_or_default();
            tokio::spawn(async move {
                if let Err(error) = bind::patch_status(client, &namespace, &name, patch).await {
                    tracing::debug!(%error, pod = %name, "status update failed");
                }
            });
        }
        self.queue.requeue(pod, attempts, unschedulable);
    }

    fn assume_and_bind(
        &mut self,
        pod: Arc<PodInfo>,
        attempts: u32,
        node: String,
        volumes: PodVolumes,
    ) {
        let key = pod.key.clone();
        self.cache.add_pod(Arc::clone(&pod), &node);
        self.cache.assumed.insert(key.clone());
        // Reserve: later pods must not pick the same volumes.
        let mut assumed_volumes = Vec::new();
        for (volume, claim) in &volumes.static_bindings {
            self.volumes.assume_binding(volume, claim);
            assumed_volumes.push(object_key(volume.as_ref()));
        }
        let mut assumed_claims = Vec::new();
        for claim in &volumes.provisions {
            self.volumes.assume_selected_node(claim, &node);
            assumed_claims.push(object_key(claim.as_ref()));
        }
        let client = self.client.clone();
        let tx = self.bound_tx.clone();
        let namespace = pod.namespace.clone();
        let name = pod.pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.uid.clone();
        self.in_flight.insert(
            key.clone(),
            InFlight {
                pod,
                attempts,
                assumed_volumes,
                assumed_claims,
            },
        );
        tokio::spawn(async move {
            let result = match prebind::bind_volumes(client.clone(), &volumes, &node).await {
                Err(error) => Err(BindFailure::PreBind(error)),
                Ok(()) => bind::bind(client, &namespace, &name, &uid, &node)
                    .await
                    .map_err(BindFailure::Bind),
            };
            let _ = tx.send(Bound { key, node, result });
        });
    }

    fn on_bound(&mut self, bound: Bound) {
        let Some(in_flight) = self.in_flight.remove(&bound.key) else {
            return;
        };
        match bound.result {
            Ok(()) => {
                let pod = &in_flight.pod;
                let note = format!(
                    "Successfully assigned {}/{} to {}",
                    pod.namespace,
                    pod.pod.metadata.name.as_deref().unwrap_or_default(),
                    bound.node
                );
                self.recorder
                    .record(&pod.pod, "Normal", "Scheduled", "Binding", &note);
            }
            Err(error) => {
                self.volumes
                    .revert(&in_flight.assumed_volumes, &in_flight.assumed_claims);
                if self.cache.assumed.contains(&bound.key) {
                    self.cache.remove_pod(&bound.key);
                } else if self.cache.assigned.contains_key(&bound.key) {
                    // The watch already shows it bound (by us or another binder): done.
                    return;
                }
                let message = match &error {
                    BindFailure::Bind(kube::Error::Api(status)) if status.code == 404 => return,
                    BindFailure::Bind(error) => {
                        format!("running Bind plugin \"DefaultBinder\": {error}")
                    }
                    BindFailure::PreBind(error) => {
                        format!("running PreBind plugin \"VolumeBinding\": {error}")
                    }
                };
                tracing::debug!(%message, pod = %bound.key, "binding failed");
                self.fail(
                    in_flight.pod,
                    in_flight.attempts + 1,
                    "SchedulerError",
                    &message,
                    None,
                    false,
                );
            }
        }
    }
}

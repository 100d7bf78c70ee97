//! One pod's worker: drives the runtime towards the pod's spec (sandbox, ephemeral containers
//! once each, init containers in order, app containers in parallel, restarts with back-off) and publishes its status. It wakes
//! on runtime events, on its own deadlines (back-off expiry) and on a slow resync.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use capstan_proto::{
    CreateContainerRequest, Image, ImageSpec, ImageStatusRequest, PodSandboxConfig,
    PullImageRequest, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::mpsc;
use tonic::{Request, Status};

use super::backoff::Backoff;
use super::container_config::{ResolvedContainer, container_config};
use super::context::{NodeContext, PodRecord};
use super::mailbox::{WorkerHandle, WorkerMessage};
use super::probing::{ProbeReport, Probing};
use super::sandbox_config::sandbox_config;
use super::view::{ContainerInfo, PodView};
use crate::pods::downward::PodRuntimeInfo;
use crate::pods::ephemeral;
use crate::pods::events::field_path;
use crate::pods::hooks::{HookEvent, run_hook};
use crate::pods::status::{StatusInputs, Waiting, pod_status};
use crate::probes::ProbeTarget;
use crate::volumes::{self, PodVolumes};

/// Starts the worker of `pod` and returns its handle; `on_exit` runs when it has finished
/// terminating the pod.
pub fn spawn(
    ctx: Arc<NodeContext>,
    pod: Pod,
    on_exit: impl FnOnce() + Send + 'static,
) -> WorkerHandle {
    let (sender, receiver) = mpsc::unbounded_channel();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let worker = PodWorker {
        probing: Probing::new(sender.clone()),
        probe_report: ProbeReport::default(),
        volumes: None,
        ctx,
        pod,
        uid,
        backoff: Backoff::default(),
        waiting: HashMap::new(),
        start_time: crate::pods::status::now(),
        accepted: Instant::now(),
        ready_after: None,
        terminating: false,
        grace_override: None,
        sandbox_error: None,
        refresh_error: None,
        deadline_exceeded: false,
    };
    tokio::spawn(async move {
        worker.run(receiver).await;
        on_exit();
    });
    WorkerHandle::new(sender)
}

struct PodWorker {
    probing: Probing,
    probe_report: ProbeReport,
    volumes: Option<PodVolumes>,
    ctx: Arc<NodeContext>,
    pod: Pod,
    uid: String,
    backoff: Backoff,
    waiting: HashMap<String, Waiting>,
    start_time: Timestamp,
    accepted: Instant,
    ready_after: Option<Duration>,
    terminating: bool,
    /// A deletion's grace period, shorter than the spec's.
    grace_override: Option<i64>,
    sandbox_error: Option<(String, String)>,
    /// The last failure to rewrite the volumes of the running pod, reported once.
    refresh_error: Option<String>,
    /// Whether `activeDeadlineSeconds` ran out: the pod was stopped and is Failed.
    deadline_exceeded: bool,
}

/// When the worker wants to run again without being woken.
type Deadline = Option<Instant>;

/// The reason of a pod stopped at its `activeDeadlineSeconds`.
const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
/// The kubelet's message for it.
const DEADLINE_EXCEEDED_MESSAGE: &str =
    "Pod was active on the node longer than the specified deadline";

/// The status of a pod stopped at its deadline: Failed, not ready, with the kubelet's reason.
fn deadline_failed(status: &mut k8s_openapi::api::core::v1::PodStatus) {
    status.phase = Some("Failed".into());
    status.reason = Some(DEADLINE_EXCEEDED.into());
    status.message = Some(DEADLINE_EXCEEDED_MESSAGE.into());
    for condition in status.conditions.iter_mut().flatten() {
        if condition.type_ == "Ready" || condition.type_ == "ContainersReady" {
            condition.status = "False".into();
            condition.reason = Some("PodFailed".into());
            condition.message = None;
        }
    }
}

fn earliest(a: Deadline, b: Deadline) -> Deadline {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn system_to_instant(at: SystemTime) -> Instant {
    let now = SystemTime::now();
    Instant::now() + at.duration_since(now).unwrap_or_default()
}

fn nanos_to_system(nanos: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64)
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

impl PodWorker {
    fn name(&self) -> String {
        let meta = &self.pod.metadata;
        format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default()
        )
    }

    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<WorkerMessage>) {
        loop {
            if self.terminating {
                self.terminate().await;
                return;
            }
            let deadline = match self.sync().await {
                Ok(deadline) => deadline,
                Err(e) => {
                    tracing::warn!(pod = %self.name(), error = %e.message(), "pod sync failed; retrying");
                    Some(Instant::now() + Duration::from_secs(2))
                }
            };
            let deadline = deadline.unwrap_or_else(|| Instant::now() + self.ctx.settings.resync);
            tokio::select! {
                message = receiver.recv() => self.receive(message),
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            // Coalesce bursts of events into one sync.
            while let Ok(message) = receiver.try_recv() {
                self.receive(Some(message));
            }
        }
    }

    /// Takes in a message (None: the registry is gone, which stops the pod too).
    fn receive(&mut self, message: Option<WorkerMessage>) {
        match message {
            Some(WorkerMessage::Wake) => {}
            Some(WorkerMessage::Update(pod)) => {
                tracing::debug!(pod = %self.name(), "pod changed in its source");
                self.pod = *pod;
            }
            Some(WorkerMessage::Terminate) | None => self.terminating = true,
            Some(WorkerMessage::Delete { grace_seconds }) => {
                self.terminating = true;
                let shortest = self
                    .grace_override
                    .map_or(grace_seconds, |g| g.min(grace_seconds));
                self.grace_override = Some(shortest.max(0));
            }
        }
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    /// One reconciliation pass.
    async fn sync(&mut self) -> Result<Deadline, Status> {
        // What the pod's volumes, env and image pulls read must be known before they read it.
        self.ctx.objects.track(&self.pod).await;
        let mut view = PodView::load(&self.ctx.cri, &self.uid).await?;
        self.remember_containers(&view);
        let active_until = self.active_deadline();
        if !self.deadline_exceeded
            && !self.finished(&view)
            && active_until.is_some_and(|at| at <= Instant::now())
        {
            self.exceed_deadline(&view).await;
            view = PodView::load(&self.ctx.cri, &self.uid).await?;
        }
        if self.deadline_exceeded {
            self.publish(&view);
            return Ok(None);
        }
        if self.finished(&view) {
            if view.ready_sandbox().is_some() {
                // A finished pod keeps its containers for their logs but not its sandbox.
                self.stop_sandbox(&view).await?;
                view = PodView::load(&self.ctx.cri, &self.uid).await?;
            }
            self.publish(&view);
            return Ok(None);
        }
        let sandbox_config = match view.ready_sandbox() {
            Some(sandbox) => {
                let attempt = sandbox.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
                self.sandbox_config(attempt)?
            }
            None => {
                let config = match self.create_sandbox(&view).await {
                    Ok(config) => config,
                    Err(e) => {
                        // A volume that cannot be prepared keeps its own reason (FailedMount).
                        if self
                            .sandbox_error
                            .as_ref()
                            .is_none_or(|(r, _)| r != "FailedMount")
                        {
                            self.sandbox_error =
                                Some(("FailedCreatePodSandBox".into(), e.message().to_string()));
                        }
                        self.publish(&view);
                        return Ok(Some(Instant::now() + Duration::from_secs(5)));
                    }
                };
                self.sandbox_error = None;
                view = PodView::load(&self.ctx.cri, &self.uid).await?;
                config
            }
        };
        let Some(sandbox_id) = view.ready_sandbox().map(|s| s.id.clone()) else {
            return Err(Status::unavailable("the new sandbox is not ready"));
        };
        if self.volumes.is_none() {
            // An adopted pod: its volumes are there; prepare() keeps them and knows them again.
            if let Err(e) = self.prepare_volumes(&view) {
                self.publish(&view);
                return Err(e);
            }
        } else {
            self.refresh_volumes(&view);
        }
        let deadline = self
            .sync_containers(&view, &sandbox_id, &sandbox_config)
            .await?;
        let view = PodView::load(&self.ctx.cri, &self.uid).await?;
        self.remember_containers(&view);
        self.probe_report = self.probing.update(
            &self.pod,
            &view,
            &sandbox_id,
            &self.ctx.cri,
            &self.ctx.probe_counters,
        );
        let failures = std::mem::take(&mut self.probe_report.failed);
        if !failures.is_empty() {
            for failure in failures {
                tracing::info!(pod = %self.name(), container = %failure.name, probe = failure.kind.as_str(), message = %failure.message, "container failed its probe, will be restarted");
                self.probing.forget(&failure.name);
                let grace = failure
                    .grace_seconds
                    .unwrap_or_else(|| self.grace_seconds());
                let info = self.runtime_info(&view);
                if let Some(container) = self.spec_container(&failure.name) {
                    let target = self.target(&container, &failure.container_id, &info);
                    let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
                    stop_container(
                        &self.ctx,
                        &container,
                        &target,
                        &failure.container_id,
                        deadline,
                    )
                    .await;
                }
            }
            let view = PodView::load(&self.ctx.cri, &self.uid).await?;
            self.publish(&view);
            return Ok(Some(Instant::now()));
        }
        self.publish(&view);
        Ok(earliest(deadline, active_until))
    }

    /// When the pod's `activeDeadlineSeconds` run out, counted from its start.
    fn active_deadline(&self) -> Deadline {
        let seconds = self.pod.spec.as_ref()?.active_deadline_seconds?;
        let started = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
            .filter(|t| *t < self.start_time)
            .unwrap_or(self.start_time);
        let started = SystemTime::from(started);
        let at = started + Duration::from_secs(u64::try_from(seconds.max(0)).unwrap_or(0));
        Some(system_to_instant(at))
    }

    /// The kubelet's active deadline: the pod's containers are stopped (within the grace
    /// period) and its sandbox too, and it is Failed with reason DeadlineExceeded.
    async fn exceed_deadline(&mut self, view: &PodView) {
        tracing::info!(pod = %self.name(), "pod ran past its activeDeadlineSeconds; stopping it");
        self.ctx
            .events
            .warning(&self.pod, DEADLINE_EXCEEDED, DEADLINE_EXCEEDED_MESSAGE);
        self.deadline_exceeded = true;
        let deadline = Instant::now() + Duration::from_secs(self.grace_seconds().max(0) as u64);
        self.stop_running(view, deadline).await;
        if let Err(e) = self.stop_sandbox(view).await {
            tracing::warn!(pod = %self.name(), error = %e.message(), "sandbox not stopped; the next sync tries again");
        }
    }

    /// Stops the pod's ready sandbox, if it has one.
    async fn stop_sandbox(&self, view: &PodView) -> Result<(), Status> {
        match view.ready_sandbox() {
            Some(sandbox) => self.stop_sandbox_id(&sandbox.id).await,
            None => Ok(()),
        }
    }

    /// Stops the sandbox `id`.
    async fn stop_sandbox_id(&self, id: &str) -> Result<(), Status> {
        self.call(
            "stop_pod_sandbox",
            self.ctx
                .cri
                .runtime
                .stop_pod_sandbox(Request::new(StopPodSandboxRequest {
                    pod_sandbox_id: id.to_string(),
                })),
        )
        .await
        .map(|_| ())
    }

    fn grace_seconds(&self) -> i64 {
        let spec = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        self.grace_override.map_or(spec, |g| g.min(spec))
    }

    fn spec_container(&self, name: &str) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .cloned()
            .or_else(|| ephemeral::find(&self.pod, name).map(ephemeral::as_container))
    }

    fn runtime_info(&self, view: &PodView) -> PodRuntimeInfo {
        runtime_info(&self.ctx, view)
    }

    fn target(
        &self,
        container: &Container,
        container_id: &str,
        info: &PodRuntimeInfo,
    ) -> ProbeTarget {
        pod_target(&self.pod, container, container_id, info)
    }

    fn prepare_volumes(&mut self, view: &PodView) -> Result<(), Status> {
        let info = self.runtime_info(view);
        let pod_dir = self.ctx.pod_dir(&self.uid);
        match volumes::prepare(&self.pod, &pod_dir, self.ctx.objects.as_ref(), &info) {
            Ok(prepared) => {
                self.volumes = Some(prepared);
                self.sandbox_error = None;
                Ok(())
            }
            Err(e) => {
                self.ctx
                    .events
                    .warning(&self.pod, "FailedMount", mount_failure(&self.pod, &e));
                self.sandbox_error = Some(("FailedMount".into(), e.to_string()));
                Err(Status::failed_precondition(e.to_string()))
            }
        }
    }

    /// Rewrites the files of API-data volumes whose sources changed (the kubelet's periodic
    /// remount); a failure keeps the files as they are and is reported once.
    fn refresh_volumes(&mut self, view: &PodView) {
        let Some(volumes) = &self.volumes else {
            return;
        };
        let info = self.runtime_info(view);
        match volumes.refresh(&self.pod, self.ctx.objects.as_ref(), &info) {
            Ok(changed) => {
                if !changed.is_empty() {
                    tracing::info!(pod = %self.name(), volumes = ?changed, "volume files updated");
                }
                self.refresh_error = None;
            }
            Err(e) => {
                let message = mount_failure(&self.pod, &e);
                if self.refresh_error.as_ref() != Some(&message) {
                    tracing::warn!(pod = %self.name(), error = %e, "volume files not updated");
                    self.ctx
                        .events
                        .warning(&self.pod, "FailedMount", message.clone());
                    self.refresh_error = Some(message);
                }
            }
        }
    }

    /// Whether the pod has run to completion under its restart policy.
    fn finished(&self, view: &PodView) -> bool {
        let policy = self.restart_policy();
        if policy == "Always" {
            return false;
        }
        let Some(spec) = self.pod.spec.as_ref() else {
            return false;
        };
        let init_failed = policy == "Never"
            && spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| !is_sidecar(c))
                .any(|c| {
                    view.latest(&c.name)
                        .is_some_and(|l| l.exited() && l.status.exit_code != 0)
                });
        if init_failed {
            return true;
        }
        spec.containers.iter().all(|c| {
            view.latest(&c.name)
                .is_some_and(|l| l.exited() && (policy == "Never" || l.status.exit_code == 0))
        })
    }

    fn sandbox_config(&self, attempt: u32) -> Result<PodSandboxConfig, Status> {
        Ok(sandbox_config(
            &self.pod,
            attempt,
            &self.ctx.cgroups.pod_path(&self.pod),
            &self.ctx.settings.pod_logs_dir,
            self.ctx.settings.resolv_conf.as_deref(),
        ))
    }

    async fn create_sandbox(&mut self, view: &PodView) -> Result<PodSandboxConfig, Status> {
        let attempt = match view.sandboxes.first() {
            Some(old) => {
                // The old sandbox died (or the node rebooted): its containers go with it.
                self.stop_sandbox_id(&old.id).await?;
                old.metadata.as_ref().map(|m| m.attempt + 1).unwrap_or(1)
            }
            None => 0,
        };
        self.ctx
            .cgroups
            .ensure_pod(&self.pod)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.prepare_volumes(view)?;
        let config = self.sandbox_config(attempt)?;
        std::fs::create_dir_all(&config.log_directory)
            .map_err(|e| Status::internal(format!("create {}: {e}", config.log_directory)))?;
        self.call(
            "run_pod_sandbox",
            self.ctx
                .cri
                .runtime
                .run_pod_sandbox(Request::new(RunPodSandboxRequest {
                    config: Some(config.clone()),
                    runtime_handler: String::new(),
                })),
        )
        .await?;
        tracing::info!(pod = %self.name(), attempt, "sandbox started");
        // The sandbox before this one keeps the containers the status's lastState and restart
        // count come from; older ones are garbage.
        for old in view.sandboxes.iter().skip(1) {
            let _ = self
                .call(
                    "remove_pod_sandbox",
                    self.ctx.cri.runtime.remove_pod_sandbox(Request::new(
                        RemovePodSandboxRequest {
                            pod_sandbox_id: old.id.clone(),
                        },
                    )),
                )
                .await;
        }
        Ok(config)
    }

    /// Init containers in order, then app containers in parallel. Returns the earliest
    /// back-off expiry, if any container waits for one.
    async fn sync_containers(
        &mut self,
        view: &PodView,
        sandbox_id: &str,
        sandbox: &PodSandboxConfig,
    ) -> Result<Deadline, Status> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let policy = self.restart_policy();
        // Containers of an earlier sandbox do not count as running in this one, but their
        // attempts keep the restart counts going.
        let current = |name: &str| view.latest(name).filter(|c| c.sandbox_id == sandbox_id);
        // Ephemeral containers first, as the kubelet starts them: a failing init container
        // must not keep a debug container from running.
        let mut deadline = self.start_ephemeral(view, sandbox_id, sandbox).await;
        for init in spec.init_containers.iter().flatten() {
            let latest = current(&init.name);
            match latest {
                Some(c) if c.running() => {
                    self.waiting.remove(&init.name);
                    if is_sidecar(init) {
                        continue;
                    }
                    // A plain init container must finish before the next one starts.
                    return Ok(None);
                }
                Some(c) if c.exited() && c.status.exit_code == 0 && !is_sidecar(init) => continue,
                Some(c) if c.exited() && !is_sidecar(init) && policy == "Never" => {
                    return Ok(None);
                }
                Some(c) if c.created() => return Ok(None),
                _ => {}
            }
            let next = self
                .start_with_backoff(init, view, sandbox_id, sandbox)
                .await?;
            deadline = earliest(deadline, next);
            if !is_sidecar(init) || next.is_some() {
                // A plain init container must finish first; a sidecar must at least run.
                return Ok(deadline);
            }
        }
        let mut starts = Vec::new();
        for container in &spec.containers {
            match current(&container.name) {
                Some(c) if c.running() || c.created() => {
                    self.waiting.remove(&container.name);
                }
                Some(c) if c.exited() => {
                    let restart =
                        policy == "Always" || (policy == "OnFailure" && c.status.exit_code != 0);
                    if restart {
                        starts.push(container.clone());
                    }
                }
                _ => starts.push(container.clone()),
            }
        }
        // App containers start in parallel, as the kubelet does since 1.27's parallel start is
        // what users expect of a pod's containers.
        let results: Vec<StartDecision> =
            starts.iter().map(|c| self.prepare_start(c, view)).collect();
        let mut launches = Vec::new();
        for (container, decision) in starts.iter().zip(results) {
            match decision {
                StartDecision::Wait(until, waiting) => {
                    self.waiting.insert(container.name.clone(), waiting);
                    deadline = earliest(deadline, Some(until));
                }
                StartDecision::Go(attempt) => launches.push((container.clone(), attempt)),
            }
        }
        let ctx = Arc::clone(&self.ctx);
        let pod = self.pod.clone();
        let info = self.runtime_info(view);
        let volumes = self.volumes.as_ref();
        let outcomes = futures::future::join_all(launches.iter().map(|(container, attempt)| {
            let start = Start {
                container,
                attempt: *attempt,
                sandbox_id,
                sandbox,
                view,
                volumes,
                info: &info,
                target: None,
            };
            launch(&ctx, &pod, start)
        }))
        .await;
        for ((container, _), outcome) in launches.iter().zip(outcomes) {
            match outcome {
                Ok(()) => {
                    self.waiting.remove(&container.name);
                }
                Err(waiting) => {
                    tracing::warn!(pod = %self.name(), container = %container.name, reason = %waiting.reason, message = %waiting.message, "container did not start");
                    self.waiting.insert(container.name.clone(), waiting);
                    deadline = earliest(deadline, Some(Instant::now() + Duration::from_secs(10)));
                }
            }
        }
        Ok(deadline)
    }

    /// Starts, in spec order, the ephemeral containers the runtime holds no instance of (each
    /// runs once and is never restarted); returns when to try again those that did not start.
    async fn start_ephemeral(
        &mut self,
        view: &PodView,
        sandbox_id: &str,
        sandbox: &PodSandboxConfig,
    ) -> Deadline {
        let pending: Vec<_> = ephemeral::to_start(&self.pod, view)
            .into_iter()
            .cloned()
            .collect();
        let mut deadline = None;
        let info = self.runtime_info(view);
        for debug in pending {
            let container = ephemeral::as_container(&debug);
            let start = Start {
                container: &container,
                attempt: 0,
                sandbox_id,
                sandbox,
                view,
                volumes: self.volumes.as_ref(),
                info: &info,
                target: debug.target_container_name.as_deref(),
            };
            match launch(&self.ctx, &self.pod, start).await {
                Ok(()) => {
                    self.waiting.remove(&container.name);
                }
                Err(waiting) => {
                    tracing::warn!(pod = %self.name(), container = %container.name, reason = %waiting.reason, message = %waiting.message, "ephemeral container did not start");
                    self.waiting.insert(container.name.clone(), waiting);
                    deadline = earliest(deadline, Some(Instant::now() + Duration::from_secs(10)));
                }
            }
        }
        deadline
    }

    /// Starts one container unless its back-off holds it; returns the back-off deadline.
    async fn start_with_backoff(
        &mut self,
        container: &Container,
        view: &PodView,
        sandbox_id: &str,
        sandbox: &PodSandboxConfig,
    ) -> Result<Deadline, Status> {
        match self.prepare_start(container, view) {
            StartDecision::Wait(until, waiting) => {
                self.waiting.insert(container.name.clone(), waiting);
                Ok(Some(until))
            }
            StartDecision::Go(attempt) => {
                let info = self.runtime_info(view);
                let start = Start {
                    container,
                    attempt,
                    sandbox_id,
                    sandbox,
                    view,
                    volumes: self.volumes.as_ref(),
                    info: &info,
                    target: None,
                };
                match launch(&self.ctx, &self.pod, start).await {
                    Ok(()) => {
                        self.waiting.remove(&container.name);
                        Ok(None)
                    }
                    Err(waiting) => {
                        self.waiting.insert(container.name.clone(), waiting);
                        Ok(Some(Instant::now() + Duration::from_secs(10)))
                    }
                }
            }
        }
    }

    /// Decides whether `container` may start now, recording the restart in the back-off.
    fn prepare_start(&mut self, container: &Container, view: &PodView) -> StartDecision {
        let latest = view.latest(&container.name);
        let attempt = latest.map(|l| l.attempt + 1).unwrap_or(0);
        if let Some(exited) = latest.filter(|l| l.exited()) {
            let finished = nanos_to_system(exited.status.finished_at);
            let backoff = &self.backoff;
            if let Some(until) = backoff.wait_until(&container.name, finished, SystemTime::now()) {
                let wait = backoff.current(&container.name).unwrap_or_default();
                return StartDecision::Wait(
                    system_to_instant(until),
                    Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: format!(
                            "back-off {}s restarting failed container={} pod={}",
                            wait.as_secs(),
                            container.name,
                            self.name()
                        ),
                    },
                );
            }
            self.backoff.record_restart(&container.name, finished);
        }
        StartDecision::Go(attempt)
    }

    fn remember_containers(&self, view: &PodView) {
        if let Ok(mut owners) = self.ctx.container_owners.lock() {
            for c in &view.containers {
                owners.insert(c.status.id.clone(), self.uid.clone());
            }
        }
    }

    fn publish(&mut self, view: &PodView) {
        let inputs = StatusInputs {
            waiting: self.waiting.clone(),
            host_ips: self.ctx.settings.host_ips.clone(),
            start_time: Some(self.start_time),
            runtime_name: self.ctx.runtime_name.clone(),
            sandbox_error: self.sandbox_error.clone(),
            ready: self.probe_report.ready.clone(),
            started: self.probe_report.started.clone(),
            ..Default::default()
        };
        let mut status = pod_status(&self.pod, view, &inputs);
        if self.deadline_exceeded {
            deadline_failed(&mut status);
        }
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready && self.ready_after.is_none() {
            let elapsed = self.accepted.elapsed();
            self.ready_after = Some(elapsed);
            self.ctx.metrics.observe_pod_start(elapsed);
            tracing::info!(pod = %self.name(), after_ms = elapsed.as_millis() as u64, "pod ready");
        }
        self.ctx.store.set(
            &self.uid,
            PodRecord {
                pod: self.pod.clone(),
                status,
                ready_after: self.ready_after,
            },
        );
    }

    /// Stops `containers` in parallel, each with its preStop hook first, all within `deadline`.
    async fn stop_all(
        &self,
        containers: &[&ContainerInfo],
        info: &PodRuntimeInfo,
        deadline: Instant,
    ) {
        futures::future::join_all(containers.iter().filter_map(|c| {
            let spec = self.spec_container(&c.name)?;
            let target = self.target(&spec, &c.status.id, info);
            let ctx = &self.ctx;
            Some(async move { stop_container(ctx, &spec, &target, &c.status.id, deadline).await })
        }))
        .await;
    }

    async fn call<T>(
        &self,
        operation: &str,
        future: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        timed(&self.ctx, operation, future).await
    }

    /// Stops the running containers, app containers first, then sidecars in reverse order,
    /// all within `deadline`.
    async fn stop_running(&self, view: &PodView, deadline: Instant) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let running: Vec<&ContainerInfo> = view.containers.iter().filter(|c| c.running()).collect();
        // Ephemeral containers stop with the app containers, as the kubelet kills them.
        let app: Vec<&ContainerInfo> = running
            .iter()
            .copied()
            .filter(|c| {
                spec.containers.iter().any(|s| s.name == c.name)
                    || ephemeral::find(&self.pod, &c.name).is_some()
            })
            .collect();
        let info = self.runtime_info(view);
        self.stop_all(&app, &info, deadline).await;
        let sidecars: Vec<&ContainerInfo> = spec
            .init_containers
            .iter()
            .flatten()
            .rev()
            .filter_map(|s| running.iter().copied().find(|c| c.name == s.name))
            .collect();
        for sidecar in sidecars {
            self.stop_all(&[sidecar], &info, deadline).await;
        }
    }

    /// Stops every container (app containers first, then sidecars in reverse order) within
    /// the grace period, then the sandbox, and removes what the pod left.
    async fn terminate(&mut self) {
        let grace = self.grace_seconds();
        tracing::info!(pod = %self.name(), grace_seconds = grace, "stopping pod");
        let view = PodView::load(&self.ctx.cri, &self.uid)
            .await
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
        self.stop_running(&view, deadline).await;
        remove_sandboxes(&self.ctx, &view).await;
        if let Err(e) = self.ctx.cgroups.remove_pod(&self.pod) {
            tracing::warn!(pod = %self.name(), error = %e, "pod cgroup not removed");
        }
        let pod_dir = self.ctx.pod_dir(&self.uid);
        if let Err(e) = volumes::teardown(&pod_dir) {
            tracing::warn!(pod = %self.name(), dir = %pod_dir.display(), error = %e, "pod directory not removed");
        }
        self.ctx.store.remove(&self.uid);
        self.ctx.objects.forget(&self.uid);
        if let Ok(mut owners) = self.ctx.container_owners.lock() {
            owners.retain(|_, uid| *uid != self.uid);
        }
        tracing::info!(pod = %self.name(), "pod stopped and removed");
    }
}

/// Whether a container may start now.
enum StartDecision {
    /// Start it as this attempt.
    Go(u32),
    /// Held back until then, for this reason.
    Wait(Instant, Waiting),
}

/// Times one CRI call and counts it in the metrics.
pub(crate) async fn timed<T>(
    ctx: &NodeContext,
    operation: &str,
    future: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = future.await;
    ctx.metrics
        .observe_operation(operation, started.elapsed(), result.is_err());
    result.map(|r| r.into_inner())
}

/// One container start: what to start, where, with what.
struct Start<'a> {
    container: &'a Container,
    attempt: u32,
    sandbox_id: &'a str,
    sandbox: &'a PodSandboxConfig,
    view: &'a PodView,
    volumes: Option<&'a PodVolumes>,
    info: &'a PodRuntimeInfo,
    /// For an ephemeral container, the container whose process namespace it joins.
    target: Option<&'a str>,
}

/// Pulls (per the image pull policy), creates and starts one container, recording the
/// kubelet's events about it; on failure, the waiting reason the status shows.
async fn launch(ctx: &NodeContext, pod: &Pod, start: Start<'_>) -> Result<(), Waiting> {
    let Start {
        container,
        attempt,
        sandbox_id,
        sandbox,
        view,
        volumes,
        info,
        target,
    } = start;
    let image = container.image.clone().unwrap_or_default();
    let path = field_path(pod, &container.name);
    let failed = |reason: &str, message: String| {
        ctx.events
            .container(pod, &path, "Warning", "Failed", format!("Error: {message}"));
        Waiting {
            reason: reason.into(),
            message,
        }
    };
    ensure_image(ctx, pod, container, &image, sandbox).await?;
    let target_id = match target {
        Some(name) => Some(
            ephemeral::target_id(view, sandbox_id, name)
                .map_err(|m| failed("CreateContainerConfigError", m))?,
        ),
        None => None,
    };
    let resolved = resolve_container(ctx, pod, container, attempt, volumes, info)
        .map_err(|m| failed("CreateContainerConfigError", m))?;
    let mut config = container_config(
        pod,
        container,
        attempt,
        resolved,
        ctx.settings.node_memory,
        ctx.settings.memory_qos,
    );
    if let Some(id) = &target_id {
        ephemeral::join_target(&mut config, id);
    }
    let created = timed(
        ctx,
        "create_container",
        ctx.cri
            .runtime
            .create_container(Request::new(CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            })),
    )
    .await
    .map_err(|e| failed("CreateContainerError", e.message().to_string()))?;
    ctx.events.container(
        pod,
        &path,
        "Normal",
        "Created",
        format!("Created container: {}", container.name),
    );
    if let Ok(mut owners) = ctx.container_owners.lock() {
        owners.insert(
            created.container_id.clone(),
            pod.metadata.uid.clone().unwrap_or_default(),
        );
    }
    timed(
        ctx,
        "start_container",
        ctx.cri
            .runtime
            .start_container(Request::new(StartContainerRequest {
                container_id: created.container_id.clone(),
            })),
    )
    .await
    .map_err(|e| failed("RunContainerError", e.message().to_string()))?;
    ctx.events.container(
        pod,
        &path,
        "Normal",
        "Started",
        format!("Started container {}", container.name),
    );
    // Dead instances older than the one just replaced are beyond the kubelet's
    // one-per-container garbage collection limit.
    for old in view
        .containers
        .iter()
        .filter(|c| c.name == container.name && c.exited())
        .skip(1)
    {
        let _ = timed(
            ctx,
            "remove_container",
            ctx.cri
                .runtime
                .remove_container(Request::new(RemoveContainerRequest {
                    container_id: old.status.id.clone(),
                })),
        )
        .await;
    }
    if let Some(handler) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.post_start.as_ref())
    {
        let target = pod_target(pod, container, &created.container_id, info);
        if let Err(e) = run_hook(HookEvent::PostStart, handler, &target, &ctx.cri, None).await {
            // As the kubelet: a failed postStart hook kills the container, which then
            // restarts under its policy.
            let grace = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30);
            let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
            stop_container(ctx, container, &target, &created.container_id, deadline).await;
            return Err(Waiting {
                reason: e.reason().to_string(),
                message: e.message.clone(),
            });
        }
    }
    tracing::info!(pod = ?pod.metadata.name, container = %container.name, attempt, "container started");
    Ok(())
}

/// The event message of a volume that cannot be set up, as the kubelet words it.
fn mount_failure(pod: &Pod, error: &volumes::VolumeError) -> String {
    match error.volume_name(pod) {
        Some(name) => format!(
            "MountVolume.SetUp failed for volume \"{name}\" : {}",
            error.reason
        ),
        None => format!("MountVolume.SetUp failed: {error}"),
    }
}

/// The pod's image pull secrets that exist; the missing ones are reported as the kubelet does
/// (the pull is tried anyway).
fn pull_secrets(ctx: &NodeContext, pod: &Pod) -> Vec<k8s_openapi::api::core::v1::Secret> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let refs = pod
        .spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten());
    for name in refs.map(|r| r.name.as_str()).filter(|n| !n.is_empty()) {
        match ctx.objects.secret(namespace, name) {
            Some(secret) => found.push(secret),
            None => missing.push(name.to_string()),
        }
    }
    if !missing.is_empty() {
        ctx.events.warning(
            pod,
            "FailedToRetrieveImagePullSecret",
            format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                missing.join(", ")
            ),
        );
    }
    found
}

/// A duration as Go prints one truncated to milliseconds (`512ms`, `1.234s`, `0s`), as the
/// kubelet's Pulled events show it.
fn go_millis(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        "0s".into()
    } else if millis < 1000 {
        format!("{millis}ms")
    } else if millis < 60_000 {
        let text = format!("{}.{:03}", millis / 1000, millis % 1000);
        format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let (minutes, rest) = (millis / 60_000, millis % 60_000);
        let seconds = format!("{}.{:03}", rest / 1000, rest % 1000);
        let seconds = seconds.trim_end_matches('0').trim_end_matches('.');
        format!(
            "{}m{}s",
            minutes,
            if seconds.is_empty() { "0" } else { seconds }
        )
    }
}

/// The runtime's record of the image `spec`, `None` when it is absent or the call failed.
async fn stored_image(ctx: &NodeContext, spec: &ImageSpec) -> Option<Image> {
    timed(
        ctx,
        "image_status",
        ctx.cri
            .images
            .image_status(Request::new(ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            })),
    )
    .await
    .ok()
    .and_then(|r| r.image)
}

/// The size of the image `spec` as the runtime reports it (0 when unknown).
async fn image_size(ctx: &NodeContext, spec: &ImageSpec) -> u64 {
    stored_image(ctx, spec).await.map_or(0, |i| i.size)
}

/// Makes `image` present as the container's pull policy asks, recording the kubelet's
/// Pulling/Pulled/Failed events about `container`.
async fn ensure_image(
    ctx: &NodeContext,
    pod: &Pod,
    container: &Container,
    image: &str,
    sandbox: &PodSandboxConfig,
) -> Result<(), Waiting> {
    let spec = ImageSpec {
        image: image.to_string(),
        ..Default::default()
    };
    let path = field_path(pod, &container.name);
    let policy = container
        .image_pull_policy
        .as_deref()
        .unwrap_or("IfNotPresent");
    if policy != "Always" {
        if stored_image(ctx, &spec).await.is_some() {
            ctx.events.container(
                pod,
                &path,
                "Normal",
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            );
            return Ok(());
        }
        if policy == "Never" {
            ctx.events.container(
                pod,
                &path,
                "Warning",
                "ErrImageNeverPull",
                format!("Container image \"{image}\" is not present with pull policy of Never"),
            );
            ctx.events
                .container(pod, &path, "Warning", "Failed", "Error: ErrImageNeverPull");
            return Err(Waiting {
                reason: "ErrImageNeverPull".into(),
                message: format!(
                    "Container image \"{image}\" is not present with pull policy of Never"
                ),
            });
        }
    }
    let keyring = crate::pods::pull_auth::Keyring::from_secrets(&pull_secrets(ctx, pod));
    let credentials = keyring.lookup(image);
    // No credentials: one pull without. Else each matching credential in turn, as the
    // kubelet tries them, until one works.
    let attempts: Vec<Option<capstan_proto::AuthConfig>> = if credentials.is_empty() {
        vec![None]
    } else {
        credentials.into_iter().map(Some).collect()
    };
    ctx.events.container(
        pod,
        &path,
        "Normal",
        "Pulling",
        format!("Pulling image \"{image}\""),
    );
    let started = Instant::now();
    let mut errors = Vec::new();
    for auth in attempts {
        let pulled = timed(
            ctx,
            "pull_image",
            ctx.cri.images.pull_image(Request::new(PullImageRequest {
                image: Some(spec.clone()),
                auth,
                sandbox_config: Some(sandbox.clone()),
            })),
        )
        .await;
        match pulled {
            Ok(_) => {
                let took = go_millis(started.elapsed());
                let size = image_size(ctx, &spec).await;
                ctx.events.container(
                    pod,
                    &path,
                    "Normal",
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {took} ({took} including waiting). Image size: {size} bytes."
                    ),
                );
                return Ok(());
            }
            Err(e) => errors.push(e.message().to_string()),
        }
    }
    let message = match errors.len() {
        1 => errors.remove(0),
        _ => format!("[{}]", errors.join(", ")),
    };
    ctx.events.container(
        pod,
        &path,
        "Warning",
        "Failed",
        format!("Failed to pull image \"{image}\": {message}"),
    );
    ctx.events
        .container(pod, &path, "Warning", "Failed", "Error: ErrImagePull");
    Err(Waiting {
        reason: "ErrImagePull".into(),
        message,
    })
}

/// Env, command, args and mounts of a container.
fn resolve_container(
    ctx: &NodeContext,
    pod: &Pod,
    container: &Container,
    attempt: u32,
    volumes: Option<&PodVolumes>,
    info: &PodRuntimeInfo,
) -> Result<ResolvedContainer, String> {
    let env = crate::pods::env::container_env(pod, container, info, ctx.objects.as_ref())
        .map_err(|e| e.to_string())?;
    let mut mounts = match volumes {
        Some(volumes) => volumes
            .mounts_for(pod, container, &env.env, attempt)
            .map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let pod_dir = ctx.pod_dir(pod.metadata.uid.as_deref().unwrap_or_default());
    let domain = ctx
        .settings
        .cluster_domain
        .as_deref()
        .unwrap_or("cluster.local");
    let host_hosts = std::path::Path::new("/etc/hosts");
    match volumes::etc_hosts_mount(&pod_dir, pod, container, &info.pod_ips, domain, host_hosts) {
        Ok(Some(mount)) => mounts.push(mount),
        Ok(None) => {}
        Err(e) => return Err(format!("write the pod's /etc/hosts: {e}")),
    }
    Ok(ResolvedContainer {
        envs: env.env,
        command: env.command,
        args: env.args,
        mounts,
    })
}

/// Runs the container's preStop hook (if any), then stops it with what is left of the grace
/// period: SIGTERM, then SIGKILL.
async fn stop_container(
    ctx: &NodeContext,
    container: &Container,
    target: &ProbeTarget,
    container_id: &str,
    deadline: Instant,
) {
    if let Some(handler) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
    {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = run_hook(HookEvent::PreStop, handler, target, &ctx.cri, Some(left)).await {
            tracing::warn!(container = %container.name, reason = e.reason(), error = %e.message, "preStop hook failed");
        }
    }
    // Whole seconds rounded up, as the kubelet does (it truncates the time already spent):
    // rounding down would cut the grace period short by up to a second.
    let timeout = deadline
        .saturating_duration_since(Instant::now())
        .as_millis()
        .div_ceil(1000) as i64;
    if let Err(e) = timed(
        ctx,
        "stop_container",
        ctx.cri
            .runtime
            .stop_container(Request::new(StopContainerRequest {
                container_id: container_id.to_string(),
                timeout,
            })),
    )
    .await
    {
        tracing::warn!(container = %container.name, error = %e.message(), "stop container failed");
    }
}

/// Where probes and hooks of `container` reach it.
fn pod_target(
    pod: &Pod,
    container: &Container,
    container_id: &str,
    info: &PodRuntimeInfo,
) -> ProbeTarget {
    ProbeTarget {
        pod_ip: info.pod_ips.first().copied(),
        host_network: pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false),
        container_id: container_id.to_string(),
        container: container.clone(),
    }
}

/// The pod's IPs and the node's, for env, volumes and probes.
fn runtime_info(ctx: &NodeContext, view: &PodView) -> PodRuntimeInfo {
    PodRuntimeInfo {
        pod_ips: view
            .pod_ips
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect(),
        host_ips: ctx
            .settings
            .host_ips
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect(),
        node_allocatable_cpu_millis: ctx.settings.allocatable_cpu_millis,
        node_allocatable_memory_bytes: ctx.settings.allocatable_memory,
        node_allocatable_ephemeral_storage_bytes: 0,
    }
}

/// Stops and removes every sandbox of a pod (and with them its containers).
pub(crate) async fn remove_sandboxes(ctx: &NodeContext, view: &PodView) {
    for sandbox in &view.sandboxes {
        let id = sandbox.id.clone();
        if let Err(e) = timed(
            ctx,
            "stop_pod_sandbox",
            ctx.cri
                .runtime
                .stop_pod_sandbox(Request::new(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })),
        )
        .await
        {
            tracing::warn!(sandbox = %id, error = %e.message(), "stop sandbox failed");
        }
        if let Err(e) = timed(
            ctx,
            "remove_pod_sandbox",
            ctx.cri
                .runtime
                .remove_pod_sandbox(Request::new(RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })),
        )
        .await
        {
            tracing::warn!(sandbox = %id, error = %e.message(), "remove sandbox failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_durations_read_as_go_prints_them() {
        let ms = Duration::from_millis;
        assert_eq!(go_millis(Duration::from_micros(300)), "0s");
        assert_eq!(go_millis(ms(512)), "512ms");
        assert_eq!(go_millis(ms(1000)), "1s");
        assert_eq!(go_millis(ms(1230)), "1.23s");
        assert_eq!(go_millis(ms(61_500)), "1m1.5s");
        assert_eq!(go_millis(ms(120_000)), "2m0s");
    }
}

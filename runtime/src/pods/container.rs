//! Container lifecycle: an overlay rootfs over the image's snapshots, the OCI spec, creation
//! and start by the pod's monitor, stop with a grace period, removal that leaves nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_proto::{
    Container, ContainerConfig, ContainerEventType, ContainerFilter, ContainerState,
    ContainerStatus, ImageSpec, PodSandboxConfig,
};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use super::error::{PodError, Result};
use super::record::{self, CONTAINER_FILE, ContainerRecord, SandboxRecord};
use super::sandbox::{find_sandbox, namespace_options, sandbox_cgroup_parent};
use super::{PodManager, State, call_monitor};
use crate::monitor::containers::{EXIT_RECORD, ExitRecord};
use crate::monitor::protocol::{CreateRequest, Request};
use crate::spec::{NamespacePaths, SpecInputs};
use capstan_cgroups::{Driver, controllers};

/// The v1 controllers libcontainer 0.7 creates a container's cgroup in when mounted.
const LIBCONTAINER_V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
];

/// How long a stopped container may take to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl PodManager {
    /// CreateContainer: everything is undone when a step fails.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        request_sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String> {
        let metadata = config
            .metadata
            .clone()
            .ok_or_else(|| PodError::Invalid("config.metadata is required".into()))?;
        if metadata.name.is_empty() {
            return Err(PodError::Invalid("config.metadata.name is required".into()));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(PodError::Invalid("config.image.image is required".into()));
        }
        check_mount_sources(&config)?;
        let mut state = self.state.lock().await;
        let sandbox = find_sandbox(&state.sandboxes, sandbox_id)?.clone();
        if !sandbox.ready {
            return Err(PodError::FailedPrecondition(format!(
                "sandbox {} is not ready",
                sandbox.id
            )));
        }
        if let Some(existing) = state.containers.values().find(|c| {
            c.sandbox_id == sandbox.id
                && c.config
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.name == metadata.name && m.attempt == metadata.attempt)
        }) {
            return Err(PodError::AlreadyExists(format!(
                "container name {}_{} is reserved for {} in sandbox {}",
                metadata.name, metadata.attempt, existing.id, sandbox.id
            )));
        }
        let reservation = format!(
            "container/{}/{}_{}",
            sandbox.id, metadata.name, metadata.attempt
        );
        if !state.reserved.insert(reservation.clone()) {
            return Err(PodError::AlreadyExists(format!(
                "container name {}_{} is being created in sandbox {}",
                metadata.name, metadata.attempt, sandbox.id
            )));
        }
        // The slow part (rootfs, spec, monitor) runs without the lock.
        drop(state);
        let outcome = self
            .create_reserved(
                sandbox,
                metadata.name.clone(),
                config,
                image_name,
                request_sandbox_config,
            )
            .await;
        self.state.lock().await.reserved.remove(&reservation);
        outcome
    }

    async fn create_reserved(
        &self,
        sandbox: SandboxRecord,
        name: String,
        config: ContainerConfig,
        image_name: String,
        request_sandbox_config: Option<PodSandboxConfig>,
    ) -> Result<String> {
        let image = self
            .images
            .resolve(&image_name)
            .ok_or_else(|| PodError::NotFound(format!("image {image_name:?} (pull it first)")))?;
        let sandbox_config = request_sandbox_config.unwrap_or_else(|| sandbox.config.clone());
        let id = record::new_id();
        let state_dir = sandbox.state_dir.join("containers").join(&id);
        let log_path = log_path_of(&sandbox.config, &config);
        let container = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            config,
            image_id: image.id.clone(),
            image_name,
            created_at: record::now_nanos(),
            started_at: 0,
            log_path,
            state_dir,
            cgroups_path: String::new(),
            layers: image.layers.iter().map(|l| l.diff_id.clone()).collect(),
        };
        let cgroup_parent = sandbox_cgroup_parent(&sandbox.config)
            .unwrap_or_else(|| self.default_pod_cgroup(&sandbox.id));
        let mut container = container;
        container.cgroups_path =
            format!("{}/{}", cgroup_parent.trim_end_matches('/'), container.id);
        match self
            .prepare(&sandbox, &sandbox_config, &container, &image)
            .await
        {
            Ok(()) => {
                tracing::info!(%id, sandbox = %sandbox.id, %name, "container created");
                self.state
                    .lock()
                    .await
                    .containers
                    .insert(id.clone(), container);
                self.emit(&id, &sandbox.id, ContainerEventType::ContainerCreatedEvent);
                Ok(id)
            }
            Err(error) => {
                let _ = call_monitor(&sandbox.run_dir, Request::Delete { id: id.clone() }).await;
                release_rootfs(&container.state_dir);
                let _ = std::fs::remove_dir_all(&container.state_dir);
                Err(error)
            }
        }
    }

    async fn prepare(
        &self,
        sandbox: &SandboxRecord,
        sandbox_config: &PodSandboxConfig,
        container: &ContainerRecord,
        image: &crate::images::ImageRecord,
    ) -> Result<()> {
        let mut timer = super::StepTimer::new("CreateContainer", &container.id);
        // Before anything is made: a source that cannot propagate as asked is the host's state.
        let propagation = super::propagation::check(&container.config)?;
        let dir = &container.state_dir;
        let rootfs = dir.join("rootfs");
        for sub in ["rootfs", "upper", "work", "bundle"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| {
                PodError::Internal(format!("create {}: {e}", dir.join(sub).display()))
            })?;
        }
        let layers = self.images.layer_dirs(image)?;
        mount_rootfs(&layers, dir)?;
        timer.step("rootfs mounted");
        let image_config = self.images.config(image)?;
        let pod_files = write_pod_files(sandbox)?;
        let options = namespace_options(&sandbox.config);
        let ns_dir = sandbox.run_dir.join(crate::monitor::NS_DIR);
        let host = host_facts();
        let cgroup_controllers = match host.driver {
            Driver::V1 => host.v1_controllers.clone(),
            // What reaches a cgroup depends on its ancestors' subtree_control: per path.
            Driver::V2 => {
                let parent = Path::new(&container.cgroups_path)
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                controllers::available(Driver::V2, &parent)
            }
        };
        let inputs = SpecInputs {
            rootfs: rootfs.clone(),
            cgroups_path: PathBuf::from(&container.cgroups_path),
            namespace_paths: NamespacePaths {
                network: sandbox.own_network.then(|| ns_dir.join("net")),
                ipc: (options.ipc != capstan_proto::NamespaceMode::Node as i32)
                    .then(|| ns_dir.join("ipc")),
                uts: sandbox.own_network.then(|| ns_dir.join("uts")),
                pid: pid_namespace(sandbox, &container.config)?,
            },
            etc_passwd: std::fs::read_to_string(rootfs.join("etc/passwd")).ok(),
            etc_group: std::fs::read_to_string(rootfs.join("etc/group")).ok(),
            hostname: String::new(),
            hostname_path: Some(pod_files.hostname),
            hosts_path: Some(pod_files.hosts),
            resolv_conf_path: pod_files.resolv_conf,
            shm_path: None,
            seccomp_default: false,
            pids_limit: None,
            hugepage_sizes: None,
            cgroup_v2: host.driver == Driver::V2,
            cgroup_controllers: Some(cgroup_controllers),
            cgroup_v1_hierarchies: host.v1_hierarchies.clone(),
            runtime_capabilities: host.capabilities.clone(),
            min_oom_score_adj: host.min_oom_score_adj,
        };
        log_skipped_controllers(&container.config, &inputs);
        let spec = crate::spec::generate(&container.config, sandbox_config, &image_config, &inputs)
            .map_err(|e| PodError::Invalid(e.to_string()))?;
        let bundle = dir.join("bundle");
        spec.save(bundle.join("config.json"))
            .map_err(|e| PodError::Internal(format!("write OCI spec: {e}")))?;
        if let Some(log_dir) = container.log_path.parent()
            && !container.log_path.as_os_str().is_empty()
        {
            std::fs::create_dir_all(log_dir)
                .map_err(|e| PodError::Internal(format!("create {}: {e}", log_dir.display())))?;
        }
        timer.step("spec written");
        call_monitor(
            &sandbox.run_dir,
            Request::Create(CreateRequest {
                id: container.id.clone(),
                bundle,
                log_path: container.log_path.clone(),
                record_dir: dir.clone(),
                stdin: container.config.stdin,
                stdin_once: container.config.stdin_once,
                tty: container.config.tty,
                propagation,
            }),
        )
        .await?;
        timer.step("monitor created it");
        let saved = record::save(&dir.join(CONTAINER_FILE), container);
        timer.step("record saved");
        saved
    }

    /// StartContainer.
    pub async fn start_container(&self, id: &str) -> Result<()> {
        let mut state = self.state.lock().await;
        let container = find_container(&state, id)?.clone();
        if container.started_at != 0 {
            return Err(PodError::FailedPrecondition(format!(
                "container {} was already started",
                container.id
            )));
        }
        let sandbox = find_sandbox(&state.sandboxes, &container.sandbox_id)?.clone();
        let mut timer = super::StepTimer::new("StartContainer", &container.id);
        // Taken before the start: a short-lived container may finish before the call returns.
        let started_at = record::now_nanos();
        call_monitor(
            &sandbox.run_dir,
            Request::Start {
                id: container.id.clone(),
            },
        )
        .await?;
        timer.step("monitor started it");
        let mut started = container;
        started.started_at = started_at;
        record::save(&started.state_dir.join(CONTAINER_FILE), &started)?;
        timer.step("record saved");
        tracing::info!(id = %started.id, "container started");
        self.emit(
            &started.id,
            &started.sandbox_id,
            ContainerEventType::ContainerStartedEvent,
        );
        state.containers.insert(started.id.clone(), started);
        Ok(())
    }

    /// StopContainer: SIGTERM, then SIGKILL after `timeout` seconds. Idempotent as CRI asks:
    /// an exited container, and one this runtime does not know, are stopped at once.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let (container, run_dir) = {
            let state = self.state.lock().await;
            let container = match find_container(&state, id) {
                Ok(container) => container.clone(),
                // As containerd: the kubelet may stop what was already removed.
                Err(PodError::NotFound(_)) => return Ok(()),
                Err(e) => return Err(e),
            };
            if exit_record(&container).is_some() {
                return Ok(());
            }
            let sandbox = find_sandbox(&state.sandboxes, &container.sandbox_id)?;
            (container, sandbox.run_dir.clone())
        };
        // The grace period is waited without the state lock: one container taking its time
        // must not hold up every other call (other stops included) for as long.
        stop_process(&container, &run_dir, timeout).await
    }

    pub(super) async fn stop_container_locked(
        &self,
        state: &mut State,
        id: &str,
        timeout: i64,
    ) -> Result<()> {
        let Some(container) = state.containers.get(id).cloned() else {
            return Ok(());
        };
        if exit_record(&container).is_some() {
            return Ok(());
        }
        let sandbox = find_sandbox(&state.sandboxes, &container.sandbox_id)?;
        stop_process(&container, &sandbox.run_dir, timeout).await
    }

    /// RemoveContainer: stops it if needed, then removes its rootfs and state; idempotent.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let mut state = self.state.lock().await;
        let id = match find_container(&state, id) {
            Ok(container) => container.id.clone(),
            // Already removed (or never known): as containerd, nothing to do.
            Err(PodError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.remove_container_locked(&mut state, &id).await
    }

    pub(super) async fn remove_container_locked(&self, state: &mut State, id: &str) -> Result<()> {
        let Some(container) = state.containers.get(id).cloned() else {
            return Ok(());
        };
        self.stop_container_locked(state, id, 0).await?;
        if let Ok(sandbox) = find_sandbox(&state.sandboxes, &container.sandbox_id)
            && let Err(e) =
                call_monitor(&sandbox.run_dir, Request::Delete { id: id.to_string() }).await
        {
            tracing::warn!(%id, error = %e, "the monitor could not delete the container");
        }
        release_rootfs(&container.state_dir);
        if let Err(e) = std::fs::remove_dir_all(&container.state_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(PodError::Internal(format!(
                "remove {}: {e}",
                container.state_dir.display()
            )));
        }
        state.containers.remove(id);
        if let Ok(mut samples) = self.cpu_samples.lock() {
            samples.remove(id);
        }
        if self.images.resolve(&container.image_id).is_none() {
            // Its image was removed while it existed: the layers only it kept can go now.
            let in_use = self.in_use_layers(state);
            let images = Arc::clone(&self.images);
            tokio::spawn(async move {
                if let Err(e) = images.collect_garbage(&in_use).await {
                    tracing::warn!(error = %e, "image garbage collection failed");
                }
            });
        }
        self.emit(
            id,
            &container.sandbox_id,
            ContainerEventType::ContainerDeletedEvent,
        );
        tracing::info!(%id, "container removed");
        Ok(())
    }

    /// ReopenContainerLog: the monitor starts a new log file at the same path.
    pub async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let state = self.state.lock().await;
        let container = find_container(&state, id)?;
        if container.started_at == 0 || exit_record(container).is_some() {
            return Err(PodError::FailedPrecondition(format!(
                "container {} is not running",
                container.id
            )));
        }
        let sandbox = find_sandbox(&state.sandboxes, &container.sandbox_id)?;
        call_monitor(
            &sandbox.run_dir,
            Request::ReopenLog {
                id: container.id.clone(),
            },
        )
        .await?;
        Ok(())
    }

    /// ContainerStatus.
    pub async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let state = self.state.lock().await;
        find_container(&state, id).map(status_of)
    }
}

/// The CRI status of `container`, from its record and exit record.
pub(super) fn status_of(container: &ContainerRecord) -> ContainerStatus {
    let exit = exit_record(container);
    let (state_value, finished_at, exit_code, reason) = match &exit {
        Some(exit) => (
            ContainerState::ContainerExited,
            exit.finished_at,
            exit.exit_code,
            if exit.oom_killed {
                "OOMKilled"
            } else if exit.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            },
        ),
        None if container.started_at != 0 => (ContainerState::ContainerRunning, 0, 0, ""),
        None => (ContainerState::ContainerCreated, 0, 0, ""),
    };
    ContainerStatus {
        id: container.id.clone(),
        metadata: container.config.metadata.clone(),
        state: state_value as i32,
        created_at: container.created_at,
        started_at: container.started_at,
        finished_at,
        exit_code,
        image: Some(ImageSpec {
            image: container.image_name.clone(),
            ..Default::default()
        }),
        image_ref: container.image_id.clone(),
        image_id: container.image_id.clone(),
        reason: reason.to_string(),
        labels: container.config.labels.clone(),
        annotations: container.config.annotations.clone(),
        mounts: container.config.mounts.clone(),
        log_path: container.log_path.display().to_string(),
        resources: container
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|linux| capstan_proto::ContainerResources {
                linux: Some(linux),
                ..Default::default()
            }),
        ..Default::default()
    }
}

impl PodManager {
    /// ContainerStatus' verbose `info`: what crictl inspect shows beside the status (the
    /// container's host pid, its OCI spec, the request's config), as JSON.
    pub async fn container_info(&self, id: &str) -> Result<serde_json::Value> {
        let (container, run_dir) = {
            let state = self.state.lock().await;
            let container = find_container(&state, id)?.clone();
            let run_dir = find_sandbox(&state.sandboxes, &container.sandbox_id)
                .map(|s| s.run_dir.clone())
                .ok();
            (container, run_dir)
        };
        let running = container.started_at != 0 && !has_exited(&container);
        let pid = run_dir
            .filter(|_| running)
            .and_then(|dir| {
                libcontainer::container::Container::load(
                    dir.join("libcontainer").join(&container.id),
                )
                .ok()
            })
            .and_then(|c| c.pid())
            .map_or(0, |pid| pid.as_raw());
        let spec_path = container.state_dir.join("bundle/config.json");
        let runtime_spec = std::fs::read(&spec_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .unwrap_or(serde_json::Value::Null);
        Ok(serde_json::json!({
            "sandboxID": container.sandbox_id,
            "pid": pid,
            "removing": false,
            "snapshotter": "overlayfs",
            "rootfs": container.state_dir.join("rootfs"),
            "cgroupsPath": container.cgroups_path,
            "runtimeType": "capstan",
            "config": container.config,
            "runtimeSpec": runtime_spec,
        }))
    }

    /// ListContainers.
    pub async fn list_containers(&self, filter: Option<ContainerFilter>) -> Vec<Container> {
        let state = self.state.lock().await;
        let filter = filter.unwrap_or_default();
        state
            .containers
            .values()
            .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
            .filter(|c| {
                filter.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&filter.pod_sandbox_id)
            })
            .filter(|c| {
                filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| c.config.labels.get(k) == Some(v))
            })
            .map(|c| {
                let state_value = container_state(c);
                Container {
                    id: c.id.clone(),
                    pod_sandbox_id: c.sandbox_id.clone(),
                    metadata: c.config.metadata.clone(),
                    image: Some(ImageSpec {
                        image: c.image_name.clone(),
                        ..Default::default()
                    }),
                    image_ref: c.image_id.clone(),
                    image_id: c.image_id.clone(),
                    state: state_value as i32,
                    created_at: c.created_at,
                    labels: c.config.labels.clone(),
                    annotations: c.config.annotations.clone(),
                }
            })
            .filter(|c| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|want| want.state == c.state)
            })
            .collect()
    }
}

fn container_state(container: &ContainerRecord) -> ContainerState {
    if exit_record(container).is_some() {
        ContainerState::ContainerExited
    } else if container.started_at != 0 {
        ContainerState::ContainerRunning
    } else {
        ContainerState::ContainerCreated
    }
}

pub(super) fn find_container_in<'a>(state: &'a State, id: &str) -> Result<&'a ContainerRecord> {
    find_container(state, id)
}

/// Whether the monitor recorded the container's exit.
pub(super) fn has_exited(container: &ContainerRecord) -> bool {
    exit_record(container).is_some()
}

fn find_container<'a>(state: &'a State, id: &str) -> Result<&'a ContainerRecord> {
    if id.is_empty() {
        return Err(PodError::Invalid("container_id is required".into()));
    }
    if let Some(found) = state.containers.get(id) {
        return Ok(found);
    }
    let mut matches = state.containers.values().filter(|c| c.id.starts_with(id));
    match (matches.next(), matches.next()) {
        (Some(found), None) => Ok(found),
        (Some(_), Some(_)) => Err(PodError::Invalid(format!(
            "container ID prefix {id:?} is ambiguous"
        ))),
        _ => Err(PodError::NotFound(format!("container {id:?}"))),
    }
}

fn exit_record(container: &ContainerRecord) -> Option<ExitRecord> {
    let data = std::fs::read(container.state_dir.join(EXIT_RECORD)).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Stops `container` through its pod's monitor (in `run_dir`): SIGTERM and `timeout` seconds
/// to exit, then SIGKILL; a container never started is killed quietly. A container removed
/// meanwhile (its record directory gone) counts as stopped.
async fn stop_process(container: &ContainerRecord, run_dir: &Path, timeout: i64) -> Result<()> {
    let id = &container.id;
    let kill = |signal: i32| {
        call_monitor(
            run_dir,
            Request::Kill {
                id: id.clone(),
                signal,
            },
        )
    };
    if container.started_at == 0 {
        // Never started: nothing runs but libcontainer's waiting init; kill it quietly.
        let _ = kill(9).await;
        return Ok(());
    }
    if timeout > 0 {
        if let Err(e) = kill(15).await {
            return gone_or(container, e);
        }
        if wait_for_exit(container, Duration::from_secs(timeout as u64)).await {
            return Ok(());
        }
    }
    if let Err(e) = kill(9).await {
        return gone_or(container, e);
    }
    if wait_for_exit(container, KILL_WAIT).await {
        Ok(())
    } else {
        Err(PodError::Internal(format!(
            "container {id} did not die after SIGKILL"
        )))
    }
}

/// `error`, unless the container was removed meanwhile (which stopped it).
fn gone_or(container: &ContainerRecord, error: PodError) -> Result<()> {
    if container.state_dir.exists() {
        Err(error)
    } else {
        Ok(())
    }
}

/// Waits up to `timeout` for the container's exit record; true once it exited, or once it was
/// removed meanwhile (a concurrent RemoveContainer stopped it).
async fn wait_for_exit(container: &ContainerRecord, timeout: Duration) -> bool {
    let done = || exit_record(container).is_some() || !container.state_dir.exists();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

/// The CRI log path: the sandbox's log directory joined with the container's relative path.
fn log_path_of(sandbox: &PodSandboxConfig, config: &ContainerConfig) -> PathBuf {
    if sandbox.log_directory.is_empty() || config.log_path.is_empty() {
        return PathBuf::new();
    }
    Path::new(&sandbox.log_directory).join(&config.log_path)
}

/// Mounts the container's overlay: the image's snapshots (uppermost first) under its own upper
/// directory.
fn mount_rootfs(layers: &[PathBuf], dir: &Path) -> Result<()> {
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    mount(
        Some("overlay"),
        &dir.join("rootfs"),
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| PodError::Internal(format!("mount the container's overlay rootfs: {e}")))
}

/// Unmounts the overlay (lazily: a process may still hold it open); missing is fine.
fn release_rootfs(dir: &Path) {
    match umount2(&dir.join("rootfs"), MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot unmount a container rootfs")
        }
    }
}

/// The pod-level files containers bind-mount.
struct PodFiles {
    hostname: PathBuf,
    hosts: PathBuf,
    resolv_conf: Option<PathBuf>,
}

fn write_pod_files(sandbox: &SandboxRecord) -> Result<PodFiles> {
    // RunPodSandbox filled it in when the request had none.
    let hostname = &sandbox.config.hostname;
    let write = |name: &str, text: String| -> Result<PathBuf> {
        let path = sandbox.state_dir.join(name);
        if !path.exists() {
            std::fs::write(&path, text)
                .map_err(|e| PodError::Internal(format!("write {}: {e}", path.display())))?;
        }
        Ok(path)
    };
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(ip) = sandbox.ips.first() {
        hosts.push_str(&format!("{ip}\t{hostname}\n"));
    }
    let resolv_conf = match &sandbox.config.dns_config {
        Some(dns) => {
            let mut text = String::new();
            for server in &dns.servers {
                text.push_str(&format!("nameserver {server}\n"));
            }
            if !dns.searches.is_empty() {
                text.push_str(&format!("search {}\n", dns.searches.join(" ")));
            }
            if !dns.options.is_empty() {
                text.push_str(&format!("options {}\n", dns.options.join(" ")));
            }
            Some(write("resolv.conf", text)?)
        }
        None => Path::new("/etc/resolv.conf")
            .exists()
            .then(|| PathBuf::from("/etc/resolv.conf")),
    };
    Ok(PodFiles {
        hostname: write("hostname", format!("{hostname}\n"))?,
        hosts: write("hosts", hosts)?,
        resolv_conf,
    })
}

/// What CreateContainer needs of the host and of the runtime's own process. None of it changes
/// while the runtime runs, so it is read once instead of on every create.
struct HostFacts {
    driver: Driver,
    /// v1: the controllers with a mounted hierarchy.
    v1_controllers: std::collections::BTreeSet<String>,
    /// v1: the hierarchies libcontainer makes a container's cgroup in (named ones such as
    /// name=systemd, and controllers it does not know such as misc and rdma, hold none).
    v1_hierarchies: Vec<PathBuf>,
    /// The runtime's effective capabilities, which bound what any container can get.
    capabilities: Option<oci_spec::runtime::Capabilities>,
    /// See [`oom_score_adj_floor`].
    min_oom_score_adj: Option<i32>,
}

fn host_facts() -> &'static HostFacts {
    static FACTS: std::sync::OnceLock<HostFacts> = std::sync::OnceLock::new();
    FACTS.get_or_init(|| {
        let driver = Driver::detect();
        let v1_mounts = match driver {
            Driver::V1 => controllers::v1_mounts(),
            Driver::V2 => Vec::new(),
        };
        let effective = effective_capabilities();
        HostFacts {
            driver,
            v1_controllers: v1_mounts
                .iter()
                .flat_map(|m| m.controllers.iter().cloned())
                .collect(),
            v1_hierarchies: v1_mounts
                .iter()
                .filter(|m| {
                    m.controllers
                        .iter()
                        .any(|c| LIBCONTAINER_V1_CONTROLLERS.contains(&c.as_str()))
                })
                .map(|m| m.mount_point.clone())
                .collect(),
            capabilities: effective.map(crate::spec::capabilities_from_mask),
            min_oom_score_adj: effective.and_then(oom_score_adj_floor),
        }
    })
}

/// The `CapEff` mask of this process.
fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Logs, once per controller for the runtime's life, a controller whose limits a request asked
/// for but the host cannot apply, so they are skipped (as runc skips them).
fn log_skipped_controllers(config: &ContainerConfig, inputs: &SpecInputs) {
    static LOGGED: std::sync::Mutex<std::collections::BTreeSet<String>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let Some(available) = &inputs.cgroup_controllers else {
        return;
    };
    let resources = config.linux.as_ref().and_then(|l| l.resources.as_ref());
    let used = crate::spec::controllers_used(resources, inputs);
    let Ok(mut logged) = LOGGED.lock() else {
        return;
    };
    for controller in used {
        if !available.contains(controller) && logged.insert(controller.to_string()) {
            let why = if inputs.cgroup_v2 {
                "not enabled in the cgroup subtree"
            } else {
                "no cgroup v1 hierarchy mounted for it"
            };
            tracing::warn!(
                controller,
                reason = why,
                "cgroup controller unavailable: its limits in linux.resources are skipped, as runc \
                 skips them (logged once)"
            );
        }
    }
}

/// Without CAP_SYS_RESOURCE a process cannot lower oom_score_adj below its own: containers then
/// get at least the runtime's value instead of a start that fails with EPERM.
fn oom_score_adj_floor(effective: u64) -> Option<i32> {
    const CAP_SYS_RESOURCE: u32 = 24;
    if effective & (1 << CAP_SYS_RESOURCE) != 0 {
        return None;
    }
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The PID namespace a container joins: its TARGET container's (ephemeral debug containers),
/// else the pod's when the pod shares one; `None` gives it its own.
fn pid_namespace(sandbox: &SandboxRecord, config: &ContainerConfig) -> Result<Option<PathBuf>> {
    const FIELD: &str = "config.linux.security_context.namespace_options";
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    if let Some(options) = options.filter(|o| o.pid == capstan_proto::NamespaceMode::Target as i32)
    {
        if options.target_id.is_empty() {
            return Err(PodError::Invalid(format!(
                "{FIELD}.target_id is required when pid is TARGET"
            )));
        }
        let state = sandbox
            .run_dir
            .join("libcontainer")
            .join(&options.target_id);
        let pid = libcontainer::container::Container::load(state)
            .ok()
            .and_then(|c| c.pid())
            .ok_or_else(|| {
                PodError::NotFound(format!(
                    "{FIELD}.target_id: {} is not a running container of pod sandbox {}",
                    options.target_id, sandbox.id
                ))
            })?;
        return Ok(Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))));
    }
    Ok(super::sandbox::shares_pid(&sandbox.config)
        .then(|| sandbox.run_dir.join(crate::monitor::NS_DIR).join("pid")))
}

/// Refuses a mount whose host path does not exist before anything is made for the container:
/// libcontainer would only fail at start, with no field to name.
fn check_mount_sources(config: &ContainerConfig) -> Result<()> {
    for (index, mount) in config.mounts.iter().enumerate() {
        if mount.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
            // An image volume: the spec names what is wrong with it.
            continue;
        }
        if mount.host_path.is_empty() {
            return Err(PodError::Invalid(format!(
                "config.mounts[{index}].host_path is required"
            )));
        }
        if !mount.host_path.starts_with('/') {
            // Relative: the spec names that.
            continue;
        }
        // Follows symlinks, as the bind mount will: a dangling link is missing too.
        match std::fs::metadata(&mount.host_path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(PodError::Invalid(format!(
                    "config.mounts[{index}].host_path: {:?} does not exist",
                    mount.host_path
                )));
            }
            Err(e) => {
                return Err(PodError::Internal(format!(
                    "config.mounts[{index}].host_path: {:?}: {e}",
                    mount.host_path
                )));
            }
        }
    }
    Ok(())
}

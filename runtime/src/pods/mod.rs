//! Pod sandboxes and their containers: the pod monitor per pod, CNI networking, records that
//! survive restarts.

mod adopt;
mod cgroup_stats;
mod container;
pub mod error;
mod exec;
pub(crate) mod metrics;
mod mountinfo;
mod net_dev;
mod propagation;
pub mod record;
mod sandbox;
mod spawn;
mod stats;
mod streaming;
mod sweep;
mod update;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use capstan_proto::{ContainerEventResponse, ContainerEventType};
use tokio::sync::Mutex;

pub use error::{PodError, Result};
pub(crate) use exec::kill_exec;
pub use exec::{ExecOutput, MAX_EXEC_OUTPUT};
use record::{CONTAINER_FILE, ContainerRecord, SANDBOX_FILE, SandboxRecord};

use crate::images::ImageManager;
use crate::monitor::logs::Rotation;
use crate::monitor::protocol::{self, Reply, Request};
use crate::network::PodNetwork;
use std::sync::Arc;

/// How long a monitor call may take (container creation included).
const MONITOR_TIMEOUT: Duration = Duration::from_secs(60);

/// Times the steps of one CRI call and logs each at debug level (`capstan_runtime=debug`), so
/// where a pod's start goes can be read from the daemon's log without a profiler.
pub(crate) struct StepTimer {
    call: &'static str,
    id: String,
    last: std::time::Instant,
}

impl StepTimer {
    /// Starts timing `call` for object `id`.
    pub(crate) fn new(call: &'static str, id: &str) -> Self {
        StepTimer {
            call,
            id: id.to_string(),
            last: std::time::Instant::now(),
        }
    }

    /// Logs how long `step` took since the previous step (or the start).
    pub(crate) fn step(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        tracing::debug!(
            call = self.call,
            id = %self.id,
            step,
            ms = (now - self.last).as_secs_f64() * 1000.0,
            "step done"
        );
        self.last = now;
    }
}

/// Where pods live and how they are run.
#[derive(Debug, Clone)]
pub struct PodSettings {
    /// Run directory root (`/run/capstan/pods`).
    pub run_root: PathBuf,
    /// State directory root (`<state>/pods`).
    pub state_root: PathBuf,
    /// The binary re-executed as the pod monitor.
    pub monitor_binary: PathBuf,
    /// Container log limits.
    pub rotation: Rotation,
    /// Absolute cgroup parent for pods whose request names none.
    pub default_cgroup_parent: String,
}

/// Every sandbox and container on the node.
#[derive(Debug)]
pub struct PodManager {
    settings: PodSettings,
    network: PodNetwork,
    images: Arc<ImageManager>,
    state: Mutex<State>,
    events: tokio::sync::broadcast::Sender<ContainerEventResponse>,
    /// The last CPU sample per container or pod, for the usage rate between two stats calls.
    cpu_samples: std::sync::Mutex<std::collections::HashMap<String, (i64, u64)>>,
    /// hostPort relays of the ready sandboxes.
    host_ports: crate::network::host_ports::HostPorts,
}

#[derive(Debug, Default)]
struct State {
    sandboxes: BTreeMap<String, SandboxRecord>,
    containers: BTreeMap<String, ContainerRecord>,
    /// Names being created right now, so two requests for one name cannot both proceed.
    reserved: std::collections::HashSet<String>,
}

impl State {
    /// IDs of the containers of sandbox `sandbox_id`.
    fn container_ids_of(&self, sandbox_id: &str) -> Vec<String> {
        self.containers
            .values()
            .filter(|c| c.sandbox_id == sandbox_id)
            .map(|c| c.id.clone())
            .collect()
    }
}

impl PodManager {
    /// Opens the pod state, adopting every sandbox and container a previous run left, then
    /// checks the adopted pods' networks, collects the network's garbage and reports whether
    /// the network is ready.
    pub async fn open(
        settings: PodSettings,
        network: PodNetwork,
        images: Arc<ImageManager>,
    ) -> Result<Self> {
        for dir in [&settings.run_root, &settings.state_root] {
            std::fs::create_dir_all(dir)
                .map_err(|e| PodError::Internal(format!("create {}: {e}", dir.display())))?;
        }
        let mut state = State::default();
        for sandbox in record::load_all::<SandboxRecord>(&settings.state_root, SANDBOX_FILE) {
            for container in record::load_all::<ContainerRecord>(
                &sandbox.state_dir.join("containers"),
                CONTAINER_FILE,
            ) {
                state.containers.insert(container.id.clone(), container);
            }
            state.sandboxes.insert(sandbox.id.clone(), sandbox);
        }
        tracing::info!(
            sandboxes = state.sandboxes.len(),
            containers = state.containers.len(),
            "adopted pods"
        );
        sweep::sweep(&settings, &mut state);
        record_unrecorded_starts(&mut state);
        let (events, _) = tokio::sync::broadcast::channel(1024);
        for sandbox in state.sandboxes.values() {
            watch_exits(&sandbox.run_dir, &sandbox.id, events.clone());
        }
        let host_ports = crate::network::host_ports::HostPorts::default();
        for sandbox in state.sandboxes.values().filter(|s| s.ready) {
            // Relays live in the daemon: an adopted pod gets its host ports back.
            if let Err(e) = sandbox::open_host_ports(&host_ports, sandbox) {
                tracing::warn!(id = %sandbox.id, error = %e, "host ports of an adopted pod not served");
            }
        }
        let manager = PodManager {
            settings,
            network,
            images,
            state: Mutex::new(state),
            events,
            cpu_samples: std::sync::Mutex::new(std::collections::HashMap::new()),
            host_ports,
        };
        manager.check_adopted_networks().await;
        manager.collect_network_garbage().await;
        manager.log_network_readiness().await;
        Ok(manager)
    }

    /// Container lifecycle events from now on (CRI GetContainerEvents).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<ContainerEventResponse> {
        self.events.subscribe()
    }

    fn emit(&self, container_id: &str, sandbox_id: &str, kind: ContainerEventType) {
        // No subscriber is not an error.
        let _ = self.events.send(event(container_id, sandbox_id, kind));
    }

    /// `event` with the current status of its pod and of the pod's containers, as the kubelet's
    /// evented PLEG reads them. Events carry their sandbox's ID from the start; a pod gone by
    /// now leaves the event as it was.
    pub async fn with_statuses(&self, mut event: ContainerEventResponse) -> ContainerEventResponse {
        let Some(sandbox_id) = event.pod_sandbox_status.as_ref().map(|s| s.id.clone()) else {
            return event;
        };
        let state = self.state.lock().await;
        if let Some(sandbox) = state.sandboxes.get(&sandbox_id) {
            event.pod_sandbox_status = Some(sandbox::sandbox_status_of(sandbox));
            event.containers_statuses = state
                .containers
                .values()
                .filter(|c| c.sandbox_id == sandbox_id)
                .map(container::status_of)
                .collect();
        }
        event
    }

    /// The cgroup of a pod whose request named no parent: below the runtime's default parent.
    fn default_pod_cgroup(&self, sandbox_id: &str) -> String {
        pod_cgroup(&self.settings.default_cgroup_parent, sandbox_id)
    }

    /// The network in use.
    pub fn network(&self) -> &PodNetwork {
        &self.network
    }

    /// Diff IDs of the image layers containers use, which image GC must keep. Records from
    /// before containers kept their layers fall back to their image's.
    pub async fn snapshots_in_use(&self) -> std::collections::HashSet<String> {
        let state = self.state.lock().await;
        self.in_use_layers(&state)
    }

    fn in_use_layers(&self, state: &State) -> std::collections::HashSet<String> {
        state
            .containers
            .values()
            .flat_map(|c| {
                if c.layers.is_empty() {
                    self.images
                        .resolve(&c.image_id)
                        .map(|image| image.layers.into_iter().map(|l| l.diff_id).collect())
                        .unwrap_or_default()
                } else {
                    c.layers.clone()
                }
            })
            .collect()
    }

    /// Disk used by every container's writable layer, and where they live (ImageFsInfo's
    /// container filesystem).
    pub async fn writable_layers_usage(&self) -> (PathBuf, crate::images::usage::FsUsage) {
        let uppers: Vec<PathBuf> = {
            let state = self.state.lock().await;
            state
                .containers
                .values()
                .map(|c| c.state_dir.join("upper"))
                .collect()
        };
        let total = tokio::task::spawn_blocking(move || {
            uppers
                .iter()
                .map(|upper| crate::images::usage::measure(upper))
                .fold(crate::images::usage::FsUsage::default(), |sum, one| {
                    crate::images::usage::FsUsage {
                        bytes: sum.bytes + one.bytes,
                        inodes: sum.inodes + one.inodes,
                    }
                })
        })
        .await
        .unwrap_or_default();
        (self.settings.state_root.clone(), total)
    }
}

/// The cgroup of pod `sandbox_id` below `parent`: `pod-` and the ID's first 12 characters.
fn pod_cgroup(parent: &str, sandbox_id: &str) -> String {
    let short = sandbox_id.get(..12).unwrap_or(sandbox_id);
    format!("{parent}/pod-{short}")
}

/// Marks as started the containers the daemon died starting: the monitor started them after
/// their record was saved as created, and the start was not recorded. Without this they would
/// be listed as created while they run. The start time is that of the adoption.
fn record_unrecorded_starts(state: &mut State) {
    let State {
        sandboxes,
        containers,
        ..
    } = state;
    for container in containers
        .values_mut()
        .filter(|c| c.started_at == 0 && !container::has_exited(c))
    {
        let Some(sandbox) = sandboxes.get(&container.sandbox_id) else {
            continue;
        };
        let runs = libcontainer::container::Container::load(
            sandbox.run_dir.join("libcontainer").join(&container.id),
        )
        .is_ok_and(|c| c.status() == libcontainer::container::ContainerStatus::Running);
        if !runs {
            continue;
        }
        container.started_at = record::now_nanos();
        let path = container.state_dir.join(CONTAINER_FILE);
        match record::save(&path, container) {
            Ok(()) => {
                tracing::info!(id = %container.id, "adopted a container started while the daemon died")
            }
            Err(e) => {
                tracing::warn!(id = %container.id, error = %e, "cannot record the start of an adopted container")
            }
        }
    }
}

fn event(container_id: &str, sandbox_id: &str, kind: ContainerEventType) -> ContainerEventResponse {
    ContainerEventResponse {
        container_id: container_id.to_string(),
        container_event_type: kind as i32,
        created_at: record::now_nanos(),
        // Only the ID until [`PodManager::with_statuses`] fills the rest.
        pod_sandbox_status: Some(capstan_proto::PodSandboxStatus {
            id: sandbox_id.to_string(),
            ..Default::default()
        }),
        containers_statuses: Vec::new(),
    }
}

/// Follows a pod monitor's exit events on a thread of its own (the monitor protocol is
/// blocking) until the monitor goes away.
fn watch_exits(
    run_dir: &Path,
    sandbox_id: &str,
    events: tokio::sync::broadcast::Sender<ContainerEventResponse>,
) {
    let sandbox_id = sandbox_id.to_string();
    use std::io::{BufRead, BufReader, Write};
    let socket = run_dir.join(crate::monitor::SOCKET_NAME);
    std::thread::spawn(move || {
        let Ok(mut stream) = std::os::unix::net::UnixStream::connect(&socket) else {
            return;
        };
        let mut request = serde_json::to_vec(&Request::Subscribe).unwrap_or_default();
        request.push(b'\n');
        if stream.write_all(&request).is_err() {
            return;
        }
        let mut lines = BufReader::new(stream).lines();
        let _ = lines.next(); // the Ok reply
        for line in lines {
            let Ok(line) = line else { return };
            if let Ok(exit) = serde_json::from_str::<protocol::ExitEvent>(&line) {
                tracing::debug!(id = %exit.id, code = exit.exit_code, "container exit event");
                let _ = events.send(event(
                    &exit.id,
                    &sandbox_id,
                    ContainerEventType::ContainerStoppedEvent,
                ));
            }
        }
    });
}

/// Calls a pod's monitor from a blocking thread.
async fn call_monitor(run_dir: &Path, request: Request) -> Result<Reply> {
    let socket = run_dir.join(crate::monitor::SOCKET_NAME);
    tokio::task::spawn_blocking(move || protocol::call(&socket, &request, MONITOR_TIMEOUT))
        .await
        .map_err(|e| PodError::Monitor(format!("monitor call task: {e}")))?
        .map_err(|e| PodError::Monitor(e.to_string()))
}

/// The directories of cgroup `path` (absolute within its hierarchy) on this host: one on v2,
/// one per controller hierarchy on v1.
pub(crate) fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let relative = path.trim_start_matches('/');
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return vec![Path::new("/sys/fs/cgroup").join(relative)];
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 2 && fields[2] == "cgroup").then(|| Path::new(fields[1]).join(relative))
        })
        .collect()
}

//! Sandbox lifecycle: RunPodSandbox, StopPodSandbox, RemovePodSandbox, status and listing.

use capstan_proto::{
    LinuxPodSandboxStatus, Namespace, NamespaceMode, NamespaceOption, PodIp, PodSandbox,
    PodSandboxConfig, PodSandboxFilter, PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus,
};

use super::error::{PodError, Result};
use super::record::{self, SANDBOX_FILE, SandboxRecord};
use super::spawn::{MonitorSpawn, start_monitor};
use super::{PodManager, call_monitor};

/// Characters of the sandbox ID that name its run directory.
pub(super) const RUN_DIR_ID_LEN: usize = 16;
use crate::monitor::protocol::Request;
use crate::network::Attachment;

impl PodManager {
    /// Creates a sandbox: a monitor holding fresh namespaces, networked through CNI. Anything
    /// created is removed again when a step fails.
    pub async fn run_sandbox(&self, config: PodSandboxConfig) -> Result<String> {
        let metadata = config
            .metadata
            .clone()
            .ok_or_else(|| PodError::Invalid("config.metadata is required".into()))?;
        for (field, value) in [
            ("name", &metadata.name),
            ("namespace", &metadata.namespace),
            ("uid", &metadata.uid),
        ] {
            if value.is_empty() {
                return Err(PodError::Invalid(format!(
                    "config.metadata.{field} is required"
                )));
            }
        }
        crate::spec::check_sandbox(&config).map_err(|e| PodError::Invalid(e.to_string()))?;
        let mut config = config;
        config.hostname = pod_hostname(&config.hostname)?;
        let options = namespace_options(&config);
        let own_network = options.network != NamespaceMode::Node as i32;
        let host_ipc = options.ipc == NamespaceMode::Node as i32;

        // The name is reserved under the lock; the slow part (monitor, CNI) runs without it, so
        // pods start in parallel.
        let reservation = format!(
            "sandbox/{}_{}_{}_{}",
            metadata.name, metadata.namespace, metadata.uid, metadata.attempt
        );
        let mut state = self.state.lock().await;
        if state.reserved.contains(&reservation) {
            return Err(PodError::AlreadyExists(format!(
                "sandbox name {}_{}_{}_{} is being created",
                metadata.name, metadata.namespace, metadata.uid, metadata.attempt
            )));
        }
        if let Some(existing) = state.sandboxes.values().find(|s| {
            s.config.metadata.as_ref().is_some_and(|m| {
                m.name == metadata.name
                    && m.namespace == metadata.namespace
                    && m.uid == metadata.uid
                    && m.attempt == metadata.attempt
            })
        }) {
            return Err(PodError::AlreadyExists(format!(
                "sandbox name {}_{}_{}_{} is reserved for {}",
                metadata.name, metadata.namespace, metadata.uid, metadata.attempt, existing.id
            )));
        }
        crate::network::host_ports::validate(&config.port_mappings)
            .map_err(|e| PodError::Invalid(format!("config.{e}")))?;
        state.reserved.insert(reservation.clone());
        drop(state);
        let id = record::new_id();
        let sandbox = SandboxRecord {
            // A short directory name: the monitor's socket path must fit in sun_path (108 bytes).
            run_dir: self.settings.run_root.join(&id[..RUN_DIR_ID_LEN]),
            state_dir: self.settings.state_root.join(&id),
            id: id.clone(),
            config: config.clone(),
            ready: true,
            created_at: record::now_nanos(),
            own_network,
            network_attached: false,
            ips: Vec::new(),
            monitor_pid: 0,
        };
        let outcome = self.bring_up(sandbox, host_ipc).await;
        let mut state = self.state.lock().await;
        state.reserved.remove(&reservation);
        let outcome = match outcome {
            Ok(sandbox) => match open_host_ports(&self.host_ports, &sandbox) {
                Ok(()) => Ok(sandbox),
                Err(e) => Err((PodError::Invalid(format!("config.{e}")), sandbox)),
            },
            Err(failed) => Err(failed),
        };
        match outcome {
            Ok(sandbox) => {
                tracing::info!(%id, pod = %metadata.name, namespace = %metadata.namespace, ips = ?sandbox.ips, "sandbox running");
                super::watch_exits(&sandbox.run_dir, &sandbox.id, self.events.clone());
                state.sandboxes.insert(id.clone(), sandbox);
                Ok(id)
            }
            Err((error, sandbox)) => {
                self.tear_down(&sandbox).await;
                Err(error)
            }
        }
    }

    async fn bring_up(
        &self,
        mut sandbox: SandboxRecord,
        host_ipc: bool,
    ) -> std::result::Result<SandboxRecord, (PodError, SandboxRecord)> {
        let mut timer = super::StepTimer::new("RunPodSandbox", &sandbox.id);
        let fail = |e: PodError, s: &SandboxRecord| (e, s.clone());
        if let Err(e) = std::fs::create_dir_all(sandbox.state_dir.join("containers")) {
            return Err(fail(
                PodError::Internal(format!("create {}: {e}", sandbox.state_dir.display())),
                &sandbox,
            ));
        }
        let hostname = sandbox.config.hostname.clone();
        // The pod's network namespace is made here rather than by the monitor, so that CNI ADD
        // (the slowest step) runs while the monitor process is still starting.
        let network_pinned = sandbox.own_network;
        if network_pinned {
            let ns_dir = sandbox.run_dir.join(crate::monitor::NS_DIR);
            let sysctls = crate::spec::pod_network_sysctls(&sandbox.config);
            let created = tokio::task::spawn_blocking(move || {
                crate::monitor::namespaces::create_network(&ns_dir, &sysctls)
            })
            .await
            .unwrap_or_else(|e| Err(format!("namespace task: {e}")));
            if let Err(e) = created {
                return Err(fail(
                    PodError::Internal(format!("pod network namespace: {e}")),
                    &sandbox,
                ));
            }
            timer.step("network namespace created");
        }
        let binary = self.settings.monitor_binary.clone();
        let run_dir = sandbox.run_dir.clone();
        let log_file = sandbox.state_dir.join("monitor.log");
        let host_network = !sandbox.own_network;
        let share_pid = shares_pid(&sandbox.config);
        let rotation = self.settings.rotation;
        let monitor = tokio::task::spawn_blocking(move || {
            start_monitor(&MonitorSpawn {
                binary: &binary,
                run_dir: &run_dir,
                log_file: &log_file,
                hostname: &hostname,
                host_network,
                host_ipc,
                share_pid,
                join_pinned_network: network_pinned,
                rotation,
            })
        });
        let attachment = attachment_of(&sandbox);
        let network = async {
            if network_pinned {
                Some(self.network.add(&attachment).await)
            } else {
                None
            }
        };
        let (started, attached) = tokio::join!(monitor, network);
        timer.step("monitor started and CNI ADD");
        let mut failure = None;
        match attached {
            Some(Ok(result)) => {
                sandbox.network_attached = true;
                sandbox.ips = pod_ips(&result, &attachment.ifname);
            }
            Some(Err(e)) => {
                // Undo what the plugins may have done before failing.
                sandbox.network_attached = true;
                failure = Some(PodError::from(e));
            }
            None => {}
        }
        // A monitor that did not start is the first cause to report.
        match started {
            Ok(Ok(pid)) => sandbox.monitor_pid = pid,
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(PodError::Monitor(format!("monitor start task: {e}"))),
        }
        if let Some(e) = failure {
            return Err(fail(e, &sandbox));
        }
        if let Err(e) = record::save(&sandbox.state_dir.join(SANDBOX_FILE), &sandbox) {
            return Err(fail(e, &sandbox));
        }
        timer.step("record saved");
        Ok(sandbox)
    }

    /// Stops every container of the sandbox and releases its network; idempotent.
    pub async fn stop_sandbox(&self, id: &str) -> Result<()> {
        let mut state = self.state.lock().await;
        let Some(sandbox) = state.sandboxes.get(id).cloned() else {
            // kubelet may stop a sandbox the runtime never had or already removed.
            return Ok(());
        };
        let containers = state.container_ids_of(id);
        for container in containers {
            self.stop_container_locked(&mut state, &container, 0)
                .await?;
        }
        let mut sandbox = sandbox;
        self.host_ports.close(id);
        if sandbox.network_attached {
            self.network.del(&attachment_of(&sandbox)).await?;
            sandbox.network_attached = false;
        }
        sandbox.ready = false;
        record::save(&sandbox.state_dir.join(SANDBOX_FILE), &sandbox)?;
        state.sandboxes.insert(id.to_string(), sandbox);
        tracing::info!(%id, "sandbox stopped");
        Ok(())
    }

    /// Removes the sandbox, its containers, namespaces and files; idempotent.
    pub async fn remove_sandbox(&self, id: &str) -> Result<()> {
        self.stop_sandbox(id).await?;
        let mut state = self.state.lock().await;
        let Some(sandbox) = state.sandboxes.get(id).cloned() else {
            return Ok(());
        };
        let containers = state.container_ids_of(id);
        for container in containers {
            self.remove_container_locked(&mut state, &container).await?;
        }
        self.tear_down(&sandbox).await;
        state.sandboxes.remove(id);
        if let Ok(mut samples) = self.cpu_samples.lock() {
            samples.remove(id);
        }
        tracing::info!(%id, "sandbox removed");
        Ok(())
    }

    /// Releases whatever a sandbox holds: network, monitor, namespace pins and directories.
    async fn tear_down(&self, sandbox: &SandboxRecord) {
        if sandbox.network_attached
            && let Err(e) = self.network.del(&attachment_of(sandbox)).await
        {
            tracing::warn!(id = %sandbox.id, error = %e, "CNI DEL failed while tearing down");
        }
        if sandbox.run_dir.join(crate::monitor::SOCKET_NAME).exists()
            && let Err(e) = call_monitor(&sandbox.run_dir, Request::Shutdown).await
        {
            tracing::warn!(id = %sandbox.id, error = %e, "pod monitor did not shut down; releasing its namespaces");
        }
        // The monitor releases its pins as it stops; a dead monitor could not.
        let ns_dir = sandbox.run_dir.join(crate::monitor::NS_DIR);
        for _ in 0..100 {
            if crate::monitor::namespaces::release(&ns_dir).is_ok()
                && !sandbox.run_dir.join(crate::monitor::SOCKET_NAME).exists()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The pod cgroup this runtime chose (a cgroup parent from the request belongs to the
        // caller); containers' own cgroups are gone with them.
        if sandbox_cgroup_parent(&sandbox.config).is_none() {
            let pod_cgroup = self.default_pod_cgroup(&sandbox.id);
            for dir in crate::pods::cgroup_dirs(&pod_cgroup) {
                if let Err(e) = std::fs::remove_dir(&dir)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the pod cgroup");
                }
            }
        }
        for dir in [&sandbox.run_dir, &sandbox.state_dir] {
            if let Err(e) = std::fs::remove_dir_all(dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove sandbox directory");
            }
        }
    }

    /// The sandbox's status.
    pub async fn sandbox_status(&self, id: &str) -> Result<PodSandboxStatus> {
        let state = self.state.lock().await;
        find_sandbox(&state.sandboxes, id).map(sandbox_status_of)
    }

    /// PodSandboxStatus' verbose `info`: what crictl inspectp shows beside the status (the
    /// monitor's pid, namespace paths, the request's config, the CNI result), as JSON.
    pub async fn sandbox_info(&self, id: &str) -> Result<serde_json::Value> {
        let sandbox = {
            let state = self.state.lock().await;
            find_sandbox(&state.sandboxes, id)?.clone()
        };
        let ns_dir = sandbox.run_dir.join(crate::monitor::NS_DIR);
        let namespace =
            |kind: &str, present: bool| present.then(|| ns_dir.join(kind).display().to_string());
        let cni_result = self.network().cached_result(&attachment_of(&sandbox));
        Ok(serde_json::json!({
            "pid": if sandbox.ready { sandbox.monitor_pid } else { 0 },
            "netNamespacePath": namespace("net", sandbox.own_network),
            "pidNamespacePath": namespace("pid", shares_pid(&sandbox.config)),
            "runDir": sandbox.run_dir,
            "runtimeType": "capstan",
            "config": sandbox.config,
            "cniResult": cni_result,
        }))
    }

    /// The sandboxes matching `filter`.
    pub async fn list_sandboxes(&self, filter: Option<PodSandboxFilter>) -> Vec<PodSandbox> {
        let state = self.state.lock().await;
        let filter = filter.unwrap_or_default();
        state
            .sandboxes
            .values()
            .filter(|s| filter.id.is_empty() || s.id.starts_with(&filter.id))
            .filter(|s| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|want| want.state == sandbox_state(s) as i32)
            })
            .filter(|s| {
                filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| s.config.labels.get(k) == Some(v))
            })
            .map(|s| PodSandbox {
                id: s.id.clone(),
                metadata: s.config.metadata.clone(),
                state: sandbox_state(s) as i32,
                created_at: s.created_at,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: String::new(),
            })
            .collect()
    }
}

/// A sandbox by full ID or unique prefix.
pub(super) fn find_sandbox<'a>(
    sandboxes: &'a std::collections::BTreeMap<String, SandboxRecord>,
    id: &str,
) -> Result<&'a SandboxRecord> {
    if id.is_empty() {
        return Err(PodError::Invalid("pod_sandbox_id is required".into()));
    }
    if let Some(found) = sandboxes.get(id) {
        return Ok(found);
    }
    let mut matches = sandboxes.values().filter(|s| s.id.starts_with(id));
    match (matches.next(), matches.next()) {
        (Some(found), None) => Ok(found),
        (Some(_), Some(_)) => Err(PodError::Invalid(format!(
            "sandbox ID prefix {id:?} is ambiguous"
        ))),
        _ => Err(PodError::NotFound(format!("sandbox {id:?}"))),
    }
}

fn sandbox_state(sandbox: &SandboxRecord) -> PodSandboxState {
    if sandbox.ready {
        PodSandboxState::SandboxReady
    } else {
        PodSandboxState::SandboxNotready
    }
}

pub(super) fn namespace_options(config: &PodSandboxConfig) -> NamespaceOption {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

/// Whether the pod's containers share one PID namespace: the options say `pid: POD`. Absent
/// options mean a PID namespace per container, which is what the kubelet asks for unless
/// `shareProcessNamespace` is set.
pub(super) fn shares_pid(config: &PodSandboxConfig) -> bool {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .is_some_and(|o| o.pid == NamespaceMode::Pod as i32)
}

pub(super) fn attachment_of(sandbox: &SandboxRecord) -> Attachment {
    let metadata = sandbox.config.metadata.clone().unwrap_or_default();
    Attachment {
        container_id: sandbox.id.clone(),
        netns: sandbox.run_dir.join(crate::monitor::NS_DIR).join("net"),
        ifname: "eth0".into(),
        pod: (metadata.name, metadata.namespace, metadata.uid),
    }
}

/// The pod's addresses from a CNI result: those on the pod's interface, never loopback (a
/// plugin that drops a chain's earlier result must not make 127.0.0.1 the pod IP).
fn pod_ips(result: &capstan_cni::result::CniResult, ifname: &str) -> Vec<String> {
    result
        .ips
        .iter()
        .filter(|ip| {
            ip.interface
                .and_then(|i| result.interfaces.get(i))
                .is_none_or(|interface| interface.name == ifname)
        })
        .map(|ip| ip.address.addr())
        .filter(|addr| !addr.is_loopback())
        .map(|addr| addr.to_string())
        .collect()
}

/// The cgroup parent the request names, made absolute.
pub(super) fn sandbox_cgroup_parent(config: &PodSandboxConfig) -> Option<String> {
    config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p.starts_with('/') {
                p
            } else {
                format!("/{p}")
            }
        })
}

/// Serves the sandbox's host ports (pods on the host's network have none to relay).
pub(super) fn open_host_ports(
    ports: &crate::network::host_ports::HostPorts,
    sandbox: &SandboxRecord,
) -> std::result::Result<(), crate::network::host_ports::PortMappingError> {
    let mappings = &sandbox.config.port_mappings;
    if !sandbox.own_network || mappings.iter().all(|m| m.host_port == 0) {
        return Ok(());
    }
    let Some(ip) = sandbox.ips.first().and_then(|ip| ip.parse().ok()) else {
        return Err(crate::network::host_ports::PortMappingError {
            index: 0,
            field: "host_port",
            reason: "the pod has no IP address to relay to".into(),
        });
    };
    ports.open(&sandbox.id, ip, mappings)
}

/// The CRI status of `sandbox`, from its record.
pub(super) fn sandbox_status_of(sandbox: &SandboxRecord) -> PodSandboxStatus {
    let options = namespace_options(&sandbox.config);
    PodSandboxStatus {
        id: sandbox.id.clone(),
        metadata: sandbox.config.metadata.clone(),
        state: sandbox_state(sandbox) as i32,
        created_at: sandbox.created_at,
        network: Some(PodSandboxNetworkStatus {
            ip: sandbox.ips.first().cloned().unwrap_or_default(),
            additional_ips: sandbox
                .ips
                .iter()
                .skip(1)
                .map(|ip| PodIp { ip: ip.clone() })
                .collect(),
        }),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(options),
            }),
        }),
        labels: sandbox.config.labels.clone(),
        annotations: sandbox.config.annotations.clone(),
        runtime_handler: String::new(),
    }
}

/// The kernel's limit on a hostname (HOST_NAME_MAX).
const HOSTNAME_MAX: usize = 64;

/// The pod's hostname: the request's, or the host's when it names none, as containerd does
/// (critest's and other generated pod names are often longer than a hostname may be, so the pod
/// name is no fallback). A requested one the kernel would refuse is an invalid request.
fn pod_hostname(requested: &str) -> Result<String> {
    if requested.is_empty() {
        return nix::unistd::gethostname()
            .map_err(|e| PodError::Internal(format!("read the host's hostname: {e}")))
            .map(|name| name.to_string_lossy().into_owned());
    }
    if requested.len() > HOSTNAME_MAX {
        return Err(PodError::Invalid(format!(
            "config.hostname: Invalid value: {requested:?}: must be no more than {HOSTNAME_MAX} bytes"
        )));
    }
    if requested.contains('\0') {
        return Err(PodError::Invalid(
            "config.hostname: Invalid value: must not contain a NUL byte".into(),
        ));
    }
    Ok(requested.to_string())
}

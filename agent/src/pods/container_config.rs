//! The CRI container request for one container of a pod: image, command, env, mounts, log
//! path, resources and security context.

use std::collections::HashMap;

use capstan_proto::{
    Capability, ContainerConfig, ContainerMetadata, ImageSpec, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerSecurityContext, Mount, NamespaceMode, NamespaceOption,
    SecurityProfile, security_profile::ProfileType,
};
use k8s_openapi::api::core::v1::{Container, Pod};

use super::labels;
use crate::pods::resources;

/// Annotation carrying the container's restart count, as the kubelet sets it.
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
/// Annotation carrying where the container's termination message is written.
pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";

/// What the pod worker resolved for a container before building its request.
#[derive(Debug, Clone, Default)]
pub struct ResolvedContainer {
    /// Environment, `$(VAR)` references expanded.
    pub envs: Vec<KeyValue>,
    /// Command, expanded.
    pub command: Vec<String>,
    /// Args, expanded.
    pub args: Vec<String>,
    /// Volume mounts on the host side.
    pub mounts: Vec<Mount>,
}

/// Builds the CreateContainer config for `container` of `pod`; `memory_qos` (cgroup v2 only)
/// adds memory.min and memory.high.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    attempt: u32,
    resolved: ResolvedContainer,
    node_memory: i64,
    memory_qos: Option<resources::MemoryQos>,
) -> ContainerConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let pod_security = spec.security_context.clone().unwrap_or_default();
    let security = container.security_context.clone().unwrap_or_default();
    let run_as_user = security.run_as_user.or(pod_security.run_as_user);
    let run_as_group = security.run_as_group.or(pod_security.run_as_group);
    let capabilities = security.capabilities.clone().unwrap_or_default();
    let seccomp = security
        .seccomp_profile
        .clone()
        .or(pod_security.seccomp_profile.clone())
        .map(|profile| SecurityProfile {
            profile_type: match profile.type_.as_str() {
                "RuntimeDefault" => ProfileType::RuntimeDefault,
                "Localhost" => ProfileType::Localhost,
                _ => ProfileType::Unconfined,
            } as i32,
            localhost_ref: profile.localhost_profile.unwrap_or_default(),
        });
    let pid = if spec.host_pid.unwrap_or(false) {
        NamespaceMode::Node
    } else if spec.share_process_namespace.unwrap_or(false) {
        NamespaceMode::Pod
    } else {
        NamespaceMode::Container
    };
    let pod_mode = |host: Option<bool>| {
        if host.unwrap_or(false) {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        }
    };
    let mut annotations: HashMap<String, String> = HashMap::from([
        (RESTART_COUNT.to_string(), attempt.to_string()),
        (
            TERMINATION_MESSAGE_PATH.to_string(),
            container
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
        ),
    ]);
    if let Some(pod_annotations) = &pod.metadata.annotations {
        for (k, v) in pod_annotations {
            annotations.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: container.name.clone(),
            attempt,
        }),
        image: Some(ImageSpec {
            image: container.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: resolved.command,
        args: resolved.args,
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: resolved.envs,
        mounts: resolved.mounts,
        labels: labels::container_labels(pod, &container.name),
        annotations,
        log_path: format!("{}/{attempt}.log", container.name),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(LinuxContainerConfig {
            resources: Some({
                let mut r = resources::container_resources(pod, container, node_memory);
                if let Some(qos) = memory_qos {
                    r.unified
                        .extend(resources::memory_qos_files(container, qos));
                }
                r
            }),
            security_context: Some(LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: capabilities.add.unwrap_or_default(),
                    drop_capabilities: capabilities.drop.unwrap_or_default(),
                    ..Default::default()
                }),
                privileged: security.privileged.unwrap_or(false),
                namespace_options: Some(NamespaceOption {
                    network: pod_mode(spec.host_network) as i32,
                    pid: pid as i32,
                    ipc: pod_mode(spec.host_ipc) as i32,
                    ..Default::default()
                }),
                run_as_user: run_as_user.map(|value| Int64Value { value }),
                run_as_group: run_as_group.map(|value| Int64Value { value }),
                readonly_rootfs: security.read_only_root_filesystem.unwrap_or(false),
                supplemental_groups: pod_security.supplemental_groups.clone().unwrap_or_default(),
                no_new_privs: security.allow_privilege_escalation == Some(false),
                seccomp,
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

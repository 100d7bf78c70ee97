//! Ephemeral containers (`kubectl debug`): which of a pod's `spec.ephemeralContainers` the
//! worker starts, the container they run as, and how one joins its target container's process
//! namespace. As the kubelet: each runs once in the pod's running sandbox, in spec order, and is
//! never restarted; probes, ports, lifecycle hooks and resources do not apply to them.

use capstan_proto::{ContainerConfig, NamespaceMode};
use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};

use crate::pods::view::PodView;

/// The pod's ephemeral containers, in spec order.
pub fn of(pod: &Pod) -> &[EphemeralContainer] {
    pod.spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_deref())
        .unwrap_or_default()
}

/// The ephemeral container `name` of `pod`, if it has one.
pub fn find<'a>(pod: &'a Pod, name: &str) -> Option<&'a EphemeralContainer> {
    of(pod).iter().find(|e| e.name == name)
}

/// The container an ephemeral container runs as: its common fields, without the ones that do
/// not apply to it (the API server rejects them; they are dropped again here so that a pod from
/// elsewhere cannot give a debug container probes, hooks, ports or resources).
pub fn as_container(ephemeral: &EphemeralContainer) -> Container {
    let e = ephemeral.clone();
    Container {
        name: e.name,
        image: e.image,
        image_pull_policy: e.image_pull_policy,
        command: e.command,
        args: e.args,
        working_dir: e.working_dir,
        env: e.env,
        env_from: e.env_from,
        volume_mounts: e.volume_mounts,
        volume_devices: e.volume_devices,
        security_context: e.security_context,
        stdin: e.stdin,
        stdin_once: e.stdin_once,
        tty: e.tty,
        termination_message_path: e.termination_message_path,
        termination_message_policy: e.termination_message_policy,
        ..Default::default()
    }
}

/// The ephemeral containers to start now: those the runtime holds no instance of, in any
/// sandbox of the pod (one that ran, even in an earlier sandbox, is never started again).
pub fn to_start<'a>(pod: &'a Pod, view: &PodView) -> Vec<&'a EphemeralContainer> {
    of(pod)
        .iter()
        .filter(|e| view.latest(&e.name).is_none())
        .collect()
}

/// The runtime ID of the running container `target` of the sandbox `sandbox_id`, whose
/// process namespace an ephemeral container joins; the kubelet's error when it is not running.
pub fn target_id(view: &PodView, sandbox_id: &str, target: &str) -> Result<String, String> {
    view.latest(target)
        .filter(|c| c.sandbox_id == sandbox_id && c.running())
        .map(|c| c.status.id.clone())
        .ok_or_else(|| format!("unable to find target container {target}"))
}

/// Makes `config` share the process namespace of the container `target_id` (CRI
/// `NamespaceMode::Target`).
pub fn join_target(config: &mut ContainerConfig, target_id: &str) {
    let linux = config.linux.get_or_insert_with(Default::default);
    let security = linux.security_context.get_or_insert_with(Default::default);
    let namespaces = security
        .namespace_options
        .get_or_insert_with(Default::default);
    namespaces.pid = NamespaceMode::Target as i32;
    namespaces.target_id = target_id.to_string();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::view::ContainerInfo;
    use capstan_proto::{ContainerMetadata, ContainerState, ContainerStatus};

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {
                "containers": [{"name": "c", "image": "app"}],
                "ephemeralContainers": [
                    {"name": "d1", "image": "busybox", "targetContainerName": "c",
                     "ports": [{"containerPort": 80}],
                     "readinessProbe": {"exec": {"command": ["true"]}},
                     "lifecycle": {"preStop": {"exec": {"command": ["true"]}}},
                     "resources": {"limits": {"cpu": "1"}},
                     "stdin": true, "tty": true},
                    {"name": "d2", "image": "busybox"},
                ],
            }
        }))
        .expect("a pod")
    }

    fn instance(name: &str, sandbox: &str, state: ContainerState) -> ContainerInfo {
        ContainerInfo {
            status: ContainerStatus {
                id: format!("{name}-id"),
                metadata: Some(ContainerMetadata {
                    name: name.into(),
                    attempt: 0,
                }),
                state: state as i32,
                ..Default::default()
            },
            name: name.into(),
            attempt: 0,
            sandbox_id: sandbox.into(),
        }
    }

    #[test]
    fn runs_without_probes_ports_hooks_or_resources() {
        let pod = pod();
        let c = as_container(find(&pod, "d1").expect("d1"));
        assert_eq!(c.name, "d1");
        assert_eq!(c.image.as_deref(), Some("busybox"));
        assert_eq!((c.stdin, c.tty), (Some(true), Some(true)));
        assert!(c.ports.is_none() && c.readiness_probe.is_none());
        assert!(c.lifecycle.is_none() && c.resources.is_none());
        assert!(find(&pod, "c").is_none());
    }

    #[test]
    fn starts_each_once_in_order() {
        let pod = pod();
        let names = |view: &PodView| -> Vec<String> {
            to_start(&pod, view)
                .iter()
                .map(|e| e.name.clone())
                .collect()
        };
        let mut view = PodView::default();
        assert_eq!(names(&view), ["d1", "d2"]);
        // An exited one, even of an earlier sandbox, stays exited.
        view.containers
            .push(instance("d1", "old", ContainerState::ContainerExited));
        assert_eq!(names(&view), ["d2"]);
    }

    #[test]
    fn joins_only_a_running_target_of_this_sandbox() {
        let mut view = PodView::default();
        assert_eq!(
            target_id(&view, "s", "c").unwrap_err(),
            "unable to find target container c"
        );
        view.containers
            .push(instance("c", "old", ContainerState::ContainerRunning));
        assert!(target_id(&view, "s", "c").is_err());
        view.containers
            .insert(0, instance("c", "s", ContainerState::ContainerRunning));
        assert_eq!(target_id(&view, "s", "c").as_deref(), Ok("c-id"));
        let mut config = ContainerConfig::default();
        join_target(&mut config, "c-id");
        let ns = config
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .expect("namespace options");
        assert_eq!(ns.pid, NamespaceMode::Target as i32);
        assert_eq!(ns.target_id, "c-id");
    }
}

//! Which namespaces the container gets: the pod's network, IPC and UTS namespaces joined by path,
//! its own or a shared PID namespace, always its own mount namespace; plus the pod's sysctls,
//! which only make sense inside namespaces the pod owns.

use std::collections::HashMap;
use std::path::PathBuf;

use capstan_proto::{
    LinuxContainerSecurityContext, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig,
};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType};

use super::{NamespacePaths, SpecError};

/// The namespace entries of the spec and what they imply for mounts, hostname and sysctls.
#[derive(Debug, Clone)]
pub(super) struct Namespaces {
    pub entries: Vec<LinuxNamespace>,
    pub host_network: bool,
    pub host_ipc: bool,
    pub has_uts: bool,
}

pub(super) fn namespaces(
    sc: &LinuxContainerSecurityContext,
    pod_sc: &LinuxSandboxSecurityContext,
    paths: &NamespacePaths,
    cgroup_v2: bool,
) -> Result<Namespaces, SpecError> {
    const POD_FIELD: &str = "PodSandboxConfig.linux.security_context.namespace_options";
    // Network and IPC are pod-wide by definition, so the sandbox's options decide them; an absent
    // message means POD (the proto default), which is what every pod without host* flags has.
    let pod_opts = pod_sc.namespace_options.clone().unwrap_or_default();
    let network = mode(pod_opts.network, &format!("{POD_FIELD}.network"))?;
    let ipc = mode(pod_opts.ipc, &format!("{POD_FIELD}.ipc"))?;
    let (pid_field, pid) = pid_mode(sc, pod_sc)?;

    let mut entries = vec![ns(LinuxNamespaceType::Mount, None)?];
    let host_network = network == NamespaceMode::Node;
    if !host_network {
        let path = required(&paths.network, "namespace_paths.network")?;
        entries.push(ns(LinuxNamespaceType::Network, Some(path))?);
        // UTS follows the network: a host-network pod sees the host's name, as in kubelet.
        let path = required(&paths.uts, "namespace_paths.uts")?;
        entries.push(ns(LinuxNamespaceType::Uts, Some(path))?);
    }
    let host_ipc = ipc == NamespaceMode::Node;
    if !host_ipc {
        let path = required(&paths.ipc, "namespace_paths.ipc")?;
        entries.push(ns(LinuxNamespaceType::Ipc, Some(path))?);
    }
    match pid {
        NamespaceMode::Container => entries.push(ns(LinuxNamespaceType::Pid, None)?),
        NamespaceMode::Pod | NamespaceMode::Target => {
            let path = paths.pid.clone().ok_or_else(|| SpecError::Input {
                input: "namespace_paths.pid",
                reason: format!(
                    "{pid_field} asks for the pod's PID namespace, but the pod sandbox was not \
                     created with linux.security_context.namespace_options.pid = POD"
                ),
            })?;
            entries.push(ns(LinuxNamespaceType::Pid, Some(path))?);
        }
        NamespaceMode::Node => {}
    }
    // On v2 a cgroup namespace makes /sys/fs/cgroup show the container's own subtree; v1 hosts
    // keep the host view, as runc and containerd do there.
    if cgroup_v2 {
        entries.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }
    Ok(Namespaces {
        entries,
        host_network,
        host_ipc,
        has_uts: !host_network,
    })
}

/// The container's own options decide PID (kubelet puts TARGET there for debug containers);
/// without them the pod's apply, and with neither the container gets its own, which is what
/// kubelet sends when the pod does not share its process namespace.
fn pid_mode(
    sc: &LinuxContainerSecurityContext,
    pod_sc: &LinuxSandboxSecurityContext,
) -> Result<(&'static str, NamespaceMode), SpecError> {
    let (field, opts): (&'static str, Option<&NamespaceOption>) = match &sc.namespace_options {
        Some(o) => ("linux.security_context.namespace_options.pid", Some(o)),
        None => (
            "PodSandboxConfig.linux.security_context.namespace_options.pid",
            pod_sc.namespace_options.as_ref(),
        ),
    };
    match opts {
        Some(o) => Ok((field, mode(o.pid, field)?)),
        None => Ok((field, NamespaceMode::Container)),
    }
}

fn mode(value: i32, field: &str) -> Result<NamespaceMode, SpecError> {
    NamespaceMode::try_from(value)
        .map_err(|_| SpecError::invalid(field, format!("unknown namespace mode {value}")))
}

fn required(path: &Option<PathBuf>, input: &'static str) -> Result<PathBuf, SpecError> {
    path.clone().ok_or_else(|| SpecError::Input {
        input,
        reason: "the pod has this namespace but its path was not given".to_string(),
    })
}

fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> Result<LinuxNamespace, SpecError> {
    let b = LinuxNamespaceBuilder::default().typ(typ);
    Ok(match path {
        Some(p) => b.path(p).build()?,
        None => b.build()?,
    })
}

/// [`sysctls`] with the namespaces the sandbox's options give it.
pub(super) fn check_pod_sysctls(sandbox: &PodSandboxConfig) -> Result<(), SpecError> {
    const FIELD: &str = "PodSandboxConfig.linux.security_context.namespace_options";
    let options = sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let host_network = mode(options.network, &format!("{FIELD}.network"))? == NamespaceMode::Node;
    let host_ipc = mode(options.ipc, &format!("{FIELD}.ipc"))? == NamespaceMode::Node;
    let ns = Namespaces {
        entries: Vec::new(),
        host_network,
        host_ipc,
        has_uts: !host_network,
    };
    sysctls(sandbox, &ns).map(|_| ())
}

/// The sandbox's sysctls, checked the way kubelet does: only namespaced ones, and only in a
/// namespace the pod owns (writing `net.*` in the host's network namespace would change the
/// node).
pub(super) fn sysctls(
    sandbox: &PodSandboxConfig,
    ns: &Namespaces,
) -> Result<HashMap<String, String>, SpecError> {
    let Some(linux) = &sandbox.linux else {
        return Ok(HashMap::new());
    };
    let mut out = HashMap::new();
    for (name, value) in &linux.sysctls {
        let field = format!("PodSandboxConfig.linux.sysctls[{name:?}]");
        let name = normalise(name);
        let owner = if name.starts_with("net.") {
            Owner::Network
        } else if name.starts_with("kernel.shm")
            || name.starts_with("kernel.msg")
            || name == "kernel.sem"
            || name.starts_with("fs.mqueue.")
        {
            Owner::Ipc
        } else {
            return Err(SpecError::invalid(
                field,
                "not a namespaced sysctl; it would change the whole node",
            ));
        };
        match owner {
            Owner::Network if ns.host_network => {
                return Err(SpecError::invalid(
                    field,
                    "not allowed with host networking",
                ));
            }
            Owner::Ipc if ns.host_ipc => {
                return Err(SpecError::invalid(field, "not allowed with host IPC"));
            }
            _ => {}
        }
        out.insert(name, value.clone());
    }
    Ok(out)
}

enum Owner {
    Network,
    Ipc,
}

/// Kubernetes accepts `/` as the separator, in which case a `.` is part of a component (an
/// interface named `eth0.100`); OCI wants dots, so the two swap.
fn normalise(name: &str) -> String {
    if !name.contains('/') {
        return name.to_string();
    }
    name.chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_proto::LinuxPodSandboxConfig;

    fn paths() -> NamespacePaths {
        NamespacePaths {
            network: Some("/run/ns/net".into()),
            ipc: Some("/run/ns/ipc".into()),
            uts: Some("/run/ns/uts".into()),
            pid: Some("/run/ns/pid".into()),
        }
    }

    fn opts(network: NamespaceMode, pid: NamespaceMode, ipc: NamespaceMode) -> NamespaceOption {
        NamespaceOption {
            network: network as i32,
            pid: pid as i32,
            ipc: ipc as i32,
            ..Default::default()
        }
    }

    fn pod(o: NamespaceOption) -> LinuxSandboxSecurityContext {
        LinuxSandboxSecurityContext {
            namespace_options: Some(o),
            ..Default::default()
        }
    }

    fn ctr(o: NamespaceOption) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            namespace_options: Some(o),
            ..Default::default()
        }
    }

    fn find(n: &Namespaces, t: LinuxNamespaceType) -> Option<Option<PathBuf>> {
        n.entries
            .iter()
            .find(|e| e.typ() == t)
            .map(|e| e.path().clone())
    }

    use NamespaceMode::{Container, Node, Pod};

    #[test]
    fn pod_network_ipc_uts_joined_and_pid_private() {
        let o = opts(Pod, Container, Pod);
        let n = namespaces(&ctr(o.clone()), &pod(o), &paths(), false).unwrap();
        assert_eq!(
            find(&n, LinuxNamespaceType::Network),
            Some(Some("/run/ns/net".into()))
        );
        assert_eq!(
            find(&n, LinuxNamespaceType::Ipc),
            Some(Some("/run/ns/ipc".into()))
        );
        assert_eq!(
            find(&n, LinuxNamespaceType::Uts),
            Some(Some("/run/ns/uts".into()))
        );
        assert_eq!(find(&n, LinuxNamespaceType::Pid), Some(None));
        assert_eq!(find(&n, LinuxNamespaceType::Mount), Some(None));
        assert_eq!(find(&n, LinuxNamespaceType::Cgroup), None);
        assert!(n.has_uts && !n.host_network && !n.host_ipc);
    }

    #[test]
    fn shared_pid_namespace_joins_the_pods() {
        let o = opts(Pod, Pod, Pod);
        let n = namespaces(&ctr(o.clone()), &pod(o), &paths(), false).unwrap();
        assert_eq!(
            find(&n, LinuxNamespaceType::Pid),
            Some(Some("/run/ns/pid".into()))
        );
    }

    #[test]
    fn shared_pid_without_a_path_is_a_runtime_input_error() {
        let o = opts(Pod, Pod, Pod);
        let p = NamespacePaths {
            pid: None,
            ..paths()
        };
        let err = namespaces(&ctr(o.clone()), &pod(o), &p, false).unwrap_err();
        assert!(matches!(
            err,
            SpecError::Input {
                input: "namespace_paths.pid",
                ..
            }
        ));
    }

    #[test]
    fn host_namespaces_have_no_entries() {
        let o = opts(Node, Node, Node);
        let n = namespaces(&ctr(o.clone()), &pod(o), &NamespacePaths::default(), false).unwrap();
        for t in [
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Pid,
        ] {
            assert_eq!(find(&n, t), None, "{t:?}");
        }
        assert_eq!(find(&n, LinuxNamespaceType::Mount), Some(None));
        assert!(n.host_network && n.host_ipc && !n.has_uts);
    }

    #[test]
    fn missing_options_mean_pod_network_and_private_pid() {
        let n = namespaces(&Default::default(), &Default::default(), &paths(), true).unwrap();
        assert_eq!(
            find(&n, LinuxNamespaceType::Network),
            Some(Some("/run/ns/net".into()))
        );
        assert_eq!(find(&n, LinuxNamespaceType::Pid), Some(None));
        assert_eq!(find(&n, LinuxNamespaceType::Cgroup), Some(None));
    }

    #[test]
    fn unknown_mode_is_named() {
        let mut o = opts(Pod, Container, Pod);
        o.ipc = 9;
        let err = namespaces(&ctr(o.clone()), &pod(o), &paths(), false).unwrap_err();
        assert!(err.to_string().contains("namespace_options.ipc"), "{err}");
    }

    fn sandbox(sysctls: &[(&str, &str)]) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                sysctls: sysctls
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sysctls_pass_through_and_slashes_normalise() {
        let o = opts(Pod, Container, Pod);
        let n = namespaces(&ctr(o.clone()), &pod(o), &paths(), false).unwrap();
        let s = sysctls(
            &sandbox(&[
                ("net.ipv4.ip_unprivileged_port_start", "0"),
                ("net/ipv4/conf/eth0.100/rp_filter", "1"),
                ("kernel.shm_rmid_forced", "1"),
            ]),
            &n,
        )
        .unwrap();
        assert_eq!(s["net.ipv4.ip_unprivileged_port_start"], "0");
        assert_eq!(s["net.ipv4.conf.eth0/100.rp_filter"], "1");
        assert_eq!(s["kernel.shm_rmid_forced"], "1");
    }

    #[test]
    fn sysctls_rejected_in_host_namespaces_or_when_not_namespaced() {
        let o = opts(Node, Container, Node);
        let n = namespaces(&ctr(o.clone()), &pod(o), &paths(), false).unwrap();
        let err = sysctls(&sandbox(&[("net.ipv4.ip_forward", "1")]), &n).unwrap_err();
        assert!(err.to_string().contains("host networking"), "{err}");
        let err = sysctls(&sandbox(&[("kernel.msgmax", "1")]), &n).unwrap_err();
        assert!(err.to_string().contains("host IPC"), "{err}");
        let err = sysctls(&sandbox(&[("vm.swappiness", "1")]), &n).unwrap_err();
        assert!(err.to_string().contains("vm.swappiness"), "{err}");
    }
}

//! Generates a container's OCI runtime spec from its CRI request, its sandbox's config, its
//! image's config and what the runtime itself prepared (rootfs, cgroup, pinned namespaces).
//!
//! Everything here is a function of its inputs, with two deliberate exceptions at the edge: host
//! devices are looked up through [`HostDevices`] (tests pass a fake) and a `Localhost` seccomp
//! profile is read from the path the request names. The result is checked by libcontainer when
//! the pod monitor creates the container, so this module only rejects what the CRI request got
//! wrong and names the field that did.

mod devices;
mod mounts;
mod namespaces;
mod process;
mod resources;
mod seccomp;
mod security;
mod user;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use capstan_proto::{
    ContainerConfig, LinuxContainerSecurityContext, LinuxSandboxSecurityContext, PodSandboxConfig,
};
use oci_spec::OciSpecError;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{LinuxBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder};

pub use devices::{HostDevice, HostDevices, SystemDevices};
pub use resources::controllers_used;
pub use seccomp::default_profile as default_seccomp_profile;
pub use security::capabilities_from_mask;

/// What the runtime prepared for one container, beyond what the CRI request says.
#[derive(Debug, Clone, Default)]
pub struct SpecInputs {
    /// The container's root filesystem (the overlay mount point).
    pub rootfs: PathBuf,
    /// The container's cgroup; must be absolute so libcontainer never resolves it against its
    /// own cgroup.
    pub cgroups_path: PathBuf,
    /// The pod's pinned namespaces that the container joins.
    pub namespace_paths: NamespacePaths,
    /// Contents of the image rootfs's `/etc/passwd`; `None` when the image has none.
    pub etc_passwd: Option<String>,
    /// Contents of the image rootfs's `/etc/group`; `None` when the image has none.
    pub etc_group: Option<String>,
    /// The pod's hostname; falls back to `PodSandboxConfig.hostname` when empty. Sets the
    /// `HOSTNAME` variable and, when the container has a UTS namespace, the spec's hostname.
    pub hostname: String,
    /// The pod's `/etc/hostname` file, bind-mounted when given.
    pub hostname_path: Option<PathBuf>,
    /// The pod's `/etc/hosts` file, bind-mounted when given.
    pub hosts_path: Option<PathBuf>,
    /// The pod's `/etc/resolv.conf` file, bind-mounted when given.
    pub resolv_conf_path: Option<PathBuf>,
    /// The pod's shared `/dev/shm` (a tmpfs the sandbox owns), bind-mounted when given so that
    /// containers sharing an IPC namespace also share POSIX shared memory; without it each
    /// container gets its own tmpfs.
    pub shm_path: Option<PathBuf>,
    /// Apply the RuntimeDefault seccomp profile when the request names no profile at all
    /// (kubelet's `--seccomp-default`); otherwise an unset profile means unconfined.
    pub seccomp_default: bool,
    /// The pod's pids limit, which CRI does not carry per container.
    pub pids_limit: Option<i64>,
    /// Huge page sizes the host has (e.g. `"2MB"`); limits for other sizes are dropped because
    /// the hugetlb controller has no file to write them to. `None` keeps every limit.
    pub hugepage_sizes: Option<Vec<String>>,
    /// The host runs the unified cgroup v2 hierarchy: the container then gets a cgroup namespace.
    pub cgroup_v2: bool,
    /// The cgroup controllers the container's cgroup can use (v1: mounted hierarchies; v2:
    /// enabled down to its parent); limits of the others are left out. `None`: every one.
    pub cgroup_controllers: Option<BTreeSet<String>>,
    /// On v1 hosts, where each controller hierarchy is mounted (e.g. `/sys/fs/cgroup/memory`):
    /// the container's /sys/fs/cgroup then holds its own cgroup of each, bind-mounted. Empty:
    /// leave /sys/fs/cgroup to libcontainer.
    pub cgroup_v1_hierarchies: Vec<PathBuf>,
    /// The capabilities the runtime itself holds (its effective set): what "ALL" and
    /// privileged containers get, as containerd grants its own set. `None`: every capability.
    pub runtime_capabilities: Option<oci_spec::runtime::Capabilities>,
    /// The lowest oom_score_adj the runtime can give (its own, when it lacks
    /// CAP_SYS_RESOURCE): requests below it are raised to it, as containerd's
    /// restrict_oom_score_adj does, instead of failing the container's start.
    pub min_oom_score_adj: Option<i32>,
}

/// Paths of the pod's pinned namespace files (e.g. `/run/capstan/pods/<id>/ns/net`).
#[derive(Debug, Clone, Default)]
pub struct NamespacePaths {
    /// The pod's network namespace; unused when the pod is on the host network.
    pub network: Option<PathBuf>,
    /// The pod's IPC namespace; unused when the pod uses the host's.
    pub ipc: Option<PathBuf>,
    /// The pod's UTS namespace; unused when the pod is on the host network.
    pub uts: Option<PathBuf>,
    /// The PID namespace to join when the container's PID mode is POD (the pod's) or TARGET
    /// (the target container's).
    pub pid: Option<PathBuf>,
}

/// Why a spec could not be generated. Every variant names the CRI field (or the runtime input)
/// at fault.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A CRI field holds a value the runtime cannot use.
    #[error("{field}: {reason}")]
    Invalid {
        /// The CRI field, e.g. `linux.security_context.capabilities.add_capabilities`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A user name from the request or the image is not in the image's `/etc/passwd`.
    #[error("{field}: user {user:?} not found in the image's /etc/passwd")]
    UnknownUser {
        /// Where the name came from.
        field: String,
        /// The name.
        user: String,
    },
    /// A group name from the image's USER is not in the image's `/etc/group`.
    #[error("{field}: group {group:?} not found in the image's /etc/group")]
    UnknownGroup {
        /// Where the name came from.
        field: String,
        /// The name.
        group: String,
    },
    /// A requested host device could not be inspected.
    #[error("{field}: host device {}: {source}", path.display())]
    Device {
        /// The CRI field, e.g. `devices[0].host_path`.
        field: String,
        /// The host path.
        path: PathBuf,
        /// Why it could not be used.
        source: std::io::Error,
    },
    /// A Localhost seccomp profile could not be read or parsed.
    #[error("{field}: seccomp profile {}: {reason}", path.display())]
    SeccompProfile {
        /// The CRI field, e.g. `linux.security_context.seccomp.localhost_ref`.
        field: String,
        /// The profile's path on the host.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The runtime's own inputs are inconsistent (a bug in the caller, not in the request).
    #[error("runtime input {input}: {reason}")]
    Input {
        /// The [`SpecInputs`] field.
        input: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// oci-spec refused to build a value.
    #[error("building the OCI spec: {0}")]
    Build(#[from] OciSpecError),
}

impl SpecError {
    /// True when the CRI request is at fault (answer InvalidArgument), false when the runtime or
    /// the host is (answer Internal or FailedPrecondition).
    pub fn is_invalid_argument(&self) -> bool {
        match self {
            Self::Invalid { .. }
            | Self::UnknownUser { .. }
            | Self::UnknownGroup { .. }
            | Self::SeccompProfile { .. } => true,
            // A missing device was named by the request; any other failure is the host's.
            Self::Device { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            Self::Input { .. } | Self::Build(_) => false,
        }
    }

    fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Checks what RunPodSandbox can know of the specs to come, so a pod that could never run a
/// container is refused at once, naming the field: its sysctls.
pub fn check_sandbox(sandbox: &PodSandboxConfig) -> Result<(), SpecError> {
    namespaces::check_pod_sysctls(sandbox)
}

/// The sandbox's `net.*` sysctls as files under /proc/sys and their values, for the runtime to
/// write inside the pod's network namespace when it makes it. [`check_sandbox`] validates them.
pub fn pod_network_sysctls(sandbox: &PodSandboxConfig) -> Vec<(PathBuf, String)> {
    let Some(linux) = &sandbox.linux else {
        return Vec::new();
    };
    linux
        .sysctls
        .iter()
        .filter(|(name, _)| name.starts_with("net.") || name.starts_with("net/"))
        .map(|(name, value)| {
            // With `/` as the separator a `.` belongs to a component (`eth0.100`).
            let relative = if name.contains('/') {
                name.clone()
            } else {
                name.replace('.', "/")
            };
            (PathBuf::from("/proc/sys").join(relative), value.clone())
        })
        .collect()
}

/// Generates the OCI spec for `config` in `sandbox`, looking host devices up on this host.
pub fn generate(
    config: &ContainerConfig,
    sandbox: &PodSandboxConfig,
    image: &ImageConfiguration,
    inputs: &SpecInputs,
) -> Result<Spec, SpecError> {
    generate_with(config, sandbox, image, inputs, &SystemDevices)
}

/// Generates the OCI spec for `config` in `sandbox`, looking host devices up through `devices`.
pub fn generate_with(
    config: &ContainerConfig,
    sandbox: &PodSandboxConfig,
    image: &ImageConfiguration,
    inputs: &SpecInputs,
    devices: &dyn HostDevices,
) -> Result<Spec, SpecError> {
    if !inputs.cgroups_path.is_absolute() {
        return Err(SpecError::Input {
            input: "cgroups_path",
            reason: format!("{} is not absolute", inputs.cgroups_path.display()),
        });
    }
    let default_sc = LinuxContainerSecurityContext::default();
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .unwrap_or(&default_sc);
    let default_pod_sc = LinuxSandboxSecurityContext::default();
    let pod_sc = sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .unwrap_or(&default_pod_sc);
    if sc.privileged && !pod_sc.privileged {
        return Err(SpecError::invalid(
            "linux.security_context.privileged",
            "a privileged container needs a privileged sandbox \
             (PodSandboxConfig.linux.security_context.privileged)",
        ));
    }
    let image_config = image.config().as_ref();

    let hostname = if inputs.hostname.is_empty() {
        sandbox.hostname.clone()
    } else {
        inputs.hostname.clone()
    };
    let namespaces = namespaces::namespaces(sc, pod_sc, &inputs.namespace_paths, inputs.cgroup_v2)?;
    let mut sysctls = namespaces::sysctls(sandbox, &namespaces)?;
    // net.* ones belong to the pod's network namespace and are set once when it is made
    // ([`pod_network_sysctls`]); libcontainer would also refuse them here, taking the monitor's
    // namespace, which is the pod's, for the host's.
    sysctls.retain(|name, _| !name.starts_with("net."));

    let argv = process::argv(config, image_config)?;
    let env = process::env(config, image_config, &hostname)?;
    let cwd = process::cwd(config, image_config)?;
    let user = user::resolve(
        sc,
        image_config.and_then(|c| c.user().as_deref()),
        inputs.etc_passwd.as_deref(),
        inputs.etc_group.as_deref(),
    )?;

    let caps = security::capabilities(sc, inputs.runtime_capabilities.as_ref())?;
    let resources_in = config.linux.as_ref().and_then(|l| l.resources.as_ref());
    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .user(user)
        .args(argv)
        .env(env)
        .cwd(cwd)
        .capabilities(caps.clone())
        .build()?;
    // Only ever `true` or absent: libcontainer 0.7 takes any value present for "set", and then
    // loads the seccomp filter after dropping CAP_SYS_ADMIN and without no_new_privs, which the
    // kernel refuses.
    process.set_no_new_privileges(sc.no_new_privs.then_some(true));
    // The builders start from oci-spec's sample defaults (an RLIMIT_NOFILE of 1024, the
    // hostname "youki"); those are not ours, so what is not set above is cleared here and the
    // container inherits the monitor's rlimits as it would the shim's under containerd.
    process.set_rlimits(None);
    let oom_score_adj = resources::oom_score_adj(resources_in)?
        .map(|adj| inputs.min_oom_score_adj.map_or(adj, |floor| adj.max(floor)));
    process.set_oom_score_adj(oom_score_adj);

    let devs = devices::devices(config, sc.privileged, devices)?;
    let mut resources = resources::resources(resources_in, inputs)?;
    resources.set_devices(Some(devs.cgroup_rules));

    let mut linux = LinuxBuilder::default()
        .cgroups_path(inputs.cgroups_path.clone())
        .namespaces(namespaces.entries.clone())
        .resources(resources)
        .devices(devs.devices)
        .masked_paths(security::masked_paths(sc))
        .readonly_paths(security::readonly_paths(sc))
        .build()?;
    if !sysctls.is_empty() {
        linux.set_sysctl(Some(sysctls));
    }
    if let Some(p) = mounts::rootfs_propagation(config) {
        linux.set_rootfs_propagation(Some(p.to_string()));
    }
    let effective = caps.effective().clone().unwrap_or_default();
    if let Some(profile) = seccomp::profile(sc, inputs.seccomp_default, &effective)? {
        linux.set_seccomp(Some(profile));
    }

    let mounts = mounts::mounts(config, sc, inputs, &namespaces)?;
    let root = RootBuilder::default()
        .path(inputs.rootfs.clone())
        .readonly(sc.readonly_rootfs)
        .build()?;

    let mut spec = SpecBuilder::default()
        .version(oci_spec::runtime::VERSION)
        .root(root)
        .mounts(mounts)
        .process(process)
        .linux(linux)
        .build()?;
    // libcontainer refuses a hostname without a UTS namespace entry (host-network pods), and the
    // host's name is already what such a container sees.
    spec.set_hostname((namespaces.has_uts && !hostname.is_empty()).then_some(hostname));
    let annotations = annotations(config);
    spec.set_annotations((!annotations.is_empty()).then_some(annotations));
    Ok(spec)
}

/// The CRI annotations pass through; labels stay with the runtime's own records because OCI has
/// no place for them and hooks read annotations only.
fn annotations(config: &ContainerConfig) -> HashMap<String, String> {
    config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests;

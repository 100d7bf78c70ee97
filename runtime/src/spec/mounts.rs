//! The container's mounts: the standard kernel filesystems, the pod's /etc files and shared
//! memory, then the request's bind mounts, which win over anything at the same destination.

use std::path::{Path, PathBuf};

use capstan_proto::{ContainerConfig, LinuxContainerSecurityContext, MountPropagation};
use oci_spec::runtime::{Mount, MountBuilder};

use super::namespaces::Namespaces;
use super::{SpecError, SpecInputs};

pub(super) fn mounts(
    config: &ContainerConfig,
    sc: &LinuxContainerSecurityContext,
    inputs: &SpecInputs,
    ns: &Namespaces,
) -> Result<Vec<Mount>, SpecError> {
    let mut out = standard(sc.privileged)?;
    if !inputs.cgroup_v2 && !inputs.cgroup_v1_hierarchies.is_empty() {
        replace_cgroup_v1(&mut out, sc.privileged, inputs)?;
    }

    // POSIX shared memory is a filesystem, not IPC-namespaced state: containers that share the
    // pod's (or the host's) IPC namespace must also share its /dev/shm to really share memory.
    let shm_source = if ns.host_ipc {
        Some(PathBuf::from("/dev/shm"))
    } else {
        inputs.shm_path.clone()
    };
    if let Some(src) = shm_source {
        replace(
            &mut out,
            bind(
                &src,
                "/dev/shm",
                &["rbind", "rprivate", "nosuid", "nodev", "noexec", "rw"],
            )?,
        );
    }

    // A read-only root means read-only everywhere the container did not ask otherwise, so the
    // pod's /etc files follow it (as in containerd).
    let rw = if sc.readonly_rootfs { "ro" } else { "rw" };
    for (src, dst) in [
        (&inputs.hostname_path, "/etc/hostname"),
        (&inputs.hosts_path, "/etc/hosts"),
        (&inputs.resolv_conf_path, "/etc/resolv.conf"),
    ] {
        if let Some(src) = src {
            replace(&mut out, bind(src, dst, &["rbind", "rprivate", rw])?);
        }
    }

    let mut requested = Vec::with_capacity(config.mounts.len());
    for (i, m) in config.mounts.iter().enumerate() {
        requested.push(requested_mount(i, m)?);
    }
    // Parents before children, whatever order the request used, so that a mount at /data/logs
    // is not hidden by a later one at /data.
    requested.sort_by_key(|m| m.destination().components().count());
    for m in requested {
        replace(&mut out, m);
    }
    Ok(out)
}

/// What the kernel interfaces look like in every container (containerd's set, minus /run which
/// images sometimes ship content in).
fn standard(privileged: bool) -> Result<Vec<Mount>, SpecError> {
    // A privileged container administers the host, which needs writable sysfs and cgroupfs.
    let sys_rw = if privileged { "rw" } else { "ro" };
    let table: [(&str, &str, &str, &[&str]); 7] = [
        ("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        (
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        (
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        (
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_rw],
        ),
        (
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_rw],
        ),
    ];
    table
        .iter()
        .map(|(dst, typ, src, opts)| {
            Ok(MountBuilder::default()
                .destination(*dst)
                .typ(*typ)
                .source(*src)
                .options(opts.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                .build()?)
        })
        .collect()
}

/// On v1, the container's /sys/fs/cgroup as runc makes it: a tmpfs holding, per hierarchy,
/// the container's own cgroup bind-mounted (read-only unless privileged). libcontainer 0.7's
/// own v1 cgroup mount is not used: it derives the cgroup to show from its parent process's,
/// which in the host PID namespace is the pod monitor's, so the container's start failed, and
/// in a PID namespace of its own it showed the hierarchy's root.
fn replace_cgroup_v1(
    out: &mut Vec<Mount>,
    privileged: bool,
    inputs: &SpecInputs,
) -> Result<(), SpecError> {
    const ROOT: &str = "/sys/fs/cgroup";
    out.retain(|m| clean(m.destination()) != Path::new(ROOT));
    out.push(
        MountBuilder::default()
            .destination(ROOT)
            .typ("tmpfs")
            .source("tmpfs")
            .options(
                ["nosuid", "noexec", "nodev", "mode=755"]
                    .iter()
                    .map(|o| o.to_string())
                    .collect::<Vec<_>>(),
            )
            .build()?,
    );
    let own = inputs
        .cgroups_path
        .strip_prefix("/")
        .unwrap_or(&inputs.cgroups_path);
    let rw = if privileged { "rw" } else { "ro" };
    for hierarchy in &inputs.cgroup_v1_hierarchies {
        let Some(name) = hierarchy.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // A co-mounted hierarchy (cpu,cpuacct) is also reached under each controller's name,
        // as the host's symlinks make it.
        let mut names = vec![name];
        if name.contains(',') {
            names.extend(name.split(','));
        }
        for dst in names {
            out.push(bind(
                &hierarchy.join(own),
                &format!("{ROOT}/{dst}"),
                &["rbind", "nosuid", "noexec", "nodev", rw],
            )?);
        }
    }
    Ok(())
}

fn requested_mount(i: usize, m: &capstan_proto::Mount) -> Result<Mount, SpecError> {
    let field = |name: &str| format!("mounts[{i}].{name}");
    if m.image.as_ref().is_some_and(|img| !img.image.is_empty()) {
        return Err(SpecError::invalid(
            field("image"),
            "image volumes are not supported",
        ));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(SpecError::invalid(
            field("uid_mappings"),
            "ID-mapped mounts need user namespaces, which are not supported",
        ));
    }
    if !m.container_path.starts_with('/') {
        return Err(SpecError::invalid(
            field("container_path"),
            format!("{:?} is not an absolute path", m.container_path),
        ));
    }
    if !m.host_path.starts_with('/') {
        return Err(SpecError::invalid(
            field("host_path"),
            format!("{:?} is not an absolute path", m.host_path),
        ));
    }
    let propagation = match MountPropagation::try_from(m.propagation) {
        Ok(MountPropagation::PropagationPrivate) => "rprivate",
        Ok(MountPropagation::PropagationHostToContainer) => "rslave",
        Ok(MountPropagation::PropagationBidirectional) => "rshared",
        Err(_) => {
            return Err(SpecError::invalid(
                field("propagation"),
                format!("unknown propagation {}", m.propagation),
            ));
        }
    };
    let mut opts = vec!["rbind", propagation, if m.readonly { "ro" } else { "rw" }];
    if m.recursive_read_only {
        // The kernel can only make the whole tree read-only where no submount can appear later.
        if !m.readonly || propagation != "rprivate" {
            return Err(SpecError::invalid(
                field("recursive_read_only"),
                "needs readonly and private propagation",
            ));
        }
        opts.push("rro");
    }
    // SELinux relabelling is not done: the runtime does not manage SELinux labels at all.
    bind(Path::new(&m.host_path), &m.container_path, &opts)
}

fn bind(src: &Path, dst: &str, opts: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dst)
        .typ("bind")
        .source(src)
        .options(opts.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// Drops any earlier mount at the same destination and appends `m`.
fn replace(mounts: &mut Vec<Mount>, m: Mount) {
    let dst = clean(m.destination());
    mounts.retain(|old| clean(old.destination()) != dst);
    mounts.push(m);
}

/// `/data/` and `/data` are the same destination.
fn clean(p: &Path) -> PathBuf {
    p.components().collect()
}

/// The root mount must propagate at least as much as the most open bind mount, or the
/// kernel cannot deliver events into it. The values are OCI's (`shared`, `slave`; recursion
/// is implied), the only ones libcontainer accepts: `rshared` failed the container's start.
pub(super) fn rootfs_propagation(config: &ContainerConfig) -> Option<&'static str> {
    let has = |p: MountPropagation| config.mounts.iter().any(|m| m.propagation == p as i32);
    if has(MountPropagation::PropagationBidirectional) {
        Some("shared")
    } else if has(MountPropagation::PropagationHostToContainer) {
        Some("slave")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_proto::Mount as CriMount;

    fn ns(host_ipc: bool) -> Namespaces {
        Namespaces {
            entries: Vec::new(),
            host_network: false,
            host_ipc,
            has_uts: true,
        }
    }

    fn find<'a>(mounts: &'a [Mount], dst: &str) -> &'a Mount {
        mounts
            .iter()
            .find(|m| m.destination() == Path::new(dst))
            .unwrap_or_else(|| panic!("no mount at {dst}"))
    }

    fn opts(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    fn cri(container: &str, host: &str, ro: bool, p: MountPropagation) -> CriMount {
        CriMount {
            container_path: container.into(),
            host_path: host.into(),
            readonly: ro,
            propagation: p as i32,
            ..Default::default()
        }
    }

    #[test]
    fn standard_mounts_sys_ro_unless_privileged() {
        let sc = LinuxContainerSecurityContext::default();
        let m = mounts(&Default::default(), &sc, &SpecInputs::default(), &ns(false)).unwrap();
        for dst in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
        ] {
            find(&m, dst);
        }
        assert!(opts(find(&m, "/sys")).contains(&"ro".to_string()));
        assert!(opts(find(&m, "/sys/fs/cgroup")).contains(&"ro".to_string()));
        assert_eq!(find(&m, "/dev/shm").typ().as_deref(), Some("tmpfs"));

        let sc = LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        let m = mounts(&Default::default(), &sc, &SpecInputs::default(), &ns(false)).unwrap();
        assert!(opts(find(&m, "/sys")).contains(&"rw".to_string()));
        assert!(opts(find(&m, "/sys/fs/cgroup")).contains(&"rw".to_string()));
    }

    #[test]
    fn cri_mounts_carry_readonly_and_propagation() {
        let config = ContainerConfig {
            mounts: vec![
                cri("/a", "/host/a", true, MountPropagation::PropagationPrivate),
                cri(
                    "/b",
                    "/host/b",
                    false,
                    MountPropagation::PropagationHostToContainer,
                ),
                cri(
                    "/c",
                    "/host/c",
                    false,
                    MountPropagation::PropagationBidirectional,
                ),
            ],
            ..Default::default()
        };
        let sc = LinuxContainerSecurityContext::default();
        let m = mounts(&config, &sc, &SpecInputs::default(), &ns(false)).unwrap();
        let a = find(&m, "/a");
        assert_eq!(a.typ().as_deref(), Some("bind"));
        assert_eq!(a.source().as_deref(), Some(Path::new("/host/a")));
        assert_eq!(opts(a), ["rbind", "rprivate", "ro"]);
        assert_eq!(opts(find(&m, "/b")), ["rbind", "rslave", "rw"]);
        assert_eq!(opts(find(&m, "/c")), ["rbind", "rshared", "rw"]);
        assert_eq!(rootfs_propagation(&config), Some("shared"));
        let slave_only = ContainerConfig {
            mounts: config.mounts[..2].to_vec(),
            ..Default::default()
        };
        assert_eq!(rootfs_propagation(&slave_only), Some("slave"));
        assert_eq!(rootfs_propagation(&ContainerConfig::default()), None);
    }

    #[test]
    fn v1_cgroupfs_shows_the_containers_own_cgroups() {
        let inputs = SpecInputs {
            cgroups_path: "/kubepods/pod1/c1".into(),
            cgroup_v1_hierarchies: vec![
                "/sys/fs/cgroup/memory".into(),
                "/sys/fs/cgroup/cpu,cpuacct".into(),
            ],
            ..Default::default()
        };
        let sc = LinuxContainerSecurityContext::default();
        let m = mounts(&Default::default(), &sc, &inputs, &ns(false)).unwrap();
        assert_eq!(find(&m, "/sys/fs/cgroup").typ().as_deref(), Some("tmpfs"));
        let memory = find(&m, "/sys/fs/cgroup/memory");
        assert_eq!(
            memory.source().as_deref(),
            Some(Path::new("/sys/fs/cgroup/memory/kubepods/pod1/c1"))
        );
        assert!(opts(memory).contains(&"ro".to_string()));
        for dst in ["cpu,cpuacct", "cpu", "cpuacct"] {
            assert_eq!(
                find(&m, &format!("/sys/fs/cgroup/{dst}"))
                    .source()
                    .as_deref(),
                Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/c1"))
            );
        }
        let privileged = LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        let m = mounts(&Default::default(), &privileged, &inputs, &ns(false)).unwrap();
        assert!(opts(find(&m, "/sys/fs/cgroup/memory")).contains(&"rw".to_string()));
        // On v2 the cgroup namespace does it.
        let v2 = SpecInputs {
            cgroup_v2: true,
            ..inputs
        };
        let m = mounts(&Default::default(), &sc, &v2, &ns(false)).unwrap();
        assert_eq!(find(&m, "/sys/fs/cgroup").typ().as_deref(), Some("cgroup"));
    }

    #[test]
    fn recursive_read_only() {
        let mut m = cri("/a", "/host/a", true, MountPropagation::PropagationPrivate);
        m.recursive_read_only = true;
        assert_eq!(
            opts(&requested_mount(0, &m).unwrap()),
            ["rbind", "rprivate", "ro", "rro"]
        );
        m.readonly = false;
        let err = requested_mount(0, &m).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("mounts[0].recursive_read_only: "),
            "{err}"
        );
    }

    #[test]
    fn etc_files_follow_readonly_rootfs_and_cri_mounts_win() {
        let inputs = SpecInputs {
            hostname_path: Some("/pod/hostname".into()),
            hosts_path: Some("/pod/hosts".into()),
            resolv_conf_path: Some("/pod/resolv.conf".into()),
            ..Default::default()
        };
        let sc = LinuxContainerSecurityContext {
            readonly_rootfs: true,
            ..Default::default()
        };
        let config = ContainerConfig {
            mounts: vec![cri(
                "/etc/hosts/",
                "/mine/hosts",
                false,
                MountPropagation::PropagationPrivate,
            )],
            ..Default::default()
        };
        let m = mounts(&config, &sc, &inputs, &ns(false)).unwrap();
        assert_eq!(
            opts(find(&m, "/etc/resolv.conf")),
            ["rbind", "rprivate", "ro"]
        );
        assert_eq!(
            find(&m, "/etc/hostname").source().as_deref(),
            Some(Path::new("/pod/hostname"))
        );
        let hosts: Vec<_> = m
            .iter()
            .filter(|x| clean(x.destination()) == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].source().as_deref(), Some(Path::new("/mine/hosts")));
    }

    #[test]
    fn shm_comes_from_the_pod_or_the_host() {
        let sc = LinuxContainerSecurityContext::default();
        let inputs = SpecInputs {
            shm_path: Some("/pod/shm".into()),
            ..Default::default()
        };
        let m = mounts(&Default::default(), &sc, &inputs, &ns(false)).unwrap();
        assert_eq!(
            find(&m, "/dev/shm").source().as_deref(),
            Some(Path::new("/pod/shm"))
        );
        let m = mounts(&Default::default(), &sc, &SpecInputs::default(), &ns(true)).unwrap();
        assert_eq!(
            find(&m, "/dev/shm").source().as_deref(),
            Some(Path::new("/dev/shm"))
        );
    }

    #[test]
    fn parents_mount_before_children() {
        let config = ContainerConfig {
            mounts: vec![
                cri(
                    "/data/logs",
                    "/h/logs",
                    false,
                    MountPropagation::PropagationPrivate,
                ),
                cri(
                    "/data",
                    "/h/data",
                    false,
                    MountPropagation::PropagationPrivate,
                ),
            ],
            ..Default::default()
        };
        let m = mounts(
            &config,
            &Default::default(),
            &SpecInputs::default(),
            &ns(false),
        )
        .unwrap();
        let pos = |d: &str| {
            m.iter()
                .position(|x| x.destination() == Path::new(d))
                .unwrap()
        };
        assert!(pos("/data") < pos("/data/logs"));
    }

    #[test]
    fn bad_mounts_are_named() {
        let cases = [
            (
                cri("rel", "/h", false, MountPropagation::PropagationPrivate),
                "container_path",
            ),
            (
                cri("/a", "", false, MountPropagation::PropagationPrivate),
                "host_path",
            ),
            (
                CriMount {
                    propagation: 7,
                    ..cri("/a", "/h", false, MountPropagation::PropagationPrivate)
                },
                "propagation",
            ),
        ];
        for (m, f) in cases {
            let err = requested_mount(3, &m).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("mounts[3].{f}: ")),
                "{err}"
            );
        }
    }
}

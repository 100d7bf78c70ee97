//! A container's volumeMounts as CRI mounts: subPath and subPathExpr resolved inside their
//! volume and bind-mounted below `<pod_dir>/volume-subpaths/` from a descriptor opened without
//! following symlinks (so a container cannot redirect the mount out of the volume between the
//! check and the runtime's mount), read-only and propagation modes, and the termination
//! message file.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use capstan_proto::{KeyValue, Mount, MountPropagation};
use k8s_openapi::api::core::v1::{Container, Pod};
use nix::fcntl::{OFlag, openat};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag, fstat};

use super::{PodVolumes, PreparedVolume, VolumeError, mount_table};
use crate::pods::downward::container_path;
use crate::pods::env::expand;

/// Where a container's termination message goes unless its spec says otherwise.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// The host file behind one container instance's termination message:
/// `<pod_dir>/containers/<name>/<restart_count>`. Each instance gets a file of its own, so a
/// restarted container cannot see or clobber its predecessor's message.
pub fn termination_log_path(pod_dir: &Path, container_name: &str, restart_count: u32) -> PathBuf {
    pod_dir
        .join("containers")
        .join(container_name)
        .join(restart_count.to_string())
}

/// Expands a subPathExpr; every referenced variable must be set and not empty, as the kubelet
/// requires.
fn expand_sub_path(expr: &str, env: &[KeyValue]) -> Result<String, String> {
    let mut missing = BTreeSet::new();
    let expanded = expand(expr, |name| {
        match env.iter().rev().find(|kv| kv.key == name) {
            Some(kv) if !kv.value.is_empty() => Some(kv.value.clone()),
            _ => {
                missing.insert(name.to_string());
                Some(String::new())
            }
        }
    });
    if missing.is_empty() {
        Ok(expanded)
    } else {
        Err(format!(
            "missing value for {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        ))
    }
}

/// Resolves `sub` inside the volume, component by component: a missing directory is created
/// with the volume's mode (so it gets the same permissions), and a symlink may not lead out of
/// the volume. Returns the resolved path, which is what the runtime bind-mounts, so a symlink
/// swapped in later cannot redirect the mount.
fn resolve_sub_path(volume: &PreparedVolume, sub: &str) -> Result<(PathBuf, PathBuf), String> {
    let p = Path::new(sub);
    if p.is_absolute() {
        return Err(format!("{sub} must not be an absolute path"));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{sub} must not contain '..'"));
    }
    let base = fs::canonicalize(&volume.path).map_err(|e| {
        format!(
            "cannot resolve the volume path {}: {e}",
            volume.path.display()
        )
    })?;
    let mode = fs::metadata(&base)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o755);
    let mut current = base.clone();
    for component in p.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        let next = current.join(name);
        match fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::canonicalize(&next)
                    .map_err(|e| format!("{sub}: cannot resolve {}: {e}", next.display()))?;
                if !target.starts_with(&base) {
                    return Err(format!(
                        "{sub} resolves to {} outside the volume",
                        target.display()
                    ));
                }
                current = target;
            }
            Ok(_) => current = next,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&next)
                    .and_then(|()| fs::set_permissions(&next, fs::Permissions::from_mode(mode)))
                    .map_err(|e| format!("cannot create {sub} in the volume: {e}"))?;
                current = next;
            }
            Err(e) => return Err(format!("{sub}: cannot stat {}: {e}", next.display())),
        }
    }
    Ok((base, current))
}

/// Opens `resolved` (inside `base`) one component at a time without following symlinks, so a
/// component a container swapped for a symlink since [`resolve_sub_path`] is refused rather
/// than followed out of the volume.
pub(super) fn open_no_follow(base: &Path, resolved: &Path) -> io::Result<OwnedFd> {
    let rel = resolved
        .strip_prefix(base)
        .map_err(|_| io::Error::other("the sub path left the volume"))?;
    let mut fd: OwnedFd = fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).bits())
        .open(base)?
        .into();
    let names: Vec<_> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    for (i, name) in names.iter().enumerate() {
        let mut flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if i + 1 < names.len() {
            flags |= OFlag::O_DIRECTORY;
        }
        let raw = openat(Some(fd.as_raw_fd()), *name, flags, Mode::empty())?;
        // SAFETY: openat just returned this descriptor; nothing else owns or closes it.
        fd = unsafe { OwnedFd::from_raw_fd(raw) };
    }
    // O_PATH|O_NOFOLLOW opens a final symlink itself instead of failing: refuse it here.
    let stat = fstat(fd.as_raw_fd())?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
        return Err(io::Error::other("the sub path is a symlink"));
    }
    Ok(fd)
}

fn make_mount_point(target: &Path, is_dir: bool) -> io::Result<()> {
    if is_dir {
        fs::create_dir(target)
    } else {
        fs::File::create(target).map(drop)
    }
}

/// Bind-mounts the sub path, opened safely, at `target` (as the kubelet's PrepareSafeSubpath
/// does below `volume-subpaths/`), so what the runtime mounts is exactly what was checked.
fn bind_safe_sub_path(base: &Path, resolved: &Path, target: &Path) -> io::Result<()> {
    let fd = open_no_follow(base, resolved)?;
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let is_dir = fs::metadata(&source)?.is_dir();
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    // A restarted container binds afresh: the sub path may have changed meanwhile.
    if mount_table::is_mount_point(target)? {
        mount_table::unmount(target)?;
    }
    // The mount point is ours: one of the wrong kind (the sub path changed from a directory
    // to a file, say) is replaced. Only an empty directory can go, so nothing is lost.
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() == is_dir && !m.file_type().is_symlink() => {}
        Ok(m) => {
            if m.is_dir() {
                fs::remove_dir(target)?;
            } else {
                fs::remove_file(target)?;
            }
            make_mount_point(target, is_dir)?;
        }
        Err(_) => make_mount_point(target, is_dir)?,
    }
    mount(
        Some(source.as_path()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

fn propagation(mode: Option<&str>, privileged: bool) -> Result<MountPropagation, String> {
    match mode.unwrap_or("None") {
        "None" => Ok(MountPropagation::PropagationPrivate),
        "HostToContainer" => Ok(MountPropagation::PropagationHostToContainer),
        "Bidirectional" if privileged => Ok(MountPropagation::PropagationBidirectional),
        "Bidirectional" => {
            Err("Bidirectional mount propagation is available only to privileged containers".into())
        }
        other => Err(format!("unknown mount propagation {other:?}")),
    }
}

/// Creates the empty termination message file of one container instance, writable by any user
/// the container runs as.
fn make_termination_log(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, b"")?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))
}

impl PodVolumes {
    /// The CRI mounts of `container` (instance `restart_count`): its volumeMounts, then the
    /// termination message file. `env` is the container's environment, for subPathExpr.
    pub fn mounts_for(
        &self,
        pod: &Pod,
        container: &Container,
        env: &[KeyValue],
        restart_count: u32,
    ) -> Result<Vec<Mount>, VolumeError> {
        let base = container_path(pod, &container.name);
        let privileged = container
            .security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false);
        let mut mounts = Vec::new();
        for (i, vm) in container.volume_mounts.iter().flatten().enumerate() {
            let field = format!("{base}.volumeMounts[{i}]");
            let volume = self.volumes.get(&vm.name).ok_or_else(|| {
                VolumeError::new(
                    format!("{field}.name"),
                    format!("no volume named {:?} in spec.volumes", vm.name),
                )
            })?;
            let sub = match (vm.sub_path.as_deref(), vm.sub_path_expr.as_deref()) {
                (Some(s), _) if !s.is_empty() => Some((s.to_string(), "subPath")),
                (_, Some(expr)) if !expr.is_empty() => {
                    let s = expand_sub_path(expr, env)
                        .map_err(|e| VolumeError::new(format!("{field}.subPathExpr"), e))?;
                    Some((s, "subPathExpr"))
                }
                _ => None,
            };
            let host_path = match sub {
                Some((s, which)) if !s.is_empty() => {
                    let at = |e: String| VolumeError::new(format!("{field}.{which}"), e);
                    let (base, resolved) = resolve_sub_path(volume, &s).map_err(at)?;
                    let target = self
                        .pod_dir
                        .join("volume-subpaths")
                        .join(&vm.name)
                        .join(&container.name)
                        .join(i.to_string());
                    bind_safe_sub_path(&base, &resolved, &target)
                        .map_err(|e| at(format!("cannot mount {s} safely: {e}")))?;
                    target
                }
                _ => volume.path.clone(),
            };
            let propagation = propagation(vm.mount_propagation.as_deref(), privileged)
                .map_err(|e| VolumeError::new(format!("{field}.mountPropagation"), e))?;
            let readonly = vm.read_only == Some(true) || volume.kind.always_read_only();
            let recursive = vm.recursive_read_only.as_deref() == Some("Enabled");
            if recursive && vm.read_only != Some(true) {
                return Err(VolumeError::new(
                    format!("{field}.recursiveReadOnly"),
                    "Enabled requires readOnly",
                ));
            }
            mounts.push(Mount {
                container_path: vm.mount_path.clone(),
                host_path: host_path.to_string_lossy().into_owned(),
                readonly,
                propagation: propagation as i32,
                recursive_read_only: recursive,
                ..Default::default()
            });
        }

        let message_path = container
            .termination_message_path
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(DEFAULT_TERMINATION_MESSAGE_PATH);
        let log = termination_log_path(&self.pod_dir, &container.name, restart_count);
        make_termination_log(&log).map_err(|e| {
            VolumeError::new(
                format!("{base}.terminationMessagePath"),
                format!("cannot create {}: {e}", log.display()),
            )
        })?;
        mounts.push(Mount {
            container_path: message_path.to_string(),
            host_path: log.to_string_lossy().into_owned(),
            ..Default::default()
        });
        Ok(mounts)
    }
}

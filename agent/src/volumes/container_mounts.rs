//! A container's volumeMounts as CRI mounts: subPath and subPathExpr resolved safely inside
//! their volume, read-only and propagation modes, and the termination message file.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use capstan_proto::{KeyValue, Mount, MountPropagation};
use k8s_openapi::api::core::v1::{Container, Pod};

use super::{PodVolumes, PreparedVolume, VolumeError};
use crate::downward::container_path;
use crate::env::expand;

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
fn resolve_sub_path(volume: &PreparedVolume, sub: &str) -> Result<PathBuf, String> {
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
    Ok(current)
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
                Some((s, which)) if !s.is_empty() => resolve_sub_path(volume, &s)
                    .map_err(|e| VolumeError::new(format!("{field}.{which}"), e))?,
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

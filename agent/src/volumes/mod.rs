//! A pod's volumes on the host, laid out as the kubelet lays them out:
//! `<pod_dir>/volumes/kubernetes.io~<plugin>/<volume name>`. [`prepare`] makes them before the
//! pod's containers start, [`PodVolumes::mounts_for`] turns a container's volumeMounts into CRI
//! mounts, [`PodVolumes::refresh`] rewrites ConfigMap, Secret and downward API files when their
//! source changed, and [`teardown`] removes it all, mounts included.

pub mod atomic;
mod container_mounts;
mod etc_hosts;
pub mod host_path;
pub mod mount_table;
mod ownership;
mod payload;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, Volume};

use crate::objects::ObjectLookup;
use crate::pods::downward::PodRuntimeInfo;
use crate::pods::resources;

pub use container_mounts::{DEFAULT_TERMINATION_MESSAGE_PATH, termination_log_path};
pub use etc_hosts::{ETC_HOSTS, etc_hosts_mount, etc_hosts_path, pod_hostname};
pub use payload::DEFAULT_MODE;

/// A volume or mount that cannot be set up, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct VolumeError {
    /// The field, such as `spec.volumes[2].hostPath.path`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl VolumeError {
    /// The name of the volume the error is about, when its field names one of `pod`'s.
    pub fn volume_name<'a>(&self, pod: &'a Pod) -> Option<&'a str> {
        let index: usize = self
            .field
            .strip_prefix("spec.volumes[")?
            .split(']')
            .next()?
            .parse()
            .ok()?;
        let volume = pod.spec.as_ref()?.volumes.as_ref()?.get(index)?;
        Some(volume.name.as_str())
    }

    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        VolumeError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The kinds of volume a node without an API server can provide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    /// A directory of the pod's own; on tmpfs with `medium: Memory`.
    EmptyDir {
        /// Whether it is a tmpfs.
        memory: bool,
    },
    /// A path of the host.
    HostPath,
    /// The keys of a ConfigMap.
    ConfigMap,
    /// The keys of a Secret, on tmpfs.
    Secret,
    /// Pod fields and container resources, on tmpfs.
    DownwardApi,
    /// Several of the above in one directory, on tmpfs.
    Projected,
}

impl VolumeKind {
    /// The plugin directory name below `volumes/`, as the kubelet names it.
    pub fn plugin_dir(self) -> &'static str {
        match self {
            VolumeKind::EmptyDir { .. } => "kubernetes.io~empty-dir",
            VolumeKind::HostPath => "kubernetes.io~host-path",
            VolumeKind::ConfigMap => "kubernetes.io~configmap",
            VolumeKind::Secret => "kubernetes.io~secret",
            VolumeKind::DownwardApi => "kubernetes.io~downward-api",
            VolumeKind::Projected => "kubernetes.io~projected",
        }
    }

    /// Volumes the API owns the content of are always mounted read-only (since Kubernetes
    /// 1.10), so a container cannot corrupt what the node writes there.
    pub fn always_read_only(self) -> bool {
        matches!(
            self,
            VolumeKind::ConfigMap
                | VolumeKind::Secret
                | VolumeKind::DownwardApi
                | VolumeKind::Projected
        )
    }

    /// Whether the volume's files come from the API and are rewritten by refresh.
    fn has_payload(self) -> bool {
        self.always_read_only()
    }

    /// Whether the volume directory is a tmpfs of its own.
    fn on_tmpfs(self) -> bool {
        matches!(
            self,
            VolumeKind::EmptyDir { memory: true }
                | VolumeKind::Secret
                | VolumeKind::DownwardApi
                | VolumeKind::Projected
        )
    }
}

/// One prepared volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedVolume {
    /// Index in `spec.volumes`, for error messages.
    pub index: usize,
    /// What it is.
    pub kind: VolumeKind,
    /// The host path containers mount.
    pub path: PathBuf,
}

/// A pod's prepared volumes, by name.
#[derive(Debug, Clone, Default)]
pub struct PodVolumes {
    pod_dir: PathBuf,
    volumes: BTreeMap<String, PreparedVolume>,
}

impl PodVolumes {
    /// The pod's directory.
    pub fn pod_dir(&self) -> &Path {
        &self.pod_dir
    }

    /// The prepared volume `name`.
    pub fn get(&self, name: &str) -> Option<&PreparedVolume> {
        self.volumes.get(name)
    }

    /// Rewrites the files of configMap, secret, downwardAPI and projected volumes whose sources
    /// changed, each atomically. Returns the names of the volumes that changed.
    pub fn refresh(
        &self,
        pod: &Pod,
        objects: &dyn ObjectLookup,
        info: &PodRuntimeInfo,
    ) -> Result<Vec<String>, VolumeError> {
        let mut changed = Vec::new();
        let specs = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        for (name, prepared) in &self.volumes {
            if !prepared.kind.has_payload() {
                continue;
            }
            let Some(volume) = specs.and_then(|v| v.get(prepared.index)) else {
                continue;
            };
            let field = format!("spec.volumes[{}]", prepared.index);
            let payload = volume_payload(pod, volume, objects, info, &field)?;
            let wrote = atomic::write(&prepared.path, &payload)
                .map_err(|e| VolumeError::new(&field, format!("cannot write files: {e}")))?;
            if wrote {
                if let Some(gid) = fs_group(pod) {
                    ownership::apply_fs_group(&prepared.path, gid, true).map_err(|e| {
                        VolumeError::new(&field, format!("cannot apply fsGroup {gid}: {e}"))
                    })?;
                }
                changed.push(name.clone());
            }
        }
        Ok(changed)
    }
}

/// The name of the source a volume uses (`persistentVolumeClaim`, say), for errors about
/// sources this node does not provide.
fn source_name(volume: &Volume) -> String {
    serde_json::to_value(volume)
        .ok()
        .and_then(|v| {
            v.as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        })
        .unwrap_or_else(|| "none".to_string())
}

fn kind_of(volume: &Volume) -> Option<VolumeKind> {
    if let Some(e) = &volume.empty_dir {
        return Some(VolumeKind::EmptyDir {
            memory: e.medium.as_deref() == Some("Memory"),
        });
    }
    if volume.host_path.is_some() {
        return Some(VolumeKind::HostPath);
    }
    if volume.config_map.is_some() {
        return Some(VolumeKind::ConfigMap);
    }
    if volume.secret.is_some() {
        return Some(VolumeKind::Secret);
    }
    if volume.downward_api.is_some() {
        return Some(VolumeKind::DownwardApi);
    }
    if volume.projected.is_some() {
        return Some(VolumeKind::Projected);
    }
    None
}

/// The size of a memory-backed volume, as the kubelet computes it (SizeMemoryBackedVolumes): the
/// node's allocatable memory, lowered to the pod's memory limit and to the volume's sizeLimit.
fn memory_volume_size(pod: &Pod, info: &PodRuntimeInfo, size_limit: Option<i64>) -> Option<i64> {
    let mut size =
        (info.node_allocatable_memory_bytes > 0).then_some(info.node_allocatable_memory_bytes);
    let lower = |size: Option<i64>, candidate: Option<i64>| match (size, candidate) {
        (_, None) => size,
        (_, Some(c)) if c <= 0 => size,
        (None, Some(c)) => Some(c),
        (Some(s), Some(c)) => Some(s.min(c)),
    };
    size = lower(size, resources::pod_limits(pod).memory);
    lower(size, size_limit)
}

/// The pod's fsGroup, which volumes other than hostPath are given to.
fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|c| c.fs_group)
        .and_then(|g| u32::try_from(g).ok())
}

/// The files an API-data volume holds.
fn volume_payload(
    pod: &Pod,
    volume: &Volume,
    objects: &dyn ObjectLookup,
    info: &PodRuntimeInfo,
    field: &str,
) -> Result<atomic::Payload, VolumeError> {
    let mut payload = api_payload(pod, volume, objects, info, field)?;
    // With an fsGroup every file is group-readable (SetVolumeOwnership's read-only mask); doing
    // it in the payload keeps an unchanged source from looking changed on the next refresh.
    if fs_group(pod).is_some() {
        for file in payload.values_mut() {
            file.mode |= 0o440;
        }
    }
    Ok(payload)
}

fn api_payload(
    pod: &Pod,
    volume: &Volume,
    objects: &dyn ObjectLookup,
    info: &PodRuntimeInfo,
    field: &str,
) -> Result<atomic::Payload, VolumeError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let err = |e: payload::PayloadError| VolumeError::new(format!("{field}.{}", e.field), e.reason);
    if let Some(cm) = &volume.config_map {
        return payload::config_map(
            objects,
            namespace,
            &cm.name,
            cm.items.as_ref(),
            cm.default_mode,
            cm.optional == Some(true),
            "configMap",
        )
        .map_err(err);
    }
    if let Some(s) = &volume.secret {
        let name = s.secret_name.as_deref().unwrap_or("");
        return payload::secret(
            objects,
            namespace,
            name,
            s.items.as_ref(),
            s.default_mode,
            s.optional == Some(true),
            "secret",
        )
        .map_err(err);
    }
    if let Some(d) = &volume.downward_api {
        return payload::downward_api(
            pod,
            info,
            d.items.as_deref().unwrap_or_default(),
            d.default_mode,
            "downwardAPI",
        )
        .map_err(err);
    }
    if let Some(p) = &volume.projected {
        return payload::projected(pod, info, objects, p, "projected").map_err(err);
    }
    Ok(atomic::Payload::new())
}

/// What a failing [`prepare`] has to undo: only what this call made.
#[derive(Default)]
struct Undo {
    mounts: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Undo {
    fn run(self) {
        for m in self.mounts.iter().rev() {
            if let Err(e) = mount_table::unmount(m) {
                tracing::warn!(path = %m.display(), error = %e, "cannot unmount after a failed volume setup");
            }
        }
        for d in self.dirs.iter().rev() {
            if let Err(e) = fs::remove_dir_all(d) {
                tracing::warn!(path = %d.display(), error = %e, "cannot remove after a failed volume setup");
            }
        }
    }
}

/// Creates `dir` (and its parents) if missing; records it for undo when this call made it.
fn make_dir(dir: &Path, mode: u32, undo: &mut Undo) -> io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    // Beyond the umask: an emptyDir is writable by every user of the pod.
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    undo.dirs.push(dir.to_path_buf());
    Ok(())
}

fn prepare_one(
    pod: &Pod,
    pod_dir: &Path,
    index: usize,
    volume: &Volume,
    objects: &dyn ObjectLookup,
    info: &PodRuntimeInfo,
    undo: &mut Undo,
) -> Result<PreparedVolume, VolumeError> {
    let field = format!("spec.volumes[{index}]");
    let kind = kind_of(volume).ok_or_else(|| {
        VolumeError::new(
            &field,
            format!(
                "volume {:?}: source {} is not supported on this node",
                volume.name,
                source_name(volume)
            ),
        )
    })?;
    let io_err = |what: &str, e: io::Error| VolumeError::new(&field, format!("{what}: {e}"));

    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        if !path.is_absolute() {
            return Err(VolumeError::new(
                format!("{field}.hostPath.path"),
                format!("{} must be an absolute path", host.path),
            ));
        }
        host_path::check(&path, host.type_.as_deref().unwrap_or(""))
            .map_err(|e| VolumeError::new(format!("{field}.hostPath.path"), e))?;
        return Ok(PreparedVolume { index, kind, path });
    }

    let path = pod_dir
        .join("volumes")
        .join(kind.plugin_dir())
        .join(&volume.name);
    let fresh = !path.exists();
    make_dir(&path, 0o777, undo).map_err(|e| io_err("cannot create the volume directory", e))?;

    if kind.on_tmpfs() {
        let already = mount_table::is_mount_point(&path)
            .map_err(|e| io_err("cannot read the mount table", e))?;
        if !already {
            let size_limit = volume
                .empty_dir
                .as_ref()
                .and_then(|e| e.size_limit.as_ref())
                .map(resources::bytes);
            let size = memory_volume_size(pod, info, size_limit);
            mount_table::mount_tmpfs(&path, size).map_err(|e| io_err("cannot mount a tmpfs", e))?;
            undo.mounts.push(path.clone());
        }
    }

    let mut wrote = false;
    if kind.has_payload() {
        let payload = volume_payload(pod, volume, objects, info, &field)?;
        wrote = atomic::write(&path, &payload).map_err(|e| io_err("cannot write files", e))?;
    }
    // An emptyDir is given to the group once, when made (walking a full one again after an
    // agent restart would cost for nothing); API data whenever it was written.
    if let Some(gid) = fs_group(pod) {
        if wrote || (fresh && matches!(kind, VolumeKind::EmptyDir { .. })) {
            ownership::apply_fs_group(&path, gid, kind.always_read_only())
                .map_err(|e| io_err(&format!("cannot apply fsGroup {gid}"), e))?;
        }
    }
    Ok(PreparedVolume { index, kind, path })
}

/// Prepares every volume of `pod` below `pod_dir`: creates directories, mounts tmpfs, checks host
/// paths and writes ConfigMap, Secret and downward API files. Running it again for a running pod
/// keeps what is there. On error it undoes what it made, and nothing is left behind.
pub fn prepare(
    pod: &Pod,
    pod_dir: &Path,
    objects: &dyn ObjectLookup,
    info: &PodRuntimeInfo,
) -> Result<PodVolumes, VolumeError> {
    let mut undo = Undo::default();
    let made_pod_dir = !pod_dir.exists();
    let result = (|| {
        fs::create_dir_all(pod_dir).map_err(|e| {
            VolumeError::new(
                "metadata.uid",
                format!("cannot create the pod directory {}: {e}", pod_dir.display()),
            )
        })?;
        let mut volumes = BTreeMap::new();
        for (i, volume) in pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let prepared = prepare_one(pod, pod_dir, i, volume, objects, info, &mut undo)?;
            volumes.insert(volume.name.clone(), prepared);
        }
        Ok(PodVolumes {
            pod_dir: pod_dir.to_path_buf(),
            volumes,
        })
    })();
    if result.is_err() {
        undo.run();
        if made_pod_dir {
            if let Err(e) = teardown(pod_dir) {
                tracing::warn!(path = %pod_dir.display(), error = %e, "cannot remove the pod directory after a failed volume setup");
            }
        }
    }
    result
}

/// Unmounts everything below `pod_dir` (tmpfs volumes, and anything else mounted there) and
/// removes it. A missing directory is fine: teardown may run twice.
pub fn teardown(pod_dir: &Path) -> io::Result<()> {
    if !pod_dir.exists() {
        return Ok(());
    }
    mount_table::unmount_below(pod_dir)?;
    fs::remove_dir_all(pod_dir)
}

#[cfg(test)]
mod tests;

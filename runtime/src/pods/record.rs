//! What the runtime remembers of each sandbox and container, one JSON file each under the
//! state directory, so a restarted daemon sees exactly what it left.

use std::path::{Path, PathBuf};

use capstan_proto::{ContainerConfig, PodSandboxConfig};
use serde::{Deserialize, Serialize};

use super::error::{PodError, Result};

/// File name of a sandbox record in its state directory.
pub const SANDBOX_FILE: &str = "sandbox.json";
/// File name of a container record in its state directory.
pub const CONTAINER_FILE: &str = "container.json";

/// A pod sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// Sandbox ID.
    pub id: String,
    /// The request's config.
    pub config: PodSandboxConfig,
    /// Ready until stopped.
    pub ready: bool,
    /// Creation time, Unix nanoseconds.
    pub created_at: i64,
    /// Run directory (monitor socket, namespace pins).
    pub run_dir: PathBuf,
    /// State directory (records, container dirs, monitor log).
    pub state_dir: PathBuf,
    /// The pod has its own network namespace.
    pub own_network: bool,
    /// CNI ADD succeeded and DEL has not run yet.
    pub network_attached: bool,
    /// Pod IPs, first the primary.
    pub ips: Vec<String>,
    /// The pod monitor's pid (it lives in the pod's network namespace).
    #[serde(default)]
    pub monitor_pid: u32,
}

/// A container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Container ID.
    pub id: String,
    /// Its sandbox.
    pub sandbox_id: String,
    /// The request's config.
    pub config: ContainerConfig,
    /// Image ID it was created from.
    pub image_id: String,
    /// The image as the request named it.
    pub image_name: String,
    /// Creation time, Unix nanoseconds.
    pub created_at: i64,
    /// Start time, 0 until started.
    pub started_at: i64,
    /// Host path of the log, empty for none.
    pub log_path: PathBuf,
    /// State directory (bundle, rootfs, exit record).
    pub state_dir: PathBuf,
    /// The container's cgroup (absolute within the hierarchy).
    #[serde(default)]
    pub cgroups_path: String,
    /// Diff IDs of the image layers its rootfs is made of: they must outlive the image's
    /// removal while the container exists.
    #[serde(default)]
    pub layers: Vec<String>,
}

/// Writes a record atomically.
pub fn save<T: Serialize>(path: &Path, record: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(record)
        .map_err(|e| PodError::Internal(format!("serialise {}: {e}", path.display())))?;
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, data)
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| PodError::Internal(format!("write {}: {e}", path.display())))
}

/// Reads every record named `file` in the subdirectories of `dir`; broken ones are logged.
pub fn load_all<T: for<'de> Deserialize<'de>>(dir: &Path, file: &str) -> Vec<T> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let path = entry.path().join(file);
            let data = std::fs::read(&path).ok()?;
            serde_json::from_slice(&data)
                .inspect_err(|e| tracing::warn!(path = %path.display(), error = %e, "skipping a broken record"))
                .ok()
        })
        .collect()
}

/// A new 64-hex-digit ID.
pub fn new_id() -> String {
    let mut bytes = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if read.is_err() {
        // Without urandom, time and pid still make a unique-enough ID for one host.
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        bytes.copy_from_slice(&<sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes()));
    }
    hex::encode(bytes)
}

/// Now, in Unix nanoseconds.
pub fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
}

//! The manifest directory source: one pod per .yaml, .yml or .json file (dotfiles, other
//! names and subdirectories are skipped, so editors' swap and backup files never count),
//! watched with inotify and rescanned every `fileCheckFrequency` as a backstop. Every change
//! sends a full snapshot; bursts of events (an editor's write, then rename) are debounced into
//! one scan, and a scan that finds what the previous one found sends nothing.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval, sleep};

use super::static_pod::decode_manifest;
use super::watch::DirWatch;
use super::{ManifestError, SourceName, SourceUpdate};

/// The kubelet's default rescan interval.
pub const DEFAULT_CHECK_FREQUENCY: Duration = Duration::from_secs(20);
/// How long the directory must be quiet after an event before it is scanned.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);

/// Static pods from a directory.
#[derive(Debug, Clone)]
pub struct FileSource {
    dir: PathBuf,
    node_name: String,
    check_frequency: Duration,
    debounce: Duration,
}

/// Whether a directory entry's name is one a manifest may have.
pub fn is_manifest_name(name: &str) -> bool {
    !name.starts_with('.')
        && Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
}

impl FileSource {
    /// A source reading `dir` for node `node_name`.
    pub fn new(dir: impl Into<PathBuf>, node_name: impl Into<String>) -> Self {
        FileSource {
            dir: dir.into(),
            node_name: node_name.into(),
            check_frequency: DEFAULT_CHECK_FREQUENCY,
            debounce: DEFAULT_DEBOUNCE,
        }
    }

    /// The source the configuration asks for (`staticPodPath`, `fileCheckFrequency`), if any.
    pub fn from_config(config: &crate::config::AgentConfig) -> Option<Self> {
        let dir = config.static_pod_path.as_ref()?;
        Some(FileSource::new(dir, &config.node_name).check_frequency(config.file_check_frequency))
    }

    /// Sets the periodic rescan interval (`fileCheckFrequency`).
    pub fn check_frequency(mut self, every: Duration) -> Self {
        self.check_frequency = every.max(Duration::from_millis(1));
        self
    }

    /// Sets the quiet time awaited after an inotify event before scanning.
    pub fn debounce(mut self, quiet: Duration) -> Self {
        self.debounce = quiet;
        self
    }

    /// Reads the directory once. A missing directory is an empty snapshot (its pods are gone);
    /// any other failure to list it is an error, and the caller keeps the previous snapshot
    /// rather than stopping every pod over what may be a passing fault.
    pub fn scan(&self) -> io::Result<SourceUpdate> {
        let mut update = SourceUpdate {
            source: SourceName::File,
            pods: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
        };
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(update),
            Err(e) => return Err(e),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(is_manifest_name))
            .map(|e| e.path())
            .collect();
        files.sort();
        // Full names already taken, and by which file: the first file by name keeps a name.
        let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
        for file in files {
            // Follows symlinks, as manifests are often links into a config checkout.
            match std::fs::metadata(&file) {
                Ok(m) if m.is_file() => {}
                Ok(_) => continue, // not recursing into directories, as the kubelet
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                Err(e) => {
                    update
                        .errors
                        .push(file_error(&file, format!("cannot read: {e}")));
                    continue;
                }
            }
            let text = match std::fs::read(&file) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => text,
                    Err(_) => {
                        update
                            .errors
                            .push(file_error(&file, "not UTF-8 text".into()));
                        continue;
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    update
                        .errors
                        .push(file_error(&file, format!("cannot read: {e}")));
                    continue;
                }
            };
            match decode_manifest(&text, &file, &self.node_name) {
                Ok(decoded) => {
                    let pod = decoded.pod;
                    update
                        .warnings
                        .extend(
                            decoded
                                .unknown_fields
                                .into_iter()
                                .map(|field| ManifestError {
                                    file: file.clone(),
                                    field,
                                    reason: "unknown field; ignored".into(),
                                }),
                        );
                    let name = format!(
                        "{}/{}",
                        pod.metadata.namespace.as_deref().unwrap_or_default(),
                        pod.metadata.name.as_deref().unwrap_or_default()
                    );
                    if let Some(first) = names.get(&name) {
                        update.errors.push(ManifestError {
                            file: file.clone(),
                            field: "metadata.name".into(),
                            reason: format!(
                                "Duplicate value: {name:?}: already defined by {}",
                                first.display()
                            ),
                        });
                        continue;
                    }
                    names.insert(name, file);
                    update.pods.push(pod);
                }
                Err(errors) => update.errors.extend(errors),
            }
        }
        Ok(update)
    }

    /// Starts the source on the current tokio runtime; it sends to `tx` until `tx`'s receiver
    /// is dropped.
    pub fn spawn(self, tx: mpsc::Sender<SourceUpdate>) -> JoinHandle<()> {
        tokio::spawn(self.run(tx))
    }

    /// Scans at once, then on every change and every `check_frequency`, sending each snapshot
    /// that differs from the previous one. The first snapshot is always sent, even empty, so
    /// that the merger knows this source has spoken.
    pub async fn run(self, tx: mpsc::Sender<SourceUpdate>) {
        let mut watch = match DirWatch::new(&self.dir) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    dir = %self.dir.display(),
                    "inotify unavailable, rescanning every {:?} only: {e}",
                    self.check_frequency
                );
                None
            }
        };
        let mut tick = interval(self.check_frequency);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last: Option<SourceUpdate> = None;
        let mut missing_logged = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = changed(&mut watch) => {
                    if let Err(e) = changed {
                        tracing::warn!(dir = %self.dir.display(), "inotify failed, rescanning periodically only: {e}");
                        watch = None;
                    }
                    self.quiet(&mut watch).await;
                }
                _ = tx.closed() => return,
            }
            // The watch goes in before the scan, so a change during the scan is not lost.
            let watching = watch.as_mut().is_some_and(DirWatch::ensure);
            if !watching && !self.dir.exists() && !missing_logged {
                tracing::info!(dir = %self.dir.display(), "the manifest directory does not exist (yet); checking every {:?}", self.check_frequency);
            }
            missing_logged = !self.dir.exists();
            let Some(update) = self.settled_scan().await else {
                continue;
            };
            if last.as_ref() == Some(&update) {
                continue;
            }
            for error in &update.errors {
                let known = last.as_ref().is_some_and(|l| l.errors.contains(error));
                if !known {
                    tracing::warn!(
                        file = %error.file.display(),
                        field = %error.field,
                        reason = %error.reason,
                        "manifest refused: {error}"
                    );
                }
            }
            for warning in &update.warnings {
                let known = last.as_ref().is_some_and(|l| l.warnings.contains(warning));
                if !known {
                    tracing::warn!(
                        file = %warning.file.display(),
                        field = %warning.field,
                        "manifest field ignored: {warning}"
                    );
                }
            }
            last = Some(update.clone());
            if tx.send(update).await.is_err() {
                return;
            }
        }
    }

    /// Scans, and while a refused manifest was modified within the settle time, looks again a
    /// little later (a few times at most): a file caught half written must not drop the pod
    /// it describes, which would restart it. None if the directory cannot be listed.
    async fn settled_scan(&self) -> Option<SourceUpdate> {
        let settle = (self.debounce * 5).max(Duration::from_millis(500));
        let mut attempts = 0;
        loop {
            let update = match self.scan() {
                Ok(update) => update,
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), "cannot list the manifest directory, keeping its pods: {e}");
                    return None;
                }
            };
            let fresh = |e: &ManifestError| {
                std::fs::metadata(&e.file)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age < settle)
            };
            attempts += 1;
            if attempts > 3 || !update.errors.iter().any(fresh) {
                return Some(update);
            }
            sleep(settle).await;
        }
    }

    /// Waits until no event arrived for `debounce`, or ten times that (at least a second) in
    /// all, so that a file written without pause cannot hold back every other change.
    async fn quiet(&self, watch: &mut Option<DirWatch>) {
        let limit = sleep((self.debounce * 10).max(Duration::from_secs(1)));
        tokio::pin!(limit);
        loop {
            tokio::select! {
                _ = sleep(self.debounce) => return,
                _ = &mut limit => return,
                changed = changed(watch) => {
                    if changed.is_err() {
                        *watch = None;
                    }
                }
            }
        }
    }
}

async fn changed(watch: &mut Option<DirWatch>) -> io::Result<()> {
    match watch {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}

fn file_error(file: &Path, reason: String) -> ManifestError {
    ManifestError {
        file: file.to_path_buf(),
        field: String::new(),
        reason,
    }
}

#[cfg(test)]
mod tests;

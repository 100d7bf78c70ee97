//! Images: pull from OCI registries, a content-addressed blob store, layers unpacked once into
//! shared snapshots, image records, garbage collection and OCI-archive import.

pub mod auth;
pub mod content;
pub mod error;
mod import;
pub mod media;
pub mod reference;
pub mod registry;
pub mod snapshots;
pub mod store;
mod unpack;
pub mod usage;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

pub use auth::Credentials;
pub use error::{ImageError, Result};
pub use reference::Reference;
pub use store::{ImageRecord, LayerRecord};
pub use usage::FsUsage;

use content::ContentStore;
use media::ManifestKind;
use registry::RegistryClient;
use snapshots::SnapshotStore;
use store::ImageStore;

use crate::config::RegistryConfig;

/// The outcome of a pull, shared by every caller that asked for the same image meanwhile.
pub type PullResult = std::result::Result<String, Arc<ImageError>>;

/// What garbage collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed.
    pub blobs: Vec<String>,
    /// Snapshots (diff IDs) removed.
    pub snapshots: Vec<String>,
}

/// Owns every image on the node.
#[derive(Debug)]
pub struct ImageManager {
    root: PathBuf,
    content: ContentStore,
    snapshots: SnapshotStore,
    images: RwLock<ImageStore>,
    registry: RegistryClient,
    inflight: Mutex<HashMap<String, Shared<BoxFuture<'static, PullResult>>>>,
    blob_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Pulls hold it shared, garbage collection exclusively: GC never removes content a pull
    /// has fetched but not yet recorded.
    gc_lock: tokio::sync::RwLock<()>,
}

impl ImageManager {
    /// Opens the image state under `root` (`<state dir>/images`), cleaning what an interrupted
    /// pull left.
    pub fn open(root: &Path, registry: RegistryConfig) -> Result<Self> {
        let manager = ImageManager {
            root: root.to_path_buf(),
            content: ContentStore::open(&root.join("content"))?,
            snapshots: SnapshotStore::open(&root.join("snapshots"))?,
            images: RwLock::new(ImageStore::open(&root.join("records"))?),
            registry: RegistryClient::new(registry)?,
            inflight: Mutex::new(HashMap::new()),
            blob_locks: Mutex::new(HashMap::new()),
            gc_lock: tokio::sync::RwLock::new(()),
        };
        Ok(manager)
    }

    /// Where the images live.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Pulls `image` unless a pull of it is already under way, in which case this waits for
    /// that one. Returns the image ID.
    pub async fn pull(
        self: &Arc<Self>,
        image: &str,
        credentials: Option<Credentials>,
    ) -> PullResult {
        let reference = Reference::parse(image).map_err(|e| Arc::new(e.into()))?;
        let key = reference.to_string();
        let shared = {
            let mut inflight = self.inflight.lock().map_err(|_| poisoned())?;
            match inflight.get(&key) {
                Some(pull) => pull.clone(),
                None => {
                    let manager = Arc::clone(self);
                    let done_key = key.clone();
                    let pull = async move {
                        let outcome = manager
                            .pull_now(&reference, credentials)
                            .await
                            .map_err(Arc::new);
                        if let Ok(mut inflight) = manager.inflight.lock() {
                            inflight.remove(&done_key);
                        }
                        outcome
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key.clone(), pull.clone());
                    pull
                }
            }
        };
        // Run on its own task so a caller that gives up does not cancel the others' pull.
        let outcome = tokio::spawn(shared).await;
        outcome.unwrap_or_else(|e| {
            Err(Arc::new(ImageError::Shared(format!(
                "pull of {key} failed: {e}"
            ))))
        })
    }

    async fn pull_now(
        &self,
        reference: &Reference,
        credentials: Option<Credentials>,
    ) -> Result<String> {
        let credentials = credentials.or_else(|| {
            let path = self.registry.config().docker_config.as_ref()?;
            Credentials::from_docker_config(path, &reference.domain)
        });
        let credentials = credentials.as_ref();
        let _gc = self.gc_lock.read().await;
        tracing::info!(%reference, "pulling image");
        let top = self
            .registry
            .get_manifest(reference, reference.locator(), credentials)
            .await?;
        let mut blobs = vec![top.digest.clone()];
        let manifest = match media::manifest_kind(&top.media_type)? {
            ManifestKind::Image => top.clone(),
            ManifestKind::Index => {
                let index: ImageIndex = parse_json(&top.data, "image index")?;
                let chosen = media::select_platform(&index)?;
                self.content.put(&top.digest, &top.data)?;
                let digest = chosen.digest().to_string();
                let manifest = self
                    .registry
                    .get_manifest(reference, &digest, credentials)
                    .await?;
                if media::manifest_kind(&manifest.media_type)? != ManifestKind::Image {
                    return Err(ImageError::Unsupported(format!(
                        "{reference}: the index entry {digest} is itself an index"
                    )));
                }
                blobs.push(manifest.digest.clone());
                manifest
            }
        };
        let parsed: ImageManifest = parse_json(&manifest.data, "image manifest")?;
        let config = parsed.config();
        let config_digest = config.digest().to_string();
        if !self.content.contains(&config_digest) {
            let data = self
                .registry
                .get_small_blob(
                    &manifest.endpoint,
                    reference,
                    &config_digest,
                    config.size(),
                    credentials,
                )
                .await?;
            self.content.put(&config_digest, &data)?;
        }
        let image_config: ImageConfiguration =
            parse_json(&self.content.read(&config_digest)?, "image config")?;
        let layers = layer_records(&parsed, &image_config)?;
        let downloads = layers
            .iter()
            .map(|layer| self.ensure_layer(&manifest.endpoint, reference, layer, credentials));
        // Wait for every layer even when one fails, so no download or unpack outlives the pull.
        for outcome in futures::future::join_all(downloads).await {
            outcome?;
        }
        self.content.put(&manifest.digest, &manifest.data)?;
        let record = self
            .assemble(reference, &top.digest, blobs, &manifest.digest)
            .await?;
        let id = record.id.clone();
        self.commit(record)?;
        tracing::info!(%reference, %id, "pulled image");
        Ok(id)
    }

    /// Builds the record of an image whose manifest, config and layer blobs are in the content
    /// store, unpacking any layer not yet unpacked. `top_digest` is what the name resolved to
    /// (an index or the manifest); `blobs` the index-level blobs to keep.
    pub(crate) async fn assemble(
        &self,
        reference: &Reference,
        top_digest: &str,
        mut blobs: Vec<String>,
        manifest_digest: &str,
    ) -> Result<ImageRecord> {
        let manifest_data = self.content.read(manifest_digest)?;
        let parsed: ImageManifest = parse_json(&manifest_data, "image manifest")?;
        let config_digest = parsed.config().digest().to_string();
        let image_config: ImageConfiguration =
            parse_json(&self.content.read(&config_digest)?, "image config")?;
        let layers = layer_records(&parsed, &image_config)?;
        for layer in &layers {
            if !self.content.contains(&layer.digest) {
                return Err(ImageError::Malformed(format!(
                    "{reference}: layer {} is missing",
                    layer.digest
                )));
            }
            self.unpack(layer).await?;
        }
        if !blobs.iter().any(|b| b == manifest_digest) {
            blobs.push(manifest_digest.to_string());
        }
        blobs.push(config_digest.clone());
        blobs.extend(layers.iter().map(|l| l.digest.clone()));
        Ok(ImageRecord {
            id: config_digest,
            repo_tags: reference.tagged().into_iter().collect(),
            repo_digests: vec![reference.with_digest(top_digest)],
            manifest_digest: manifest_digest.to_string(),
            size: manifest_data.len() as u64
                + parsed.config().size()
                + layers.iter().map(|l| l.size).sum::<u64>(),
            blobs,
            user: image_config
                .config()
                .as_ref()
                .and_then(|c| c.user().clone())
                .unwrap_or_default(),
            layers,
            pinned: false,
        })
    }

    /// Downloads a layer blob unless present, then unpacks it unless already unpacked.
    async fn ensure_layer(
        &self,
        endpoint: &str,
        reference: &Reference,
        layer: &LayerRecord,
        credentials: Option<&Credentials>,
    ) -> Result<()> {
        let lock = {
            let mut locks = self
                .blob_locks
                .lock()
                .map_err(|_| ImageError::Shared("lock poisoned".into()))?;
            Arc::clone(locks.entry(layer.digest.clone()).or_default())
        };
        let _guard = lock.lock().await;
        if !self.content.contains(&layer.digest) {
            self.registry
                .download_blob(
                    endpoint,
                    reference,
                    &layer.digest,
                    layer.size,
                    credentials,
                    &self.content,
                )
                .await?;
        }
        self.unpack(layer).await
    }

    async fn unpack(&self, layer: &LayerRecord) -> Result<()> {
        if self.snapshots.contains(&layer.diff_id) {
            return Ok(());
        }
        let compression = media::layer_compression(&layer.media_type)?;
        let blob = self.content.path(&layer.digest)?;
        let diff_id = layer.diff_id.clone();
        let snapshots_root = self.root.join("snapshots");
        tokio::task::spawn_blocking(move || {
            SnapshotStore::at(&snapshots_root).prepare(&diff_id, &blob, compression)
        })
        .await
        .map_err(|e| ImageError::Shared(format!("unpack task failed: {e}")))??;
        Ok(())
    }

    pub(crate) fn commit(&self, record: ImageRecord) -> Result<()> {
        let mut images = self
            .images
            .write()
            .map_err(|_| ImageError::Shared("lock poisoned".into()))?;
        let dropped = images.put(record)?;
        images.mark_fresh();
        for id in dropped {
            tracing::info!(%id, "image lost its last name to a newer pull");
        }
        Ok(())
    }

    /// Reloads the records when another process changed them.
    fn refresh(&self) {
        let stale = self.images.read().map(|s| s.is_stale()).unwrap_or(false);
        if !stale {
            return;
        }
        let Ok(mut images) = self.images.write() else {
            return;
        };
        match ImageStore::open(images.dir()) {
            Ok(fresh) => *images = fresh,
            Err(e) => tracing::warn!(error = %e, "cannot reload image records"),
        }
    }

    /// Every local image.
    pub fn list(&self) -> Vec<ImageRecord> {
        self.refresh();
        self.images
            .read()
            .map(|images| images.list().cloned().collect())
            .unwrap_or_default()
    }

    /// Finds a local image by ID, name or digest reference.
    pub fn resolve(&self, query: &str) -> Option<ImageRecord> {
        self.refresh();
        self.images.read().ok()?.resolve(query).cloned()
    }

    /// The image's config.
    pub fn config(&self, record: &ImageRecord) -> Result<ImageConfiguration> {
        parse_json(&self.content.read(&record.id)?, "image config")
    }

    /// Snapshot directories of the image's layers, lowest first.
    pub fn layer_dirs(&self, record: &ImageRecord) -> Result<Vec<PathBuf>> {
        record
            .layers
            .iter()
            .map(|l| self.snapshots.path(&l.diff_id))
            .collect()
    }

    /// Removes the image (all its names) and collects its content; an unknown image is not an
    /// error (CRI RemoveImage is idempotent). `in_use` holds snapshots containers still use.
    pub async fn remove(
        &self,
        query: &str,
        in_use: &HashSet<String>,
    ) -> Result<Option<ImageRecord>> {
        let removed = {
            let mut images = self
                .images
                .write()
                .map_err(|_| ImageError::Shared("lock poisoned".into()))?;
            let Some(id) = images.resolve(query).map(|r| r.id.clone()) else {
                return Ok(None);
            };
            images.remove(&id)?
        };
        self.collect_garbage(in_use).await?;
        Ok(removed)
    }

    /// Removes blobs and snapshots no image references and no container uses.
    pub async fn collect_garbage(&self, in_use: &HashSet<String>) -> Result<GcReport> {
        let _exclusive = self.gc_lock.write().await;
        let (blobs, diff_ids): (HashSet<String>, HashSet<String>) = {
            let images = self
                .images
                .read()
                .map_err(|_| ImageError::Shared("lock poisoned".into()))?;
            let blobs = images
                .list()
                .flat_map(|i| i.blobs.iter().cloned())
                .collect();
            let diff_ids = images
                .list()
                .flat_map(|i| i.layers.iter().map(|l| l.diff_id.clone()))
                .chain(in_use.iter().cloned())
                .collect();
            (blobs, diff_ids)
        };
        let mut report = GcReport::default();
        for digest in self.content.list() {
            if !blobs.contains(&digest) {
                self.content.remove(&digest)?;
                report.blobs.push(digest);
            }
        }
        for diff_id in self.snapshots.list() {
            if !diff_ids.contains(&diff_id) {
                self.snapshots.remove(&diff_id)?;
                report.snapshots.push(diff_id);
            }
        }
        if !report.blobs.is_empty() || !report.snapshots.is_empty() {
            tracing::info!(
                blobs = report.blobs.len(),
                snapshots = report.snapshots.len(),
                "image garbage collected"
            );
        }
        Ok(report)
    }

    /// Bytes and inodes the image store uses.
    pub fn usage(&self) -> FsUsage {
        usage::measure(&self.root)
    }

    /// Imports every tagged image of an OCI archive; returns `(name, image ID)` pairs.
    pub async fn import_archive(&self, archive: &Path) -> Result<Vec<(String, String)>> {
        let _gc = self.gc_lock.read().await;
        import::import_archive(self, archive).await
    }
}

/// The layers of a manifest with the diff IDs its config lists, checked against each other.
fn layer_records(
    manifest: &ImageManifest,
    config: &ImageConfiguration,
) -> Result<Vec<LayerRecord>> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ImageError::Malformed(format!(
            "the manifest has {} layers but the config lists {} diff IDs",
            manifest.layers().len(),
            diff_ids.len()
        )));
    }
    manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(layer, diff_id)| {
            let media_type = layer.media_type().to_string();
            media::layer_compression(&media_type)?;
            reference::validate_digest(diff_id).map_err(ImageError::Malformed)?;
            Ok(LayerRecord {
                digest: layer.digest().to_string(),
                diff_id: diff_id.clone(),
                media_type,
                size: layer.size(),
            })
        })
        .collect()
}

fn parse_json<T: serde::de::DeserializeOwned>(data: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| ImageError::Malformed(format!("{what}: {e}")))
}

fn poisoned() -> Arc<ImageError> {
    Arc::new(ImageError::Shared("image state lock poisoned".into()))
}

//! `capstan images import`: loads the tagged images of an OCI archive (an image layout in a
//! tar), verifying every blob, for hosts without registry access.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use oci_spec::image::ImageIndex;

use super::error::{ImageError, Result};
use super::media::{self, ManifestKind};
use super::reference::Reference;
use super::{ImageManager, parse_json};

/// Annotations that name an image in an index.json, most specific first.
const NAME_ANNOTATIONS: &[&str] = &[
    "io.containerd.image.name",
    "org.opencontainers.image.ref.name",
];

static SEQ: AtomicU64 = AtomicU64::new(0);

pub(super) async fn import_archive(
    manager: &ImageManager,
    archive: &Path,
) -> Result<Vec<(String, String)>> {
    let staging = manager.root.join(format!(
        "import-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let outcome = import_from_staging(manager, archive, &staging).await;
    let _ = std::fs::remove_dir_all(&staging);
    outcome
}

async fn import_from_staging(
    manager: &ImageManager,
    archive: &Path,
    staging: &Path,
) -> Result<Vec<(String, String)>> {
    let (archive_path, staging_path) = (archive.to_path_buf(), staging.to_path_buf());
    tokio::task::spawn_blocking(move || extract(&archive_path, &staging_path))
        .await
        .map_err(|e| ImageError::Shared(format!("import task failed: {e}")))??;

    let index_path = staging.join("index.json");
    let index_data = std::fs::read(&index_path).map_err(|e| {
        ImageError::Malformed(format!(
            "{}: not an OCI archive (no index.json): {e}",
            archive.display()
        ))
    })?;
    let index: ImageIndex = parse_json(&index_data, "index.json")?;

    let blobs_dir = staging.join("blobs").join("sha256");
    let mut imported = Vec::new();
    for descriptor in index.manifests() {
        let name = descriptor.annotations().as_ref().and_then(|annotations| {
            NAME_ANNOTATIONS
                .iter()
                .find_map(|key| annotations.get(*key).cloned())
        });
        let Some(name) = name else {
            tracing::warn!(digest = %descriptor.digest(), "skipping an untagged manifest in the archive");
            continue;
        };
        let reference = Reference::parse(&name)?;
        let top_digest = descriptor.digest().to_string();
        adopt_blob(manager, &blobs_dir, &top_digest)?;
        let top_data = manager.content.read(&top_digest)?;
        let top_type =
            media::document_type(&top_data).unwrap_or_else(|| descriptor.media_type().to_string());
        let mut kept = vec![top_digest.clone()];
        let manifest_digest = match media::manifest_kind(&top_type)? {
            ManifestKind::Image => top_digest.clone(),
            ManifestKind::Index => {
                let nested: ImageIndex = parse_json(&top_data, "image index")?;
                let chosen = media::select_platform(&nested)?.digest().to_string();
                adopt_blob(manager, &blobs_dir, &chosen)?;
                kept.push(chosen.clone());
                chosen
            }
        };
        let manifest: oci_spec::image::ImageManifest =
            parse_json(&manager.content.read(&manifest_digest)?, "image manifest")?;
        adopt_blob(manager, &blobs_dir, manifest.config().digest().as_ref())?;
        for layer in manifest.layers() {
            adopt_blob(manager, &blobs_dir, layer.digest().as_ref())?;
        }
        let record = manager
            .assemble(&reference, &top_digest, kept, &manifest_digest)
            .await?;
        let id = record.id.clone();
        manager.commit(record)?;
        tracing::info!(%reference, %id, "imported image");
        imported.push((reference.to_string(), id));
    }
    if imported.is_empty() {
        return Err(ImageError::Malformed(format!(
            "{}: the archive names no image (index.json entries need an \
             org.opencontainers.image.ref.name annotation)",
            archive.display()
        )));
    }
    Ok(imported)
}

fn extract(archive: &Path, staging: &Path) -> Result<()> {
    std::fs::create_dir_all(staging).map_err(ImageError::io("create", staging))?;
    let file = std::fs::File::open(archive).map_err(ImageError::io("open archive", archive))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    tar.set_preserve_permissions(false);
    for entry in tar
        .entries()
        .map_err(|e| ImageError::Malformed(format!("{}: {e}", archive.display())))?
    {
        let mut entry =
            entry.map_err(|e| ImageError::Malformed(format!("{}: {e}", archive.display())))?;
        // Only plain files and directories belong in a layout.
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        entry
            .unpack_in(staging)
            .map_err(|e| ImageError::Malformed(format!("{}: {e}", archive.display())))?;
    }
    Ok(())
}

/// Moves a blob from the staging layout into the content store after checking its digest.
fn adopt_blob(manager: &ImageManager, blobs_dir: &Path, digest: &str) -> Result<()> {
    if manager.content.contains(digest) {
        return Ok(());
    }
    super::reference::validate_digest(digest).map_err(ImageError::Malformed)?;
    let source = blobs_dir.join(&digest["sha256:".len()..]);
    if !source.is_file() {
        return Err(ImageError::Malformed(format!(
            "the archive lacks blob {digest}"
        )));
    }
    manager.content.adopt(digest, &source)
}

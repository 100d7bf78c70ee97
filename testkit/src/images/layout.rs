//! OCI image layouts on disk and OCI archives (a layout in a tar), for import tests and for
//! hosts without registry access.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use super::image::TestImage;
use super::media::{ManifestFormat, OCI_INDEX};
use crate::digest::Blob;
use crate::error::{Error, Result};

/// The annotation naming a manifest in a layout's index.json.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One image in a layout: the name it is tagged with (`index.json`'s ref name) and its format.
pub struct LayoutEntry<'a> {
    /// The ref name, e.g. `shell:latest` or just `latest`.
    pub ref_name: &'a str,
    /// The image.
    pub image: &'a TestImage,
    /// Its manifest format.
    pub format: ManifestFormat,
}

/// Writes an OCI image layout holding `entries` into `dir` (created if missing).
pub fn write_layout(dir: &Path, entries: &[LayoutEntry<'_>]) -> Result<()> {
    let blobs_dir = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs_dir).map_err(Error::io("create", &blobs_dir))?;
    let mut written = BTreeSet::new();
    let mut manifests: Vec<Value> = Vec::new();
    for entry in entries {
        let mut blobs = vec![entry.image.config_blob(entry.format)];
        blobs.extend(entry.image.layer_blobs(entry.format));
        let manifest = entry.image.manifest(entry.format);
        blobs.push(manifest.clone());
        for blob in blobs {
            if written.insert(blob.digest.clone()) {
                write_blob(&blobs_dir, &blob)?;
            }
        }
        let mut descriptor = manifest.descriptor();
        descriptor["annotations"] = json!({ REF_NAME: entry.ref_name });
        descriptor["platform"] = json!({
            "os": entry.image.platform.os,
            "architecture": entry.image.platform.architecture,
        });
        manifests.push(descriptor);
    }
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    write_file(&dir.join("index.json"), index.to_string().as_bytes())?;
    write_file(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
}

/// Writes an OCI archive: the layout of `entries` as an uncompressed tar at `path`.
pub fn write_archive(path: &Path, entries: &[LayoutEntry<'_>]) -> Result<()> {
    let staging =
        tempfile::tempdir().map_err(Error::io("create a temp dir in", std::env::temp_dir()))?;
    write_layout(staging.path(), entries)?;
    let file = std::fs::File::create(path).map_err(Error::io("create", path))?;
    let mut tar = tar::Builder::new(file);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", staging.path())
        .and_then(|()| tar.finish())
        .map_err(Error::io("write archive", path))
}

fn write_blob(blobs_dir: &Path, blob: &Blob) -> Result<()> {
    let hex = blob
        .digest
        .strip_prefix("sha256:")
        .ok_or_else(|| Error::Image(format!("unexpected digest {}", blob.digest)))?;
    write_file(&blobs_dir.join(hex), &blob.data)
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(Error::io("write", path))
}

//! Manifest, index and layer media types, and the platform choice in an index.

use oci_spec::image::{Descriptor, ImageIndex};

use super::error::{ImageError, Result};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1, which registries still offer for very old images.
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The `Accept` header of manifest requests: every type this runtime reads.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// What a manifest document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// A single-platform image manifest.
    Image,
    /// A multi-platform index or manifest list.
    Index,
}

/// Classifies a manifest by media type; old or foreign formats are refused by name.
pub fn manifest_kind(media_type: &str) -> Result<ManifestKind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(ManifestKind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Ok(ManifestKind::Index),
        DOCKER_SCHEMA1 => Err(ImageError::Unsupported(
            "Docker schema 1 manifests are not supported: re-push the image with a current client"
                .into(),
        )),
        other => Err(ImageError::Unsupported(format!(
            "manifest media type {other:?} is not supported"
        ))),
    }
}

/// The `mediaType` a JSON document declares, if any.
pub fn document_type(data: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Probe>(data).ok()?.media_type
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// The compression a layer media type declares; non-layer types are refused by name.
pub fn layer_compression(media_type: &str) -> Result<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Ok(Compression::Zstd),
        other => Err(ImageError::Unsupported(format!(
            "layer media type {other:?} is not supported"
        ))),
    }
}

/// The host's platform in OCI terms: (`linux`, architecture, variant).
pub fn host_platform() -> (&'static str, &'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("linux", "amd64", None),
        "aarch64" => ("linux", "arm64", Some("v8")),
        "arm" => ("linux", "arm", Some("v7")),
        "riscv64" => ("linux", "riscv64", None),
        "s390x" => ("linux", "s390x", None),
        "powerpc64" => ("linux", "ppc64le", None),
        other => ("linux", other, None),
    }
}

/// Picks the index entry for this host's platform (an exact variant match first).
pub fn select_platform(index: &ImageIndex) -> Result<&Descriptor> {
    let (os, architecture, variant) = host_platform();
    let candidates: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == os && p.architecture().to_string() == architecture
            })
        })
        .collect();
    let exact = candidates.iter().find(|d| {
        d.platform()
            .as_ref()
            .and_then(|p| p.variant().as_deref())
            .map(|v| Some(v) == variant)
            .unwrap_or(variant.is_none())
    });
    exact.or(candidates.first()).copied().ok_or_else(|| {
        let offered: Vec<String> = index
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .map(|p| format!("{}/{}", p.os(), p.architecture()))
            .collect();
        ImageError::Unsupported(format!(
            "no manifest for {os}/{architecture} in the index (it offers {})",
            if offered.is_empty() {
                "none".to_string()
            } else {
                offered.join(", ")
            }
        ))
    })
}

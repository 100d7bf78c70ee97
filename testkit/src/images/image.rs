//! A test image: layers, a config, and its manifests in either format.

use serde_json::{Value, json};

use super::layer::Layer;
use super::media::ManifestFormat;
use crate::digest::Blob;
use crate::error::{Error, Result};

/// An OS/architecture pair as OCI names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, ...
    pub architecture: String,
}

impl Platform {
    /// The platform of this host.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
        }
    }

    /// A linux platform other than this one (arm64 for amd64, amd64 otherwise).
    pub fn other(&self) -> Self {
        let architecture = if self.architecture == "amd64" {
            "arm64"
        } else {
            "amd64"
        };
        Platform {
            os: self.os.clone(),
            architecture: architecture.into(),
        }
    }

    /// `os/architecture`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.os, self.architecture)
    }
}

/// An image: its config and layers, publishable as an OCI or a Docker schema 2 manifest.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// Short name, used as the repository name when pushed (`shell`, `web`, ...).
    pub name: String,
    /// What the image runs on.
    pub platform: Platform,
    /// Layers, lowest first.
    pub layers: Vec<Layer>,
    /// The config JSON (identical bytes in both formats, so one digest).
    pub config: Vec<u8>,
    /// How the layer blobs are compressed.
    pub compression: LayerCompression,
}

/// How an image's layer blobs are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// gzip (both formats).
    Gzip,
    /// zstd (OCI only).
    Zstd,
    /// A plain tar (OCI only).
    None,
}

impl TestImage {
    /// Assembles an image from layers and the `config` section of its image config.
    pub fn new(name: &str, platform: Platform, layers: Vec<Layer>, config: Value) -> Result<Self> {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let document = json!({
            "created": "2023-11-14T22:13:20Z",
            "architecture": platform.architecture,
            "os": platform.os,
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": layers.iter().map(|_| json!({ "created_by": "capstan-testkit" })).collect::<Vec<_>>(),
        });
        let config = serde_json::to_vec(&document)
            .map_err(|e| Error::Image(format!("serialise config of {name}: {e}")))?;
        Ok(TestImage {
            name: name.into(),
            platform,
            layers,
            config,
            compression: LayerCompression::Gzip,
        })
    }

    /// The same image with its layers compressed another way (OCI media types only).
    pub fn recompressed(&self, compression: LayerCompression) -> Self {
        TestImage {
            compression,
            ..self.clone()
        }
    }

    /// The config blob, typed for `format`.
    pub fn config_blob(&self, format: ManifestFormat) -> Blob {
        Blob::new(format.config_type(), self.config.clone())
    }

    /// The layer blobs, typed for `format`, lowest first.
    pub fn layer_blobs(&self, format: ManifestFormat) -> Vec<Blob> {
        self.layers
            .iter()
            .map(|l| match self.compression {
                LayerCompression::Gzip => Blob::new(format.layer_type(), l.compressed.clone()),
                LayerCompression::Zstd => Blob::new(
                    super::media::OCI_LAYER_ZSTD,
                    ruzstd::encoding::compress_to_vec(
                        &l.tar[..],
                        ruzstd::encoding::CompressionLevel::Fastest,
                    ),
                ),
                LayerCompression::None => Blob::new(super::media::OCI_LAYER_TAR, l.tar.clone()),
            })
            .collect()
    }

    /// The manifest in `format`.
    pub fn manifest(&self, format: ManifestFormat) -> Blob {
        let layers: Vec<Value> = self
            .layer_blobs(format)
            .iter()
            .map(Blob::descriptor)
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": format.manifest_type(),
            "config": self.config_blob(format).descriptor(),
            "layers": layers,
        });
        Blob::new(format.manifest_type(), manifest.to_string().into_bytes())
    }

    /// The parsed config, for assertions.
    pub fn config_json(&self) -> Value {
        serde_json::from_slice(&self.config).unwrap_or(Value::Null)
    }
}

/// An OCI image index over `(image, format)` pairs, each entry carrying its image's platform.
pub fn index(entries: &[(&TestImage, ManifestFormat)]) -> Blob {
    let manifests: Vec<Value> = entries
        .iter()
        .map(|(image, format)| {
            let mut descriptor = image.manifest(*format).descriptor();
            descriptor["platform"] = json!({
                "os": image.platform.os,
                "architecture": image.platform.architecture,
            });
            descriptor
        })
        .collect();
    let document = json!({
        "schemaVersion": 2,
        "mediaType": super::media::OCI_INDEX,
        "manifests": manifests,
    });
    Blob::new(super::media::OCI_INDEX, document.to_string().into_bytes())
}

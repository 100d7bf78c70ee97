//! Media types of the two manifest formats registries serve.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (multi-platform).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (multi-platform).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Which manifest format an image is published in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestFormat {
    /// OCI image manifest with OCI media types.
    Oci,
    /// Docker schema 2 manifest with Docker media types.
    Docker,
}

impl ManifestFormat {
    /// The manifest's own media type.
    pub fn manifest_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => OCI_MANIFEST,
            ManifestFormat::Docker => DOCKER_MANIFEST,
        }
    }

    /// The config blob's media type.
    pub fn config_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => OCI_CONFIG,
            ManifestFormat::Docker => DOCKER_CONFIG,
        }
    }

    /// A gzip layer's media type.
    pub fn layer_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => OCI_LAYER_GZIP,
            ManifestFormat::Docker => DOCKER_LAYER_GZIP,
        }
    }
}

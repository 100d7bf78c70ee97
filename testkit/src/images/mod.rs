//! Test images built from Debian's `busybox-static`: layers, configs, manifests (OCI and Docker
//! schema 2), a multi-platform index, OCI layouts and archives.

mod catalog;
mod image;
mod layer;
mod layout;
pub mod media;

pub use catalog::{APP_EXTRA_GROUP, APP_USER, BUSYBOX, Catalog, WEB_PAGE, WEB_PORT, catalog};
pub use image::{LayerCompression, Platform, TestImage, index};
pub use layer::{Layer, LayerBuilder};
pub use layout::{LayoutEntry, REF_NAME, write_archive, write_layout};
pub use media::ManifestFormat;

use std::path::Path;

use crate::error::{Error, Result};

/// Unpacks `layers` (lowest first) into `dir` as plain files, for tests that run an image's
/// content without a runtime. Whiteouts are not applied: it is meant for images without them.
pub fn unpack_plain(layers: &[Layer], dir: &Path) -> Result<()> {
    for layer in layers {
        let mut archive = tar::Archive::new(&layer.tar[..]);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_overwrite(true);
        archive
            .unpack(dir)
            .map_err(Error::io("unpack a layer into", dir))?;
    }
    Ok(())
}

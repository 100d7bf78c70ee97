//! Image garbage collection with the kubelet's policy: when the image filesystem is fuller than
//! the high threshold, unused images are removed, least recently used first, until usage is
//! back under the low threshold. Images a container uses, or that became unused less than the
//! minimum age ago, are kept.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_proto::{
    ImageFsInfoRequest, ImageSpec, ListContainersRequest, ListImagesRequest, RemoveImageRequest,
};
use tonic::Request;

use crate::pods::NodeContext;

/// How often usage is checked. The kubelet checks every 5 minutes; in-process CRI calls cost
/// little, so a shorter period frees disk sooner.
pub const PERIOD: Duration = Duration::from_secs(10);

/// The collector's settings.
#[derive(Debug, Clone, Copy)]
pub struct ImageGcPolicy {
    /// Usage percent that starts a collection.
    pub high_percent: u8,
    /// Usage percent a collection frees down to.
    pub low_percent: u8,
    /// Unused images younger than this (since last used) are kept.
    pub minimum_age: Duration,
}

/// Runs the collector for ever.
pub async fn run(ctx: Arc<NodeContext>, policy: ImageGcPolicy) {
    if policy.high_percent >= 100 {
        return;
    }
    let mut last_used: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::time::sleep(PERIOD).await;
        if let Err(e) = collect(&ctx, policy, &mut last_used).await {
            tracing::warn!(error = %e, "image garbage collection failed");
        }
    }
}

/// Filesystem capacity and free bytes at `path`.
fn filesystem(path: &Path) -> Option<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    let block = stat.fragment_size();
    Some((stat.blocks() * block, stat.blocks_available() * block))
}

async fn collect(
    ctx: &NodeContext,
    policy: ImageGcPolicy,
    last_used: &mut HashMap<String, Instant>,
) -> Result<(), String> {
    let fs = ctx
        .cri
        .images
        .image_fs_info(Request::new(ImageFsInfoRequest {}))
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let Some(mountpoint) = fs
        .image_filesystems
        .first()
        .and_then(|f| f.fs_id.as_ref())
        .map(|id| id.mountpoint.clone())
    else {
        return Ok(());
    };
    let Some((capacity, available)) = filesystem(Path::new(&mountpoint)) else {
        return Err(format!("statvfs {mountpoint} failed"));
    };
    if capacity == 0 {
        return Ok(());
    }
    let used = capacity - available;
    let percent = used * 100 / capacity;
    let images = ctx
        .cri
        .images
        .list_images(Request::new(ListImagesRequest { filter: None }))
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner()
        .images;
    let containers = ctx
        .cri
        .runtime
        .list_containers(Request::new(ListContainersRequest { filter: None }))
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner()
        .containers;
    let in_use: HashSet<String> = containers
        .iter()
        .flat_map(|c| {
            [
                c.image_ref.clone(),
                c.image
                    .as_ref()
                    .map(|i| i.image.clone())
                    .unwrap_or_default(),
            ]
        })
        .filter(|s| !s.is_empty())
        .collect();
    let now = Instant::now();
    for image in &images {
        if is_used(image, &in_use) {
            last_used.insert(image.id.clone(), now);
        } else {
            // First seen unused: the minimum age counts from now.
            last_used.entry(image.id.clone()).or_insert(now);
        }
    }
    last_used.retain(|id, _| images.iter().any(|i| &i.id == id));
    if percent < u64::from(policy.high_percent) {
        return Ok(());
    }
    let target = capacity * u64::from(policy.low_percent) / 100;
    let mut to_free = used.saturating_sub(target);
    let mut candidates: Vec<_> = images
        .iter()
        .filter(|i| !is_used(i, &in_use) && !i.pinned)
        .filter(|i| {
            last_used
                .get(&i.id)
                .is_some_and(|at| now.duration_since(*at) >= policy.minimum_age)
        })
        .collect();
    candidates.sort_by_key(|i| last_used.get(&i.id).copied());
    if candidates.is_empty() {
        tracing::debug!(
            usage_percent = percent,
            high = policy.high_percent,
            "image filesystem over the high threshold, but every image is in use or too recent"
        );
        return Ok(());
    }
    tracing::info!(
        usage_percent = percent,
        high = policy.high_percent,
        candidates = candidates.len(),
        "image filesystem over the high threshold: collecting images"
    );
    for image in candidates {
        if to_free == 0 {
            break;
        }
        match ctx
            .cri
            .images
            .remove_image(Request::new(RemoveImageRequest {
                image: Some(ImageSpec {
                    image: image.id.clone(),
                    ..Default::default()
                }),
            }))
            .await
        {
            Ok(_) => {
                tracing::info!(image = %image.id, tags = ?image.repo_tags, size = image.size, "removed unused image");
                to_free = to_free.saturating_sub(image.size);
                last_used.remove(&image.id);
            }
            Err(e) => {
                tracing::warn!(image = %image.id, error = %e.message(), "cannot remove image")
            }
        }
    }
    Ok(())
}

fn is_used(image: &capstan_proto::Image, in_use: &HashSet<String>) -> bool {
    in_use.contains(&image.id)
        || image
            .repo_tags
            .iter()
            .chain(&image.repo_digests)
            .any(|t| in_use.contains(t))
}

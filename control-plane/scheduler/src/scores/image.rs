//! ImageLocality: nodes that already have the pod's images score higher, by image size scaled
//! by how widely the image is spread over the cluster.

use crate::snapshot::{Cache, NodeInfo, PodInfo, normalize_image};

use super::MAX_NODE_SCORE;

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// ImageLocality's scores (already 0–100).
pub fn score(cache: &Cache, pod: &PodInfo, nodes: &[&NodeInfo]) -> Vec<i64> {
    let spec = pod.pod.spec.as_ref();
    let images: Vec<String> = spec
        .into_iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .filter_map(|c| c.image.as_deref())
        .map(normalize_image)
        .collect();
    let total_nodes = cache.node_count().max(1) as f64;
    let max_threshold = MAX_CONTAINER_THRESHOLD * images.len().max(1) as i64;
    nodes
        .iter()
        .map(|node| {
            let sum: i64 = images
                .iter()
                .filter_map(|image| {
                    let size = node.images.get(image)?;
                    let spread = *cache.image_nodes.get(image).unwrap_or(&0) as f64 / total_nodes;
                    Some((*size as f64 * spread) as i64)
                })
                .sum();
            let clamped = sum.clamp(MIN_THRESHOLD, max_threshold);
            if max_threshold <= MIN_THRESHOLD {
                0
            } else {
                MAX_NODE_SCORE * (clamped - MIN_THRESHOLD) / (max_threshold - MIN_THRESHOLD)
            }
        })
        .collect()
}

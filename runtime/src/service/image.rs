//! CRI ImageService on the image manager.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use capstan_proto::image_service_server::ImageService;
use capstan_proto::{
    FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoRequest, ImageFsInfoResponse,
    ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value, ListImagesRequest,
    ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse, UInt64Value,
};
use tonic::{Request, Response, Status};

use super::{image_status_of, required_image};
use crate::images::usage::FsUsage;
use crate::images::{Credentials, ImageManager, ImageRecord};
use crate::pods::PodManager;

/// CRI ImageService.
#[derive(Debug, Clone)]
pub struct CriImageService {
    images: Arc<ImageManager>,
    pods: Arc<PodManager>,
}

impl CriImageService {
    /// Serves `images`; `pods` says which layers containers still use and how much their
    /// writable layers take.
    pub fn new(images: Arc<ImageManager>, pods: Arc<PodManager>) -> Self {
        CriImageService { images, pods }
    }
}

#[tonic::async_trait]
impl ImageService for CriImageService {
    async fn list_images(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let wanted = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|spec| spec.image)
            .filter(|image| !image.is_empty());
        let images = match wanted {
            Some(query) => self.images.resolve(&query).into_iter().collect(),
            None => self.images.list(),
        };
        Ok(Response::new(ListImagesResponse {
            images: images.iter().map(to_cri).collect(),
        }))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let request = request.into_inner();
        let query = required_image(request.image.as_ref(), "image.image")?;
        // CRI: an unknown image is not an error, just no image.
        let Some(record) = self.images.resolve(&query) else {
            return Ok(Response::new(ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if request.verbose {
            let config = self
                .images
                .config(&record)
                .map_err(|e| image_status_of(&e))?;
            let details = serde_json::json!({
                "id": record.id,
                "manifestDigest": record.manifest_digest,
                "layers": record.layers,
                "layerDirs": self.images.layer_dirs(&record).map_err(|e| image_status_of(&e))?,
                "imageSpec": config,
            });
            info.insert("info".to_string(), details.to_string());
        }
        Ok(Response::new(ImageStatusResponse {
            image: Some(to_cri(&record)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let request = request.into_inner();
        let image = required_image(request.image.as_ref(), "image.image")?;
        let credentials = match &request.auth {
            Some(auth) => Credentials::from_cri(auth).map_err(Status::invalid_argument)?,
            None => None,
        };
        let id = self
            .images
            .pull(&image, credentials)
            .await
            .map_err(|e| image_status_of(&e))?;
        Ok(Response::new(PullImageResponse { image_ref: id }))
    }

    async fn remove_image(
        &self,
        request: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let image = required_image(request.get_ref().image.as_ref(), "image.image")?;
        // As with containerd, an image may go while containers made from it exist; the layers
        // their root filesystems stand on stay until the last of them is removed.
        let in_use = self.pods.snapshots_in_use().await;
        self.images
            .remove(&image, &in_use)
            .await
            .map_err(|e| image_status_of(&e))?;
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let usage = self.images.usage();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or_default();
        let filesystem = |mountpoint: &std::path::Path, usage: FsUsage| FilesystemUsage {
            timestamp,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: mountpoint.display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: usage.bytes }),
            inodes_used: Some(UInt64Value {
                value: usage.inodes,
            }),
        };
        let (containers_root, writable) = self.pods.writable_layers_usage().await;
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![filesystem(self.images.root(), usage)],
            container_filesystems: vec![filesystem(&containers_root, writable)],
        }))
    }
}

/// The CRI view of an image: a numeric USER becomes `uid`, a name becomes `username`.
fn to_cri(record: &ImageRecord) -> Image {
    let user = record.user.split(':').next().unwrap_or("");
    let (uid, username) = match user.parse::<i64>() {
        Ok(uid) => (Some(Int64Value { value: uid }), String::new()),
        Err(_) if user.is_empty() => (None, String::new()),
        Err(_) => (None, user.to_string()),
    };
    Image {
        id: record.id.clone(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid,
        username,
        spec: Some(ImageSpec {
            image: record.id.clone(),
            ..Default::default()
        }),
        pinned: record.pinned,
    }
}

//! A small OCI distribution client for the fixtures: pushes test images and fetches content
//! back, verifying every digest. The runtime has its own puller; this one exists so tests can
//! set up and check registry content independently of the code under test.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

use crate::digest::{Blob, sha256};
use crate::error::{Error, Result};
use crate::images::media::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::images::{ManifestFormat, TestImage};

/// Every manifest type, for `Accept`.
pub const ACCEPT_ALL: &[&str] = &[
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];

/// Largest manifest or blob the fixtures read into memory.
const MAX_READ: u64 = 256 << 20;

/// A client for one registry.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    authorization: Option<String>,
}

/// A manifest as the registry returned it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The Content-Type.
    pub media_type: String,
    /// The digest, checked against the body and the registry's Docker-Content-Digest header.
    pub digest: String,
    /// The body.
    pub data: Vec<u8>,
}

impl FetchedManifest {
    /// The body parsed as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.data)
            .map_err(|e| Error::Registry(format!("manifest {} is not JSON: {e}", self.digest)))
    }
}

impl Client {
    /// A client for the registry at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .build(),
            authorization: None,
        }
    }

    /// The same client, sending Basic credentials with every request.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Self {
        use base64::Engine;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.authorization = Some(format!("Basic {pair}"));
        self
    }

    /// The same client, sending `token` as a Bearer token with every request.
    pub fn with_bearer_token(mut self, token: &str) -> Self {
        self.authorization = Some(format!("Bearer {token}"));
        self
    }

    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let request = self.agent.request(method, url);
        match &self.authorization {
            Some(value) => request.set("Authorization", value),
            None => request,
        }
    }

    /// Uploads a blob unless the repository already has it.
    pub fn push_blob(&self, repo: &str, blob: &Blob) -> Result<()> {
        let blob_url = format!("{}/v2/{repo}/blobs/{}", self.base, blob.digest);
        if self.request("HEAD", &blob_url).call().is_ok() {
            return Ok(());
        }
        let start = self
            .request("POST", &format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .call()
            .map_err(|e| Error::Registry(format!("start upload to {repo}: {e}")))?;
        let location = start
            .header("Location")
            .ok_or_else(|| Error::Registry(format!("upload to {repo}: no Location header")))?;
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_string()
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        self.request(
            "PUT",
            &format!("{location}{separator}digest={}", blob.digest),
        )
        .set("Content-Type", "application/octet-stream")
        .send_bytes(&blob.data)
        .map_err(|e| Error::Registry(format!("upload {} to {repo}: {e}", blob.digest)))?;
        Ok(())
    }

    /// Uploads a manifest (or index) under `reference` and checks the digest the registry
    /// reports.
    pub fn push_manifest(&self, repo: &str, reference: &str, manifest: &Blob) -> Result<()> {
        let response = self
            .request(
                "PUT",
                &format!("{}/v2/{repo}/manifests/{reference}", self.base),
            )
            .set("Content-Type", &manifest.media_type)
            .send_bytes(&manifest.data)
            .map_err(|e| Error::Registry(format!("put manifest {repo}:{reference}: {e}")))?;
        match response.header("Docker-Content-Digest") {
            Some(digest) if digest != manifest.digest => Err(Error::Registry(format!(
                "registry stored {repo}:{reference} as {digest}, expected {}",
                manifest.digest
            ))),
            _ => Ok(()),
        }
    }

    /// Pushes an image's blobs and manifest; returns the manifest digest.
    pub fn push_image(
        &self,
        repo: &str,
        tag: &str,
        image: &TestImage,
        format: ManifestFormat,
    ) -> Result<String> {
        self.push_blob(repo, &image.config_blob(format))?;
        for layer in image.layer_blobs(format) {
            self.push_blob(repo, &layer)?;
        }
        let manifest = image.manifest(format);
        self.push_manifest(repo, tag, &manifest)?;
        Ok(manifest.digest)
    }

    /// Pushes each image by digest and an OCI index over them under `tag`; returns the index
    /// digest.
    pub fn push_index(
        &self,
        repo: &str,
        tag: &str,
        entries: &[(&TestImage, ManifestFormat)],
    ) -> Result<String> {
        for (image, format) in entries {
            let digest = image.manifest(*format).digest;
            self.push_image(repo, &digest, image, *format)?;
        }
        let index = crate::images::index(entries);
        self.push_manifest(repo, tag, &index)?;
        Ok(index.digest)
    }

    /// Fetches a manifest by tag or digest, accepting `accept`, and verifies its digest.
    pub fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<FetchedManifest> {
        let response = self
            .request(
                "GET",
                &format!("{}/v2/{repo}/manifests/{reference}", self.base),
            )
            .set("Accept", &accept.join(", "))
            .call()
            .map_err(|e| Error::Registry(format!("get manifest {repo}:{reference}: {e}")))?;
        let media_type = response.content_type().to_string();
        let header_digest = response.header("Docker-Content-Digest").map(str::to_string);
        let data = read_body(response)?;
        let digest = sha256(&data);
        if let Some(claimed) = header_digest
            && claimed != digest
        {
            return Err(Error::Registry(format!(
                "manifest {repo}:{reference} hashes to {digest}, registry says {claimed}"
            )));
        }
        if reference.starts_with("sha256:") && reference != digest {
            return Err(Error::Registry(format!(
                "manifest {repo}@{reference} hashes to {digest}"
            )));
        }
        Ok(FetchedManifest {
            media_type,
            digest,
            data,
        })
    }

    /// Deletes a blob from the repository (the registry runs with deletes enabled), for tests
    /// of pulls that break half-way.
    pub fn delete_blob(&self, repo: &str, digest: &str) -> Result<()> {
        self.request("DELETE", &format!("{}/v2/{repo}/blobs/{digest}", self.base))
            .call()
            .map_err(|e| Error::Registry(format!("delete blob {repo}@{digest}: {e}")))?;
        Ok(())
    }

    /// Fetches a blob and verifies that it hashes to `digest`.
    pub fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>> {
        let response = self
            .request("GET", &format!("{}/v2/{repo}/blobs/{digest}", self.base))
            .call()
            .map_err(|e| Error::Registry(format!("get blob {repo}@{digest}: {e}")))?;
        let data = read_body(response)?;
        let actual = sha256(&data);
        if actual != digest {
            return Err(Error::Registry(format!(
                "blob {repo}@{digest} hashes to {actual}"
            )));
        }
        Ok(data)
    }

    /// Fetches an image manifest and every blob it names, verifying digests and sizes; returns
    /// the manifest and the config JSON.
    pub fn pull_verified(&self, repo: &str, reference: &str) -> Result<(FetchedManifest, Value)> {
        let manifest = self.get_manifest(repo, reference, ACCEPT_ALL)?;
        let document = manifest.json()?;
        let config = descriptor_of(&document["config"])?;
        let config_data = self.get_blob(repo, &config.0)?;
        check_size(&config, config_data.len())?;
        let layers = document["layers"]
            .as_array()
            .ok_or_else(|| Error::Registry(format!("manifest {repo}:{reference} has no layers")))?;
        for layer in layers {
            let layer = descriptor_of(layer)?;
            let data = self.get_blob(repo, &layer.0)?;
            check_size(&layer, data.len())?;
        }
        let config_json = serde_json::from_slice(&config_data)
            .map_err(|e| Error::Registry(format!("config of {repo}:{reference}: {e}")))?;
        Ok((manifest, config_json))
    }
}

fn read_body(response: ureq::Response) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    response
        .into_reader()
        .take(MAX_READ)
        .read_to_end(&mut data)
        .map_err(|e| Error::Registry(format!("read response body: {e}")))?;
    Ok(data)
}

fn descriptor_of(value: &Value) -> Result<(String, u64)> {
    let digest = value["digest"].as_str();
    let size = value["size"].as_u64();
    match (digest, size) {
        (Some(digest), Some(size)) => Ok((digest.to_string(), size)),
        _ => Err(Error::Registry(format!("malformed descriptor {value}"))),
    }
}

fn check_size((digest, size): &(String, u64), actual: usize) -> Result<()> {
    if *size == actual as u64 {
        Ok(())
    } else {
        Err(Error::Registry(format!(
            "{digest}: descriptor says {size} bytes, got {actual}"
        )))
    }
}

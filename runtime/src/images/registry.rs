//! OCI distribution client: manifests and blobs over https (rustls) or plain http for
//! registries configured insecure, through mirrors, with Bearer-token and Basic auth.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};

use super::auth::{Challenge, Credentials};
use super::content::{ContentStore, sha256_digest};
use super::error::{ImageError, Result};
use super::media;
use super::reference::Reference;
use crate::config::RegistryConfig;

/// Largest manifest accepted (as containerd: 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// A manifest as fetched, verified against its digest.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// Media type from the document (or the Content-Type when the document has none).
    pub media_type: String,
    /// The verified digest of `data`.
    pub digest: String,
    /// The bytes.
    pub data: Vec<u8>,
    /// The endpoint that served it; blobs come from the same one.
    pub endpoint: String,
}

/// Talks to registries.
#[derive(Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    config: RegistryConfig,
    /// Bearer tokens by endpoint and repository.
    tokens: Mutex<HashMap<String, String>>,
}

impl RegistryClient {
    /// A client for the configured registries.
    pub fn new(config: RegistryConfig) -> Result<Self> {
        // rustls needs one process-wide crypto provider; a second install is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("capstan/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ImageError::Registry {
                endpoint: "(client)".into(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(RegistryClient {
            http,
            config,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The registry configuration in force.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Fetches the manifest `locator` (tag or digest) of `reference`, trying mirrors first.
    pub async fn get_manifest(
        &self,
        reference: &Reference,
        locator: &str,
        credentials: Option<&Credentials>,
    ) -> Result<FetchedManifest> {
        let endpoints = self.config.endpoints(&reference.domain);
        let mut last_error = None;
        let mut all_not_found = true;
        for endpoint in &endpoints {
            let url = format!("{endpoint}/v2/{}/manifests/{locator}", reference.repository);
            let outcome = self
                .send(
                    endpoint,
                    reference,
                    &url,
                    Some(media::ACCEPT_MANIFESTS),
                    credentials,
                )
                .await;
            let response = match outcome {
                Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                    tracing::debug!(%endpoint, %reference, "manifest not found here");
                    continue;
                }
                Ok(response) => response,
                Err(e) => {
                    tracing::debug!(%endpoint, %reference, error = %e, "endpoint failed");
                    all_not_found = false;
                    last_error = Some(e);
                    continue;
                }
            };
            let content_type = header_text(&response, CONTENT_TYPE);
            let data = read_limited(response, endpoint, MAX_MANIFEST_BYTES).await?;
            let digest = sha256_digest(&data);
            if locator.starts_with("sha256:") && locator != digest {
                return Err(ImageError::Mismatch {
                    what: format!("manifest {reference} from {endpoint}"),
                    expected: locator.into(),
                    actual: digest,
                });
            }
            let media_type = media::document_type(&data).unwrap_or(content_type);
            return Ok(FetchedManifest {
                media_type,
                digest,
                data,
                endpoint: endpoint.clone(),
            });
        }
        match last_error {
            Some(error) if !all_not_found => Err(error),
            _ => Err(ImageError::ManifestUnknown {
                reference: format!("{}@{locator}", reference.name()),
                endpoints: endpoints.join(", "),
            }),
        }
    }

    /// Fetches a small blob (a config) from `endpoint` and verifies it.
    pub async fn get_small_blob(
        &self,
        endpoint: &str,
        reference: &Reference,
        digest: &str,
        size: u64,
        credentials: Option<&Credentials>,
    ) -> Result<Vec<u8>> {
        let response = self
            .blob_response(endpoint, reference, digest, credentials)
            .await?;
        let limit = usize::try_from(size)
            .unwrap_or(usize::MAX)
            .min(MAX_MANIFEST_BYTES * 4);
        let data = read_limited(response, endpoint, limit).await?;
        let actual = sha256_digest(&data);
        if actual != digest || data.len() as u64 != size {
            return Err(ImageError::Mismatch {
                what: format!("blob {digest} of {reference}"),
                expected: format!("{digest} ({size} bytes)"),
                actual: format!("{actual} ({} bytes)", data.len()),
            });
        }
        Ok(data)
    }

    /// Streams a blob from `endpoint` into the content store, verified.
    pub async fn download_blob(
        &self,
        endpoint: &str,
        reference: &Reference,
        digest: &str,
        size: u64,
        credentials: Option<&Credentials>,
        store: &ContentStore,
    ) -> Result<u64> {
        let response = self
            .blob_response(endpoint, reference, digest, credentials)
            .await?;
        store
            .write_stream(digest, Some(size), Box::pin(response.bytes_stream()))
            .await
    }

    async fn blob_response(
        &self,
        endpoint: &str,
        reference: &Reference,
        digest: &str,
        credentials: Option<&Credentials>,
    ) -> Result<reqwest::Response> {
        let url = format!("{endpoint}/v2/{}/blobs/{digest}", reference.repository);
        let response = self
            .send(endpoint, reference, &url, None, credentials)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(ImageError::ManifestUnknown {
                reference: format!("blob {digest} of {reference}"),
                endpoints: endpoint.to_string(),
            });
        }
        Ok(response)
    }

    /// Sends a GET, answering an auth challenge once; returns 2xx and 404 responses.
    async fn send(
        &self,
        endpoint: &str,
        reference: &Reference,
        url: &str,
        accept: Option<&str>,
        credentials: Option<&Credentials>,
    ) -> Result<reqwest::Response> {
        let token_key = format!("{endpoint}/{}", reference.repository);
        let cached = self.cached_token(&token_key);
        let mut authorization = cached.clone().map(|token| format!("Bearer {token}"));
        if authorization.is_none()
            && let Some(token) = credentials
                .map(|c| &c.registry_token)
                .filter(|t| !t.is_empty())
        {
            authorization = Some(format!("Bearer {token}"));
        }
        let response = self
            .get(endpoint, url, accept, authorization.as_deref())
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return check_status(response, endpoint, reference);
        }
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let challenge = Challenge::parse(&challenge).ok_or_else(|| ImageError::Unauthorized {
            reference: reference.to_string(),
            endpoint: endpoint.into(),
            detail: "401 without a usable WWW-Authenticate challenge".into(),
        })?;
        let authorization = match challenge.scheme.as_str() {
            "bearer" => {
                let token = self
                    .fetch_token(endpoint, reference, &challenge, credentials)
                    .await?;
                self.tokens
                    .lock()
                    .map(|mut tokens| tokens.insert(token_key, token.clone()))
                    .ok();
                format!("Bearer {token}")
            }
            "basic" => match credentials.filter(|c| !c.username.is_empty()) {
                Some(credentials) => credentials.basic(),
                None => {
                    return Err(ImageError::Unauthorized {
                        reference: reference.to_string(),
                        endpoint: endpoint.into(),
                        detail: "the registry requires credentials and none were given".into(),
                    });
                }
            },
            other => {
                return Err(ImageError::Unauthorized {
                    reference: reference.to_string(),
                    endpoint: endpoint.into(),
                    detail: format!("unsupported auth scheme {other:?}"),
                });
            }
        };
        let response = self
            .get(endpoint, url, accept, Some(&authorization))
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED
            || response.status() == StatusCode::FORBIDDEN
        {
            return Err(ImageError::Unauthorized {
                reference: reference.to_string(),
                endpoint: endpoint.into(),
                detail: format!("credentials refused ({})", response.status()),
            });
        }
        check_status(response, endpoint, reference)
    }

    async fn get(
        &self,
        endpoint: &str,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<reqwest::Response> {
        let mut request = self.http.get(url);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        request.send().await.map_err(|e| ImageError::Registry {
            endpoint: endpoint.into(),
            message: format!("request failed: {}", error_chain(&e)),
        })
    }

    async fn fetch_token(
        &self,
        endpoint: &str,
        reference: &Reference,
        challenge: &Challenge,
        credentials: Option<&Credentials>,
    ) -> Result<String> {
        let realm = challenge
            .params
            .get("realm")
            .ok_or_else(|| ImageError::Unauthorized {
                reference: reference.to_string(),
                endpoint: endpoint.into(),
                detail: "Bearer challenge without a realm".into(),
            })?;
        let scope = challenge
            .params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", reference.repository));
        let mut query = vec![("scope", scope)];
        if let Some(service) = challenge.params.get("service") {
            query.push(("service", service.clone()));
        }
        let mut request = self.http.get(realm).query(&query);
        if let Some(credentials) = credentials.filter(|c| !c.username.is_empty()) {
            request = request.header(AUTHORIZATION, credentials.basic());
        }
        let response = request.send().await.map_err(|e| ImageError::Registry {
            endpoint: realm.clone(),
            message: format!("token request failed: {}", error_chain(&e)),
        })?;
        if !response.status().is_success() {
            return Err(ImageError::Unauthorized {
                reference: reference.to_string(),
                endpoint: realm.clone(),
                detail: format!("token service answered {}", response.status()),
            });
        }
        let body = read_limited(response, realm, 1 << 20).await?;
        let document: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| ImageError::Registry {
                endpoint: realm.clone(),
                message: format!("token response is not JSON: {e}"),
            })?;
        document
            .get("token")
            .or_else(|| document.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| ImageError::Registry {
                endpoint: realm.clone(),
                message: "token response has no token".into(),
            })
    }

    fn cached_token(&self, key: &str) -> Option<String> {
        self.tokens
            .lock()
            .ok()
            .and_then(|tokens| tokens.get(key).cloned())
    }
}

fn check_status(
    response: reqwest::Response,
    endpoint: &str,
    reference: &Reference,
) -> Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() || status == StatusCode::NOT_FOUND {
        Ok(response)
    } else if status == StatusCode::FORBIDDEN {
        Err(ImageError::Unauthorized {
            reference: reference.to_string(),
            endpoint: endpoint.into(),
            detail: "403 Forbidden".into(),
        })
    } else {
        Err(ImageError::Registry {
            endpoint: endpoint.into(),
            message: format!("{reference}: unexpected status {status}"),
        })
    }
}

async fn read_limited(
    mut response: reqwest::Response,
    endpoint: &str,
    limit: usize,
) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ImageError::Registry {
        endpoint: endpoint.into(),
        message: format!("reading the response failed: {}", error_chain(&e)),
    })? {
        if data.len() + chunk.len() > limit {
            return Err(ImageError::Registry {
                endpoint: endpoint.into(),
                message: format!("response larger than {limit} bytes"),
            });
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

/// A header's value without parameters (`type/subtype; charset=x` → `type/subtype`).
fn header_text(response: &reqwest::Response, name: reqwest::header::HeaderName) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// reqwest's top-level message hides the cause (connection refused, TLS): show the chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

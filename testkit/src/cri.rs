//! A CRI v1 client over a unix socket, as crictl and the kubelet talk to a runtime.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_proto::image_service_client::ImageServiceClient;
use capstan_proto::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// Clients for both CRI services on one connection.
#[derive(Debug, Clone)]
pub struct CriClient {
    /// RuntimeService.
    pub runtime: RuntimeServiceClient<Channel>,
    /// ImageService.
    pub images: ImageServiceClient<Channel>,
}

impl CriClient {
    /// Connects to the runtime listening on `socket`, retrying up to `timeout` while it starts
    /// (a stale socket file from a killed runtime refuses connections until it is replaced).
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + timeout;
        loop {
            match Self::connect_once(socket).await {
                Ok(client) => return Ok(client),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn connect_once(socket: &Path) -> Result<Self> {
        let path: PathBuf = socket.to_path_buf();
        // The URI is required by tonic but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map(TokioIo::new)
                }
            }))
            .await
            .map_err(|e| Error::Command(format!("connect to {}: {e}", socket.display())))?;
        Ok(CriClient {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }
}

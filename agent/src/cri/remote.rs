//! A remote CRI endpoint behind the server traits: every call is forwarded to a tonic client on
//! a unix socket.

use std::path::PathBuf;
use std::sync::Arc;

use capstan_proto::image_service_client::ImageServiceClient;
use capstan_proto::image_service_server::ImageService;
use capstan_proto::runtime_service_client::RuntimeServiceClient;
use capstan_proto::runtime_service_server::RuntimeService;
use capstan_proto::*;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::{Cri, EventStream};

/// Why a remote runtime could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Only unix sockets are supported.
    #[error(
        "--container-runtime-endpoint {0:?}: only unix:///absolute/path endpoints are supported"
    )]
    BadEndpoint(String),
    /// The socket did not answer.
    #[error("connect to the CRI runtime at {endpoint}: {source}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// Why.
        source: tonic::transport::Error,
    },
}

/// Connects to the CRI runtime serving `endpoint` (`unix:///path`).
pub async fn connect(endpoint: &str) -> Result<Cri, ConnectError> {
    let path: PathBuf = endpoint
        .strip_prefix("unix://")
        .filter(|path| path.starts_with('/'))
        .map(PathBuf::from)
        .ok_or_else(|| ConnectError::BadEndpoint(endpoint.to_string()))?;
    // tonic needs a URI; the connector dials the socket instead.
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
        .map_err(|source| ConnectError::Transport {
            endpoint: endpoint.to_string(),
            source,
        })?;
    Ok(Cri::new(
        Arc::new(RemoteRuntime(RuntimeServiceClient::new(channel.clone()))),
        Arc::new(RemoteImages(ImageServiceClient::new(channel))),
    ))
}

struct RemoteRuntime(RuntimeServiceClient<Channel>);
struct RemoteImages(ImageServiceClient<Channel>);

/// Forwards unary calls to the client (a clone per call: tonic clients are cheap handles).
macro_rules! forward {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        $(
            // Written in async_trait's expanded form: the attribute cannot see into a macro.
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                request: Request<$request>,
            ) -> std::pin::Pin<
                Box<
                    dyn std::future::Future<Output = Result<Response<$response>, Status>>
                        + Send
                        + 'async_trait,
                >,
            >
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                let mut client = self.0.clone();
                Box::pin(async move { client.$method(request).await })
            }
        )*
    };
}

#[tonic::async_trait]
impl RuntimeService for RemoteRuntime {
    type GetContainerEventsStream = EventStream;

    forward! {
        version(VersionRequest) -> VersionResponse;
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
        create_container(CreateContainerRequest) -> CreateContainerResponse;
        start_container(StartContainerRequest) -> StartContainerResponse;
        stop_container(StopContainerRequest) -> StopContainerResponse;
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
        list_containers(ListContainersRequest) -> ListContainersResponse;
        container_status(ContainerStatusRequest) -> ContainerStatusResponse;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        exec_sync(ExecSyncRequest) -> ExecSyncResponse;
        exec(ExecRequest) -> ExecResponse;
        attach(AttachRequest) -> AttachResponse;
        port_forward(PortForwardRequest) -> PortForwardResponse;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
        status(StatusRequest) -> StatusResponse;
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
        runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse;
    }

    async fn get_container_events(
        &self,
        request: Request<GetEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let stream = self
            .0
            .clone()
            .get_container_events(request)
            .await?
            .into_inner();
        Ok(Response::new(stream.boxed()))
    }
}

#[tonic::async_trait]
impl ImageService for RemoteImages {
    forward! {
        list_images(ListImagesRequest) -> ListImagesResponse;
        image_status(ImageStatusRequest) -> ImageStatusResponse;
        pull_image(PullImageRequest) -> PullImageResponse;
        remove_image(RemoveImageRequest) -> RemoveImageResponse;
        image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse;
    }
}

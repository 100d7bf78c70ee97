//! CRI RuntimeService over the pod manager and the streaming server. RPCs not built yet answer
//! Unimplemented naming what is missing.

use std::collections::HashMap;
use std::pin::Pin;

use capstan_proto::runtime_service_server::RuntimeService;
use capstan_proto::{
    AttachRequest, AttachResponse, CgroupDriver, CheckpointContainerRequest,
    CheckpointContainerResponse, ContainerEventResponse, ContainerStatsRequest,
    ContainerStatsResponse, ContainerStatusRequest, ContainerStatusResponse,
    CreateContainerRequest, CreateContainerResponse, ExecRequest, ExecResponse, ExecSyncRequest,
    ExecSyncResponse, GetEventsRequest, LinuxRuntimeConfiguration, ListContainerStatsRequest,
    ListContainerStatsResponse, ListContainersRequest, ListContainersResponse,
    ListMetricDescriptorsRequest, ListMetricDescriptorsResponse, ListPodSandboxMetricsRequest,
    ListPodSandboxMetricsResponse, ListPodSandboxRequest, ListPodSandboxResponse,
    ListPodSandboxStatsRequest, ListPodSandboxStatsResponse, PodSandboxStatsRequest,
    PodSandboxStatsResponse, PodSandboxStatusRequest, PodSandboxStatusResponse, PortForwardRequest,
    PortForwardResponse, RemoveContainerRequest, RemoveContainerResponse, RemovePodSandboxRequest,
    RemovePodSandboxResponse, ReopenContainerLogRequest, ReopenContainerLogResponse,
    RunPodSandboxRequest, RunPodSandboxResponse, RuntimeCondition, RuntimeConfigRequest,
    RuntimeConfigResponse, RuntimeStatus, StartContainerRequest, StartContainerResponse,
    StatusRequest, StatusResponse, StopContainerRequest, StopContainerResponse,
    StopPodSandboxRequest, StopPodSandboxResponse, UpdateContainerResourcesRequest,
    UpdateContainerResourcesResponse, UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse,
    VersionRequest, VersionResponse,
};
use std::sync::Arc;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::not_implemented;
use crate::network::{NetworkError, PodCidrUpdate};
use crate::pods::PodManager;
use crate::streaming::{StreamFlags, StreamingServer, Target};

/// Runtime name reported by Version.
pub const RUNTIME_NAME: &str = "capstan";

/// CRI RuntimeService.
#[derive(Debug, Clone)]
pub struct CriRuntimeService {
    pods: Arc<PodManager>,
    streaming: StreamingServer,
}

impl CriRuntimeService {
    /// The runtime service over `pods`, handing out URLs on `streaming`.
    pub fn new(pods: Arc<PodManager>, streaming: StreamingServer) -> Self {
        CriRuntimeService { pods, streaming }
    }
}

/// The gRPC status of a network error met outside a pod operation.
fn network_status(error: &NetworkError) -> Status {
    let message = error.to_string();
    match error {
        NetworkError::InvalidCidr { .. } => Status::invalid_argument(message),
        NetworkError::Template { .. } => Status::failed_precondition(message),
        _ => Status::internal(message),
    }
}

fn condition(kind: &str, ready: bool, reason: &str, message: &str) -> RuntimeCondition {
    RuntimeCondition {
        r#type: kind.to_string(),
        status: ready,
        reason: reason.to_string(),
        message: message.to_string(),
    }
}

#[tonic::async_trait]
impl RuntimeService for CriRuntimeService {
    type GetContainerEventsStream =
        Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send + 'static>>;

    async fn version(
        &self,
        _request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: capstan_proto::CRI_API_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        // The runtime is ready once it serves; the network when a CNI config loads, its
        // plugins speak its version and (spec 1.1) their STATUS succeeds.
        let network = self.pods.network().ready().await;
        let mut info = HashMap::new();
        if request.into_inner().verbose {
            // What crictl info shows: the network config in force and how loading it went.
            let load_status = match &network {
                Ok(()) => "OK".to_string(),
                Err(e) => e.to_string(),
            };
            let config = match self.pods.network().load() {
                Ok((path, list)) => serde_json::json!({ "file": path, "list": list }),
                Err(_) => serde_json::Value::Null,
            };
            info.insert("lastCNILoadStatus".to_string(), load_status);
            info.insert("cniconfig".to_string(), config.to_string());
        }
        let conditions = vec![
            condition("RuntimeReady", true, "", ""),
            match network {
                Ok(()) => condition("NetworkReady", true, "", ""),
                Err(e) => condition(
                    "NetworkReady",
                    false,
                    "NetworkPluginNotReady",
                    &e.to_string(),
                ),
            },
        ];
        Ok(Response::new(StatusResponse {
            status: Some(RuntimeStatus { conditions }),
            info,
            ..Default::default()
        }))
    }

    async fn runtime_config(
        &self,
        _request: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        Ok(Response::new(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<RunPodSandboxRequest>,
    ) -> Result<Response<RunPodSandboxResponse>, Status> {
        let config = request
            .into_inner()
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        let pod_sandbox_id = self
            .pods
            .run_sandbox(config)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<StopPodSandboxRequest>,
    ) -> Result<Response<StopPodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        self.pods.stop_sandbox(&id).await.map_err(|e| e.status())?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<RemovePodSandboxRequest>,
    ) -> Result<Response<RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        self.pods
            .remove_sandbox(&id)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<PodSandboxStatusRequest>,
    ) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let request = request.into_inner();
        let id = request.pod_sandbox_id;
        let status = self
            .pods
            .sandbox_status(&id)
            .await
            .map_err(|e| e.status())?;
        let info = if request.verbose {
            let info = self.pods.sandbox_info(&id).await.map_err(|e| e.status())?;
            HashMap::from([("info".to_string(), info.to_string())])
        } else {
            HashMap::new()
        };
        Ok(Response::new(PodSandboxStatusResponse {
            status: Some(status),
            info,
            ..Default::default()
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<ListPodSandboxRequest>,
    ) -> Result<Response<ListPodSandboxResponse>, Status> {
        let items = self.pods.list_sandboxes(request.into_inner().filter).await;
        Ok(Response::new(ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let request = request.into_inner();
        let config = request
            .config
            .ok_or_else(|| Status::invalid_argument("config is required"))?;
        let container_id = self
            .pods
            .create_container(&request.pod_sandbox_id, config, request.sandbox_config)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(CreateContainerResponse { container_id }))
    }

    async fn start_container(
        &self,
        request: Request<StartContainerRequest>,
    ) -> Result<Response<StartContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        self.pods
            .start_container(&id)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: Request<StopContainerRequest>,
    ) -> Result<Response<StopContainerResponse>, Status> {
        let request = request.into_inner();
        self.pods
            .stop_container(&request.container_id, request.timeout)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: Request<RemoveContainerRequest>,
    ) -> Result<Response<RemoveContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        self.pods
            .remove_container(&id)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let containers = self.pods.list_containers(request.into_inner().filter).await;
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let request = request.into_inner();
        let id = request.container_id;
        let status = self
            .pods
            .container_status(&id)
            .await
            .map_err(|e| e.status())?;
        let info = if request.verbose {
            let info = self
                .pods
                .container_info(&id)
                .await
                .map_err(|e| e.status())?;
            HashMap::from([("info".to_string(), info.to_string())])
        } else {
            HashMap::new()
        };
        Ok(Response::new(ContainerStatusResponse {
            status: Some(status),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        request: Request<UpdateContainerResourcesRequest>,
    ) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        let request = request.into_inner();
        let resources = request
            .linux
            .ok_or_else(|| Status::invalid_argument("linux is required"))?;
        self.pods
            .update_container_resources(&request.container_id, &resources)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }

    async fn get_container_events(
        &self,
        _request: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        use tokio_stream::StreamExt;
        let pods = Arc::clone(&self.pods);
        let events = tokio_stream::wrappers::BroadcastStream::new(self.pods.subscribe())
            // A subscriber too slow to keep up misses events; the kubelet's relist covers them.
            .filter_map(|event| event.ok())
            .then(move |event| {
                let pods = Arc::clone(&pods);
                async move { Ok(pods.with_statuses(event).await) }
            });
        Ok(Response::new(Box::pin(events)))
    }

    async fn reopen_container_log(
        &self,
        request: Request<ReopenContainerLogRequest>,
    ) -> Result<Response<ReopenContainerLogResponse>, Status> {
        let id = request.into_inner().container_id;
        self.pods
            .reopen_container_log(&id)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(ReopenContainerLogResponse {}))
    }

    async fn container_stats(
        &self,
        request: Request<ContainerStatsRequest>,
    ) -> Result<Response<ContainerStatsResponse>, Status> {
        let id = request.into_inner().container_id;
        let stats = self
            .pods
            .container_stats(&id)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
    }

    async fn list_container_stats(
        &self,
        request: Request<ListContainerStatsRequest>,
    ) -> Result<Response<ListContainerStatsResponse>, Status> {
        let stats = self
            .pods
            .list_container_stats(request.into_inner().filter)
            .await;
        Ok(Response::new(ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<PodSandboxStatsRequest>,
    ) -> Result<Response<PodSandboxStatsResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let stats = self.pods.sandbox_stats(&id).await.map_err(|e| e.status())?;
        Ok(Response::new(PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<ListPodSandboxStatsRequest>,
    ) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        let stats = self
            .pods
            .list_sandbox_stats(request.into_inner().filter)
            .await;
        Ok(Response::new(ListPodSandboxStatsResponse { stats }))
    }

    async fn exec_sync(
        &self,
        request: Request<ExecSyncRequest>,
    ) -> Result<Response<ExecSyncResponse>, Status> {
        let request = request.into_inner();
        let timeout = std::time::Duration::from_secs(request.timeout.max(0) as u64);
        let output = self
            .pods
            .exec_sync(&request.container_id, request.cmd, timeout)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(ExecSyncResponse {
            stdout: output.stdout,
            stderr: output.stderr,
            exit_code: output.exit_code,
        }))
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let request = request.into_inner();
        let streams = StreamFlags {
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
            tty: request.tty,
        };
        let target = self
            .pods
            .exec_target(&request.container_id, request.cmd, streams)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(ExecResponse {
            url: self.streaming.url(Target::Exec(target)),
        }))
    }

    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<AttachResponse>, Status> {
        let request = request.into_inner();
        let streams = StreamFlags {
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
            tty: request.tty,
        };
        let target = self
            .pods
            .attach_target(&request.container_id, streams)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(AttachResponse {
            url: self.streaming.url(Target::Attach(target)),
        }))
    }

    async fn port_forward(
        &self,
        request: Request<PortForwardRequest>,
    ) -> Result<Response<PortForwardResponse>, Status> {
        // The ports are named by the client on each stream, not here (as the kubelet).
        let request = request.into_inner();
        let target = self
            .pods
            .port_forward_target(&request.pod_sandbox_id)
            .await
            .map_err(|e| e.status())?;
        Ok(Response::new(PortForwardResponse {
            url: self.streaming.url(Target::PortForward(target)),
        }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<UpdateRuntimeConfigRequest>,
    ) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        let pod_cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        match self.pods.network().update_pod_cidr(&pod_cidr) {
            Ok(PodCidrUpdate::Unchanged) => {}
            Ok(PodCidrUpdate::Recorded) => tracing::info!(
                %pod_cidr,
                "pod CIDR recorded; no [cni] conf_template is configured, so no network config is written"
            ),
            Ok(PodCidrUpdate::Rendered(file)) => {
                tracing::info!(%pod_cidr, file = %file.display(), "network config rendered from conf_template")
            }
            Err(e) => {
                tracing::warn!(%pod_cidr, error = %e, "UpdateRuntimeConfig refused");
                return Err(network_status(&e));
            }
        }
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    async fn checkpoint_container(
        &self,
        _request: Request<CheckpointContainerRequest>,
    ) -> Result<Response<CheckpointContainerResponse>, Status> {
        Err(not_implemented(
            "CheckpointContainer",
            "checkpointing is not built yet",
        ))
    }

    async fn list_metric_descriptors(
        &self,
        _request: Request<ListMetricDescriptorsRequest>,
    ) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(ListMetricDescriptorsResponse {
            descriptors: crate::pods::metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<ListPodSandboxMetricsRequest>,
    ) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        let pod_metrics = self.pods.list_sandbox_metrics().await;
        Ok(Response::new(ListPodSandboxMetricsResponse { pod_metrics }))
    }
}

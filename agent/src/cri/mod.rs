//! The agent's view of a container runtime: the CRI v1 services, either the built-in runtime
//! called in-process or any remote CRI endpoint (containerd, say), behind the same traits the
//! gRPC server implements.

mod remote;

use std::pin::Pin;
use std::sync::Arc;

use capstan_proto::image_service_server::ImageService;
use capstan_proto::runtime_service_server::RuntimeService;
use capstan_proto::{ContainerEventResponse, ExecSyncRequest};
use futures::Stream;
use tonic::{Request, Status};

pub use remote::{ConnectError, connect};

/// The stream of container events every runtime implementation hands out.
pub type EventStream =
    Pin<Box<dyn Stream<Item = Result<ContainerEventResponse, Status>> + Send + 'static>>;

/// A CRI RuntimeService whose event stream is boxed, so in-process and remote runtimes share a
/// type.
pub type DynRuntimeService = dyn RuntimeService<GetContainerEventsStream = EventStream>;

/// Both CRI services of one runtime.
#[derive(Clone)]
pub struct Cri {
    /// RuntimeService: sandboxes, containers, exec, stats, events.
    pub runtime: Arc<DynRuntimeService>,
    /// ImageService: pull, list, status, remove.
    pub images: Arc<dyn ImageService>,
}

impl std::fmt::Debug for Cri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cri")
    }
}

/// What a command run to completion in a container produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Exit status.
    pub exit_code: i32,
}

impl Cri {
    /// Wraps a runtime's two services.
    pub fn new(runtime: Arc<DynRuntimeService>, images: Arc<dyn ImageService>) -> Self {
        Cri { runtime, images }
    }

    /// Runs `cmd` to completion in container `container_id`, giving up after `timeout_seconds`
    /// (0: no limit).
    pub async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout_seconds: i64,
    ) -> Result<ExecOutcome, Status> {
        let reply = self
            .runtime
            .exec_sync(Request::new(ExecSyncRequest {
                container_id: container_id.to_string(),
                cmd,
                timeout: timeout_seconds,
            }))
            .await?
            .into_inner();
        Ok(ExecOutcome {
            stdout: reply.stdout,
            stderr: reply.stderr,
            exit_code: reply.exit_code,
        })
    }
}

//! grpc probes: `grpc.health.v1.Health/Check` over plain-text HTTP/2, as the kubelet calls it.
//! The two messages are written by hand; generating them would need protoc for two fields.

use std::net::IpAddr;
use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Endpoint;

use super::{PROBE_USER_AGENT, ProbeOutcome};

/// The health check's full method path.
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    /// The service to check; empty for the server as a whole.
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    /// A [`ServingStatus`] value.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServingStatus {
    /// 0.
    Unknown = 0,
    /// 1: the only healthy answer.
    Serving = 1,
    /// 2.
    NotServing = 2,
    /// 3 (Watch only).
    ServiceUnknown = 3,
}

fn status_name(status: i32) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// Calls the health check of `host:port` for `service` within `timeout`.
pub async fn probe(host: IpAddr, port: u16, service: &str, timeout: Duration) -> ProbeOutcome {
    let addr = match host {
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    };
    let endpoint = match Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e,
        Err(e) => return ProbeOutcome::Unknown(format!("invalid address {addr}: {e}")),
    };
    let endpoint = match endpoint.user_agent(PROBE_USER_AGENT) {
        Ok(e) => e.connect_timeout(timeout).timeout(timeout),
        Err(e) => return ProbeOutcome::Unknown(format!("invalid user agent: {e}")),
    };
    let call = async {
        let channel = endpoint.connect().await.map_err(|_| {
            ProbeOutcome::Failure(format!(
                "timeout: failed to connect service {addr:?} within {timeout:?}"
            ))
        })?;
        let mut client = tonic::client::Grpc::new(channel);
        client
            .ready()
            .await
            .map_err(|e| ProbeOutcome::Failure(format!("service {addr:?} not ready: {e}")))?;
        let codec: tonic_prost::ProstCodec<HealthCheckRequest, HealthCheckResponse> =
            tonic_prost::ProstCodec::default();
        let request = tonic::Request::new(HealthCheckRequest {
            service: service.to_string(),
        });
        client
            .unary(request, PathAndQuery::from_static(HEALTH_CHECK_PATH), codec)
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unimplemented => ProbeOutcome::Failure(
                    "this server does not implement the grpc health protocol (grpc.health.v1.Health)"
                        .into(),
                ),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => ProbeOutcome::Failure(
                    format!("timeout: health rpc did not complete within {timeout:?}"),
                ),
                _ => ProbeOutcome::Failure(format!(
                    "rpc error: code = {:?} desc = {}",
                    status.code(),
                    status.message()
                )),
            })
    };
    let response = match tokio::time::timeout(timeout, call).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(outcome)) => return outcome,
        Err(_) => {
            return ProbeOutcome::Failure(format!(
                "timeout: health rpc did not complete within {timeout:?}"
            ));
        }
    };
    if response.status == ServingStatus::Serving as i32 {
        ProbeOutcome::Success
    } else {
        ProbeOutcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            status_name(response.status)
        ))
    }
}

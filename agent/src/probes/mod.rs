//! Container probes as the kubelet runs them: one check ([`run_probe`]: exec, httpGet,
//! tcpSocket, grpc) and a worker per probe ([`spawn_probe_worker`]) that applies the timing and
//! thresholds and publishes the result.

mod counters;
pub mod grpc;
pub mod http;
mod worker;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::cri::Cri;

pub use counters::ProbeCounters;
pub use worker::{ProbeHandle, ProbeKind, ProbeResult, ProbeState, spawn_probe_worker};

/// The User-Agent of probe requests (kube-probe/<major>.<minor> of the API we implement).
pub const PROBE_USER_AGENT: &str = "kube-probe/1.33";

/// What one probe run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The check passed (for httpGet, a redirect to another host counts, as for the kubelet).
    Success,
    /// The check failed, with the reason for the event.
    Failure(String),
    /// The check could not be made (a runtime error, a port name that does not resolve):
    /// the kubelet throws such a result away rather than count it.
    Unknown(String),
}

/// The container a probe or hook is aimed at.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The pod's primary IP, once the sandbox has one.
    pub pod_ip: Option<IpAddr>,
    /// The pod shares the host's network: its endpoints are on 127.0.0.1.
    pub host_network: bool,
    /// CRI id of the container, for exec.
    pub container_id: String,
    /// The container's spec, for named ports.
    pub container: Container,
}

impl ProbeTarget {
    /// The host a probe without an explicit host connects to.
    pub fn default_host(&self) -> Result<IpAddr, String> {
        if self.host_network {
            return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        self.pod_ip
            .ok_or_else(|| "the pod has no IP address yet".to_string())
    }

    /// A port given by number or by the name of one of the container's ports.
    pub fn resolve_port(&self, port: &IntOrString) -> Result<u16, String> {
        let number = match port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => match self
                .container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
            {
                Some(p) => p.container_port,
                // A number written as a string is a number, as kubectl users expect.
                None => name.parse::<i32>().map_err(|_| {
                    format!(
                        "couldn't find port {name:?} in container {:?}",
                        self.container.name
                    )
                })?,
            },
        };
        u16::try_from(number)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("invalid port number: {number}"))
    }
}

/// The timeout of a probe (timeoutSeconds, default 1 s, at least 1 s).
pub fn probe_timeout(probe: &Probe) -> Duration {
    Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64)
}

/// The URL and headers of an httpGet action against `target`.
pub fn http_request(
    action: &HTTPGetAction,
    target: &ProbeTarget,
) -> Result<(http::Url, Vec<(String, String)>), String> {
    let host = match action.host.as_deref() {
        Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        _ => target.default_host()?.to_string(),
    };
    let port = target.resolve_port(&action.port)?;
    let https = match action.scheme.as_deref().unwrap_or("HTTP") {
        s if s.eq_ignore_ascii_case("HTTP") => false,
        s if s.eq_ignore_ascii_case("HTTPS") => true,
        other => return Err(format!("unsupported scheme {other:?}")),
    };
    let path = action.path.as_deref().unwrap_or("");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let headers = action
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    Ok((
        http::Url {
            https,
            host,
            port,
            path,
        },
        headers,
    ))
}

/// An httpGet probe: 200 to 399 is success, anything else or no answer in time a failure.
pub async fn http_probe(
    action: &HTTPGetAction,
    target: &ProbeTarget,
    timeout: Duration,
) -> ProbeOutcome {
    let (url, headers) = match http_request(action, target) {
        Ok(r) => r,
        Err(e) => return ProbeOutcome::Unknown(e),
    };
    match http::get(&url, &headers, PROBE_USER_AGENT, timeout).await {
        Ok(r) if (200..400).contains(&r.status) => ProbeOutcome::Success,
        Ok(r) => ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {}", r.status)),
        Err(e) => ProbeOutcome::Failure(e),
    }
}

/// A tcpSocket probe: a connection accepted within the timeout is success.
pub async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> ProbeOutcome {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => ProbeOutcome::Success,
        Ok(Err(e)) => ProbeOutcome::Failure(format!("dial tcp {host}:{port}: {e}")),
        Err(_) => ProbeOutcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

/// An exec probe: the command's exit status 0 is success; its output is the failure reason.
pub async fn exec_probe(
    cri: &Cri,
    container_id: &str,
    command: Vec<String>,
    timeout: Duration,
) -> ProbeOutcome {
    let seconds = timeout.as_secs().max(1) as i64;
    // The runtime enforces the timeout; the margin here only guards against one that does not.
    let call = cri.exec_sync(container_id, command.clone(), seconds);
    let result = tokio::time::timeout(timeout + Duration::from_secs(2), call)
        .await
        .ok();
    exec_outcome(&command, result)
}

/// Judges an exec probe's run: exit 0 passes, another exit status or a timeout (the runtime's
/// DeadlineExceeded, or `None` for the local guard) fails, any other runtime error is Unknown.
fn exec_outcome(
    command: &[String],
    result: Option<Result<crate::cri::ExecOutcome, tonic::Status>>,
) -> ProbeOutcome {
    match result {
        Some(Ok(out)) if out.exit_code == 0 => ProbeOutcome::Success,
        Some(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            ProbeOutcome::Failure(format!(
                "command {command:?} exited with {}: {}",
                out.exit_code,
                text.trim_end()
            ))
        }
        Some(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
            ProbeOutcome::Failure(format!("command {command:?} timed out"))
        }
        Some(Err(status)) => ProbeOutcome::Unknown(format!("exec failed: {}", status.message())),
        None => ProbeOutcome::Failure(format!("command {command:?} timed out")),
    }
}

/// Runs `probe` once against `target`.
pub async fn run_probe(probe: &Probe, target: &ProbeTarget, cri: &Cri) -> ProbeOutcome {
    let timeout = probe_timeout(probe);
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return exec_probe(cri, &target.container_id, command, timeout).await;
    }
    if let Some(action) = &probe.http_get {
        return http_probe(action, target, timeout).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let host = match tcp.host.as_deref() {
            Some(h) if !h.is_empty() => h.to_string(),
            _ => match target.default_host() {
                Ok(ip) => ip.to_string(),
                Err(e) => return ProbeOutcome::Unknown(e),
            },
        };
        return match target.resolve_port(&tcp.port) {
            Ok(port) => tcp_probe(&host, port, timeout).await,
            Err(e) => ProbeOutcome::Unknown(e),
        };
    }
    if let Some(g) = &probe.grpc {
        let host = match target.default_host() {
            Ok(ip) => ip,
            Err(e) => return ProbeOutcome::Unknown(e),
        };
        let Some(port) = u16::try_from(g.port).ok().filter(|p| *p > 0) else {
            return ProbeOutcome::Unknown(format!("invalid port number: {}", g.port));
        };
        return grpc::probe(host, port, g.service.as_deref().unwrap_or(""), timeout).await;
    }
    ProbeOutcome::Unknown("the probe has no handler (exec, httpGet, tcpSocket or grpc)".into())
}

#[cfg(test)]
mod tests;

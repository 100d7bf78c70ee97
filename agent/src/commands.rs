//! `capstan pods`, `capstan logs` and `capstan exec`: people's commands over the node's local
//! APIs (the read-only endpoints, and the CRI socket for exec).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use capstan_proto::{ContainerFilter, ContainerState, ListContainersRequest};
use k8s_openapi::api::core::v1::Pod;
use tonic::Request;

use crate::pods::labels;

/// GETs `path` from the read-only API at `address` (HTTP/1.0, no keep-alive).
pub fn get(address: &str, path: &str) -> Result<(u16, String), String> {
    let mut stream = std::net::TcpStream::connect(address)
        .map_err(|e| format!("connect to the node's read-only API at {address}: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")
        .map_err(|e| format!("send to {address}: {e}"))?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .map_err(|e| format!("read from {address}: {e}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

fn list(address: &str) -> Result<Vec<Pod>, String> {
    let (code, body) = get(address, "/pods")?;
    if code != 200 {
        return Err(format!("/pods answered {code}: {body}"));
    }
    let list: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("/pods is not JSON: {e}"))?;
    serde_json::from_value(list["items"].clone()).map_err(|e| format!("/pods items: {e}"))
}

fn age(pod: &Pod) -> String {
    let Some(start) = pod.status.as_ref().and_then(|s| s.start_time.as_ref()) else {
        return "-".into();
    };
    let seconds = crate::pods::status::now().as_second() - start.0.as_second();
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The STATUS column as kubectl shows it: a waiting or terminated reason, else the phase.
fn display_status(pod: &Pod) -> String {
    let Some(status) = pod.status.as_ref() else {
        return "Unknown".into();
    };
    if let Some(reason) = &status.reason {
        return reason.clone();
    }
    let containers = status.container_statuses.iter().flatten();
    for c in status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(containers)
    {
        let state = c.state.clone().unwrap_or_default();
        if let Some(reason) = state.waiting.and_then(|w| w.reason) {
            if reason != "PodInitializing" && reason != "ContainerCreating" {
                return reason;
            }
        }
    }
    status.phase.clone().unwrap_or_else(|| "Unknown".into())
}

/// Prints the node's pods as a table.
pub fn pods(address: &str, out: &mut dyn Write) -> Result<(), String> {
    let pods = list(address)?;
    let mut rows = vec![
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
        ]
        .map(String::from),
    ];
    for pod in &pods {
        let status = pod.status.clone().unwrap_or_default();
        let containers = status.container_statuses.clone().unwrap_or_default();
        let ready = containers.iter().filter(|c| c.ready).count();
        let restarts: i32 = containers.iter().map(|c| c.restart_count).sum();
        rows.push([
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
            format!("{ready}/{}", containers.len()),
            display_status(pod),
            restarts.to_string(),
            age(pod),
            status.pod_ip.clone().unwrap_or_else(|| "<none>".into()),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("   ").trim_end()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The container to use: the one named, or the pod's only (or first) container.
fn pick_container(
    address: &str,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<String, String> {
    if let Some(c) = container {
        return Ok(c.to_string());
    }
    let pods = list(address)?;
    let found = pods
        .iter()
        .find(|p| {
            p.metadata.name.as_deref() == Some(pod)
                && p.metadata.namespace.as_deref().unwrap_or("default") == namespace
        })
        .ok_or_else(|| format!("pod {namespace}/{pod} is not on this node"))?;
    found
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone())
        .ok_or_else(|| format!("pod {namespace}/{pod} has no containers"))
}

/// What `capstan logs` asks for.
#[derive(Debug, Clone)]
pub struct LogsRequest {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name; default: the pod's first.
    pub container: Option<String>,
    /// The previous instance's log.
    pub previous: bool,
    /// Only the last lines.
    pub tail: Option<usize>,
    /// Prefix each line with its timestamp.
    pub timestamps: bool,
}

/// Prints a container's log.
pub fn logs(address: &str, request: &LogsRequest, out: &mut dyn Write) -> Result<(), String> {
    let container = pick_container(
        address,
        &request.namespace,
        &request.pod,
        request.container.as_deref(),
    )?;
    let mut path = format!(
        "/containerLogs/{}/{}/{container}?",
        request.namespace, request.pod
    );
    if request.previous {
        path.push_str("previous=true&");
    }
    if request.timestamps {
        path.push_str("timestamps=true&");
    }
    if let Some(n) = request.tail {
        path.push_str(&format!("tailLines={n}"));
    }
    let (code, body) = get(address, &path)?;
    if code != 200 {
        return Err(body.trim().to_string());
    }
    out.write_all(body.as_bytes()).map_err(|e| e.to_string())
}

/// Runs `command` to completion in a container of a pod through the CRI endpoint and returns
/// its exit code, its output copied to ours.
pub async fn exec(
    endpoint: &str,
    address: &str,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
    command: Vec<String>,
) -> Result<i32, String> {
    let container = pick_container(address, namespace, pod, container)?;
    let cri = crate::cri::connect(endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let selector = HashMap::from([
        (labels::POD_NAME.to_string(), pod.to_string()),
        (labels::POD_NAMESPACE.to_string(), namespace.to_string()),
        (labels::CONTAINER_NAME.to_string(), container.clone()),
    ]);
    let listed = cri
        .runtime
        .list_containers(Request::new(ListContainersRequest {
            filter: Some(ContainerFilter {
                label_selector: selector,
                ..Default::default()
            }),
        }))
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner()
        .containers;
    let running = listed
        .iter()
        .find(|c| c.state == ContainerState::ContainerRunning as i32)
        .ok_or_else(|| format!("container {container} of pod {namespace}/{pod} is not running"))?;
    let outcome = cri
        .exec_sync(&running.id, command, 0)
        .await
        .map_err(|e| e.message().to_string())?;
    let _ = std::io::stdout().write_all(&outcome.stdout);
    let _ = std::io::stderr().write_all(&outcome.stderr);
    Ok(outcome.exit_code)
}

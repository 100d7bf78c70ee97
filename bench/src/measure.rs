//! The measurements, through nothing but CRI calls, identical for every peer.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use capstan_proto::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig,
    PodSandboxConfig, PodSandboxMetadata, PullImageRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use capstan_testkit::cri::CriClient;
use serde_json::{Value, json};

use crate::peers::{Peer, memory_kib};

/// What one peer measured.
#[derive(Debug, Default)]
pub struct Results {
    /// Pod start latencies, one pod after another.
    pub start_sequential: Vec<Duration>,
    /// Pod start latencies, all pods at once.
    pub start_concurrent: Vec<Duration>,
    /// Stop + remove latencies, one pod after another.
    pub stop_remove: Vec<Duration>,
    /// (RSS, PSS) in KiB with no pod.
    pub memory_idle: (u64, u64),
    /// (RSS, PSS) in KiB with the sequentially started pods running.
    pub memory_loaded: (u64, u64),
}

/// One pod of the benchmark: a sandbox and one long-running container.
struct PodPlan {
    sandbox: PodSandboxConfig,
    container: ContainerConfig,
}

fn plan(name: &str, image: &str, cgroup_parent: &str, logs: &Path) -> PodPlan {
    PodPlan {
        sandbox: PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: "bench".into(),
                uid: format!("uid-{name}"),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: logs.join(name).display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        container: ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "main".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            log_path: "main.log".into(),
            labels: HashMap::from([("bench".to_string(), name.to_string())]),
            ..Default::default()
        },
    }
}

/// RunPodSandbox + CreateContainer + StartContainer; returns the pod id and the time taken.
async fn start_pod(cri: &mut CriClient, pod: PodPlan) -> Result<(String, Duration), String> {
    let began = Instant::now();
    let id = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.sandbox.clone()),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("RunPodSandbox: {e}"))?
        .into_inner()
        .pod_sandbox_id;
    let container = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(pod.container),
            sandbox_config: Some(pod.sandbox),
        })
        .await
        .map_err(|e| format!("CreateContainer: {e}"))?
        .into_inner()
        .container_id;
    cri.runtime
        .start_container(StartContainerRequest {
            container_id: container,
        })
        .await
        .map_err(|e| format!("StartContainer: {e}"))?;
    Ok((id, began.elapsed()))
}

/// StopPodSandbox + RemovePodSandbox (which removes the pod's containers), as the kubelet's
/// last steps for a deleted pod.
async fn stop_remove(cri: &mut CriClient, id: String) -> Result<Duration, String> {
    let began = Instant::now();
    cri.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .map_err(|e| format!("StopPodSandbox: {e}"))?;
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .map_err(|e| format!("RemovePodSandbox: {e}"))?;
    Ok(began.elapsed())
}

/// Lets the runtime's processes settle (lazy allocations, exited helpers) before reading memory.
async fn settled_memory(peer: &Peer) -> (u64, u64) {
    tokio::time::sleep(Duration::from_secs(2)).await;
    memory_kib(&peer.process_ids())
}

/// Runs the whole sequence against `peer`: pull, warm-up, N sequential, N concurrent.
pub async fn run(
    peer: &Peer,
    label: &str,
    image: &str,
    pods: usize,
    logs: &Path,
) -> Result<Results, String> {
    let mut cri = CriClient::connect(&peer.socket(), Duration::from_secs(10))
        .await
        .map_err(|e| e.to_string())?;
    cri.images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("pull {image}: {e}"))?;
    let parent = peer.cgroup_parent().to_string();
    let mut results = Results::default();
    // Warm-up: first-use costs (containerd pulls its sandbox image, bridges are created, pages
    // are faulted in) are not what the table compares.
    let (id, _) = start_pod(
        &mut cri,
        plan(&format!("{label}-warm"), image, &parent, logs),
    )
    .await?;
    stop_remove(&mut cri, id).await?;
    results.memory_idle = settled_memory(peer).await;

    tracing::info!(peer = label, pods, "sequential starts");
    let mut running = Vec::with_capacity(pods);
    for i in 0..pods {
        let pod = plan(&format!("{label}-seq-{i}"), image, &parent, logs);
        let (id, took) = start_pod(&mut cri, pod).await?;
        results.start_sequential.push(took);
        running.push(id);
    }
    results.memory_loaded = settled_memory(peer).await;
    tracing::info!(peer = label, "sequential stop + remove");
    for id in running {
        results.stop_remove.push(stop_remove(&mut cri, id).await?);
    }

    tracing::info!(peer = label, pods, "concurrent starts");
    let tasks: Vec<_> = (0..pods)
        .map(|i| {
            let mut cri = cri.clone();
            let pod = plan(&format!("{label}-par-{i}"), image, &parent, logs);
            tokio::spawn(async move { start_pod(&mut cri, pod).await })
        })
        .collect();
    let mut started = Vec::new();
    let mut failure = None;
    for task in tasks {
        match task.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((id, took)) => {
                results.start_concurrent.push(took);
                started.push(id);
            }
            Err(e) => failure = Some(e),
        }
    }
    let removals: Vec<_> = started
        .into_iter()
        .map(|id| {
            let mut cri = cri.clone();
            tokio::spawn(async move { stop_remove(&mut cri, id).await })
        })
        .collect();
    for removal in removals {
        let _ = removal.await;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

/// The value at quantile `q` (nearest rank) of `samples`, in milliseconds.
pub fn percentile_ms(samples: &[Duration], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

fn distribution(samples: &[Duration]) -> Value {
    json!({
        "p50_ms": percentile_ms(samples, 0.50),
        "p90_ms": percentile_ms(samples, 0.90),
        "p99_ms": percentile_ms(samples, 0.99),
        "max_ms": percentile_ms(samples, 1.0),
        "samples": samples.len(),
    })
}

impl Results {
    /// The results as JSON (latencies in ms, memory in KiB).
    pub fn to_json(&self, pods: usize) -> Value {
        let per_pod = |idle: u64, loaded: u64| loaded.saturating_sub(idle) as f64 / pods as f64;
        json!({
            "start_sequential": distribution(&self.start_sequential),
            "start_concurrent": distribution(&self.start_concurrent),
            "stop_remove": distribution(&self.stop_remove),
            "rss_idle_kib": self.memory_idle.0,
            "rss_loaded_kib": self.memory_loaded.0,
            "rss_per_pod_kib": per_pod(self.memory_idle.0, self.memory_loaded.0),
            "pss_idle_kib": self.memory_idle.1,
            "pss_loaded_kib": self.memory_loaded.1,
            "pss_per_pod_kib": per_pod(self.memory_idle.1, self.memory_loaded.1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::percentile_ms;
    use std::time::Duration;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&samples, 0.5), 50.0);
        assert_eq!(percentile_ms(&samples, 0.99), 99.0);
        assert_eq!(percentile_ms(&samples, 1.0), 100.0);
        assert_eq!(percentile_ms(&samples[..1], 0.9), 1.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}

//! `/metrics/resource`: the kubelet's resource metrics in the Prometheus text format, which
//! metrics-server scrapes (and with it `kubectl top`): the cumulative CPU time and the memory
//! working set of the node, of each pod and of each running container, and container start
//! times. Samples carry the time they were taken, as the kubelet's do, so that a scraper can
//! turn two of them into a CPU rate.

use std::fmt::Write as _;

use capstan_proto::{ContainerStats, ListContainerStatsRequest};
use tonic::Request;

use super::summary::{host_cpu_nanos, meminfo};
use crate::pods::NodeContext;

/// One running container's sample.
#[derive(Debug, Clone, PartialEq)]
struct ContainerSample {
    namespace: String,
    pod: String,
    container: String,
    cpu_seconds: f64,
    cpu_millis: i64,
    working_set: u64,
    memory_millis: i64,
    started: Option<i64>,
}

fn millis_now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The running containers of the node's pods, each matched to its runtime stats by ID.
fn samples(ctx: &NodeContext, stats: &[ContainerStats]) -> Vec<ContainerSample> {
    let by_id: std::collections::HashMap<&str, &ContainerStats> = stats
        .iter()
        .filter_map(|s| Some((s.attributes.as_ref()?.id.as_str(), s)))
        .collect();
    let mut samples = Vec::new();
    for record in ctx.store.list() {
        let namespace = record.pod.metadata.namespace.clone().unwrap_or_default();
        let pod = record.pod.metadata.name.clone().unwrap_or_default();
        for status in record.status.container_statuses.iter().flatten() {
            let Some(running) = status.state.as_ref().and_then(|s| s.running.as_ref()) else {
                continue;
            };
            let id = crate::pods::status::runtime_container_id(
                status.container_id.as_deref().unwrap_or_default(),
            );
            let Some(stat) = by_id.get(id) else {
                continue;
            };
            let (Some(cpu), Some(memory)) = (stat.cpu.as_ref(), stat.memory.as_ref()) else {
                continue;
            };
            samples.push(ContainerSample {
                namespace: namespace.clone(),
                pod: pod.clone(),
                container: status.name.clone(),
                cpu_seconds: cpu.usage_core_nano_seconds.as_ref().map_or(0, |v| v.value) as f64
                    / 1e9,
                cpu_millis: cpu.timestamp / 1_000_000,
                working_set: memory.working_set_bytes.as_ref().map_or(0, |v| v.value),
                memory_millis: memory.timestamp / 1_000_000,
                started: running.started_at.as_ref().map(|t| t.0.as_second()),
            });
        }
    }
    samples
}

/// Writes one metric family's header.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Label values escaped as the text format wants them.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn container_labels(s: &ContainerSample) -> String {
    format!(
        "container=\"{}\",namespace=\"{}\",pod=\"{}\"",
        escape(&s.container),
        escape(&s.namespace),
        escape(&s.pod)
    )
}

fn pod_labels(namespace: &str, pod: &str) -> String {
    format!(
        "namespace=\"{}\",pod=\"{}\"",
        escape(namespace),
        escape(pod)
    )
}

/// The text of the resource metrics, given the runtime's container stats (`None` when the
/// runtime could not be asked: then only the node's figures and `resource_scrape_error 1`).
fn render(ctx: &NodeContext, stats: Option<&[ContainerStats]>) -> String {
    let samples = stats.map(|s| samples(ctx, s)).unwrap_or_default();
    let now = millis_now();
    let mut out = String::new();

    family(
        &mut out,
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
    );
    for s in &samples {
        let _ = writeln!(
            out,
            "container_cpu_usage_seconds_total{{{}}} {} {}",
            container_labels(s),
            s.cpu_seconds,
            s.cpu_millis
        );
    }
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
    );
    for s in &samples {
        let _ = writeln!(
            out,
            "container_memory_working_set_bytes{{{}}} {} {}",
            container_labels(s),
            s.working_set,
            s.memory_millis
        );
    }
    family(
        &mut out,
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
    );
    for s in &samples {
        if let Some(started) = s.started {
            let _ = writeln!(
                out,
                "container_start_time_seconds{{{}}} {started} {}",
                container_labels(s),
                s.cpu_millis
            );
        }
    }

    let mem = meminfo();
    let total = mem.get("MemTotal").copied().unwrap_or(0);
    let available = mem.get("MemAvailable").copied().unwrap_or(0);
    family(
        &mut out,
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
    );
    let _ = writeln!(
        out,
        "node_cpu_usage_seconds_total {} {now}",
        host_cpu_nanos() as f64 / 1e9
    );
    family(
        &mut out,
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
    );
    let _ = writeln!(
        out,
        "node_memory_working_set_bytes {} {now}",
        total.saturating_sub(available)
    );

    // A pod's figures are its running containers' sums, stamped with the latest sample.
    let mut pods: std::collections::BTreeMap<(&str, &str), (f64, u64, i64)> = Default::default();
    for s in &samples {
        let entry = pods.entry((&s.namespace, &s.pod)).or_default();
        entry.0 += s.cpu_seconds;
        entry.1 += s.working_set;
        entry.2 = entry.2.max(s.cpu_millis);
    }
    family(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
    );
    for ((namespace, pod), (cpu, _, at)) in &pods {
        let _ = writeln!(
            out,
            "pod_cpu_usage_seconds_total{{{}}} {cpu} {at}",
            pod_labels(namespace, pod)
        );
    }
    family(
        &mut out,
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
    );
    for ((namespace, pod), (_, working_set, at)) in &pods {
        let _ = writeln!(
            out,
            "pod_memory_working_set_bytes{{{}}} {working_set} {at}",
            pod_labels(namespace, pod)
        );
    }
    family(
        &mut out,
        "resource_scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
    );
    let _ = writeln!(out, "resource_scrape_error {}", u8::from(stats.is_none()));
    out
}

/// The resource metrics text, asking the runtime for container stats.
pub async fn resource_metrics(ctx: &NodeContext) -> String {
    let stats = ctx
        .cri
        .runtime
        .list_container_stats(Request::new(ListContainerStatsRequest { filter: None }))
        .await
        .map(|r| r.into_inner().stats);
    if let Err(status) = &stats {
        tracing::warn!(error = %status.message(), "resource metrics without container stats");
    }
    render(ctx, stats.as_deref().ok())
}

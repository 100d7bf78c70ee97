//! `/stats/summary`: node and pod CPU and memory in the Summary API format metrics-server
//! reads, from the runtime's stats RPCs and the host's /proc.

use std::collections::HashMap;

use capstan_proto::{ContainerStats, ListContainerStatsRequest, ListPodSandboxStatsRequest};
use serde_json::{Value, json};
use tonic::Request;

use crate::pods::NodeContext;

fn rfc3339_nanos(nanos: i64) -> String {
    crate::pods::status::time_from_nanos(nanos)
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or_default()
}

fn container_json(stats: &ContainerStats, name: &str) -> Value {
    let cpu = stats.cpu.unwrap_or_default();
    let memory = stats.memory.unwrap_or_default();
    json!({
        "name": name,
        "cpu": {
            "time": rfc3339_nanos(cpu.timestamp),
            "usageNanoCores": cpu.usage_nano_cores.map(|v| v.value),
            "usageCoreNanoSeconds": cpu.usage_core_nano_seconds.map(|v| v.value),
        },
        "memory": {
            "time": rfc3339_nanos(memory.timestamp),
            "workingSetBytes": memory.working_set_bytes.map(|v| v.value),
            "usageBytes": memory.usage_bytes.map(|v| v.value),
            "rssBytes": memory.rss_bytes.map(|v| v.value),
        },
    })
}

/// The host's /proc/meminfo figures in bytes, by field name.
pub(crate) fn meminfo() -> HashMap<String, u64> {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some((key.to_string(), kib * 1024))
        })
        .collect()
}

/// Total CPU time of the host in nanoseconds (user + nice + system + irq + softirq + steal).
pub(crate) fn host_cpu_nanos() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: u64 = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| ticks.get(*i))
        .sum();
    // USER_HZ is 100 on every Linux ABI the agent runs on.
    busy * 10_000_000
}

/// Builds the summary as JSON text.
pub async fn summary(ctx: &NodeContext) -> Result<String, String> {
    let containers = ctx
        .cri
        .runtime
        .list_container_stats(Request::new(ListContainerStatsRequest { filter: None }))
        .await
        .map_err(|e| format!("container stats: {}", e.message()))?
        .into_inner()
        .stats;
    let sandboxes = ctx
        .cri
        .runtime
        .list_pod_sandbox_stats(Request::new(ListPodSandboxStatsRequest { filter: None }))
        .await
        .map(|r| r.into_inner().stats)
        .unwrap_or_default();
    let now = now_nanos();
    let mut pods = Vec::new();
    for record in ctx.store.list() {
        let uid = record.pod.metadata.uid.clone().unwrap_or_default();
        let mine: Vec<&ContainerStats> = containers
            .iter()
            .filter(|s| {
                s.attributes
                    .as_ref()
                    .is_some_and(|a| a.labels.get(crate::pods::labels::POD_UID) == Some(&uid))
            })
            .collect();
        let container_values: Vec<Value> = mine
            .iter()
            .map(|s| {
                let name = s
                    .attributes
                    .as_ref()
                    .and_then(|a| a.metadata.as_ref())
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                container_json(s, &name)
            })
            .collect();
        let sum = |f: &dyn Fn(&ContainerStats) -> Option<u64>| -> u64 {
            mine.iter().filter_map(|s| f(s)).sum()
        };
        let network = sandboxes
            .iter()
            .find(|s| {
                s.attributes
                    .as_ref()
                    .and_then(|a| a.metadata.as_ref())
                    .is_some_and(|m| m.uid == uid)
            })
            .and_then(|s| s.linux.as_ref())
            .and_then(|l| l.network.as_ref())
            .and_then(|n| n.default_interface.as_ref())
            .map(|i| {
                json!({
                    "time": rfc3339_nanos(now),
                    "name": i.name,
                    "rxBytes": i.rx_bytes.as_ref().map(|v| v.value),
                    "txBytes": i.tx_bytes.as_ref().map(|v| v.value),
                })
            });
        pods.push(json!({
            "podRef": {
                "name": record.pod.metadata.name,
                "namespace": record.pod.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
                "uid": uid,
            },
            "startTime": record.status.start_time.as_ref().map(|t| t.0.to_string()),
            "containers": container_values,
            "cpu": {
                "time": rfc3339_nanos(now),
                "usageNanoCores": sum(&|s| s.cpu.as_ref()?.usage_nano_cores.as_ref().map(|v| v.value)),
                "usageCoreNanoSeconds": sum(&|s| s.cpu.as_ref()?.usage_core_nano_seconds.as_ref().map(|v| v.value)),
            },
            "memory": {
                "time": rfc3339_nanos(now),
                "workingSetBytes": sum(&|s| s.memory.as_ref()?.working_set_bytes.as_ref().map(|v| v.value)),
                "usageBytes": sum(&|s| s.memory.as_ref()?.usage_bytes.as_ref().map(|v| v.value)),
            },
            "network": network,
        }));
    }
    let mem = meminfo();
    let total = mem.get("MemTotal").copied().unwrap_or(0);
    let available = mem.get("MemAvailable").copied().unwrap_or(0);
    let summary = json!({
        "node": {
            "nodeName": ctx.settings.node_name,
            "cpu": {
                "time": rfc3339_nanos(now),
                "usageCoreNanoSeconds": host_cpu_nanos(),
            },
            "memory": {
                "time": rfc3339_nanos(now),
                "availableBytes": available,
                "usageBytes": total.saturating_sub(mem.get("MemFree").copied().unwrap_or(0)),
                "workingSetBytes": total.saturating_sub(available),
            },
        },
        "pods": pods,
    });
    Ok(summary.to_string())
}

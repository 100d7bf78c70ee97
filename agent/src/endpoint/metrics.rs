//! Counters and histograms for `/metrics`, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds in seconds (the kubelet's operation buckets, shortened).
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    total: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (count, bound) in self.counts.iter_mut().zip(BUCKETS) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.sum += seconds;
        self.total += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (count, bound) in self.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.total
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.total);
    }
}

/// The agent's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pod_start: Mutex<Histogram>,
    operations: Mutex<BTreeMap<String, Histogram>>,
    operation_errors: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    /// Time from a pod's admission to its first Running and Ready.
    pub fn observe_pod_start(&self, elapsed: Duration) {
        if let Ok(mut h) = self.pod_start.lock() {
            h.observe(elapsed.as_secs_f64());
        }
    }

    /// One runtime operation's latency, and whether it failed.
    pub fn observe_operation(&self, operation: &str, elapsed: Duration, failed: bool) {
        if let Ok(mut ops) = self.operations.lock() {
            ops.entry(operation.to_string())
                .or_default()
                .observe(elapsed.as_secs_f64());
        }
        if failed && let Ok(mut errors) = self.operation_errors.lock() {
            *errors.entry(operation.to_string()).or_default() += 1;
        }
    }

    /// Renders everything, with the pod and container gauges the caller counted and the probe
    /// counts `(kind, result, count)`.
    pub fn render(
        &self,
        pods_by_phase: &BTreeMap<String, u64>,
        containers_by_state: &BTreeMap<String, u64>,
        probes: &[(&str, &str, u64)],
    ) -> String {
        let mut out = String::new();
        out.push_str("# HELP kubelet_running_pods Pods known to the agent, by phase.\n# TYPE kubelet_running_pods gauge\n");
        for (phase, n) in pods_by_phase {
            let _ = writeln!(out, "kubelet_running_pods{{phase=\"{phase}\"}} {n}");
        }
        out.push_str("# HELP kubelet_running_containers Containers by state.\n# TYPE kubelet_running_containers gauge\n");
        for (state, n) in containers_by_state {
            let _ = writeln!(
                out,
                "kubelet_running_containers{{container_state=\"{state}\"}} {n}"
            );
        }
        out.push_str("# HELP kubelet_pod_start_duration_seconds Time from a pod's admission to Running and Ready.\n# TYPE kubelet_pod_start_duration_seconds histogram\n");
        if let Ok(h) = self.pod_start.lock() {
            let mut h = h.clone();
            if h.counts.is_empty() {
                h.counts = vec![0; BUCKETS.len()];
            }
            h.render(&mut out, "kubelet_pod_start_duration_seconds", "");
        }
        out.push_str("# HELP kubelet_runtime_operations_duration_seconds CRI operation latency.\n# TYPE kubelet_runtime_operations_duration_seconds histogram\n");
        if let Ok(ops) = self.operations.lock() {
            for (op, h) in ops.iter() {
                h.render(
                    &mut out,
                    "kubelet_runtime_operations_duration_seconds",
                    &format!("operation_type=\"{op}\""),
                );
            }
        }
        out.push_str("# HELP kubelet_runtime_operations_errors_total CRI operations that failed.\n# TYPE kubelet_runtime_operations_errors_total counter\n");
        if let Ok(errors) = self.operation_errors.lock() {
            for (op, n) in errors.iter() {
                let _ = writeln!(
                    out,
                    "kubelet_runtime_operations_errors_total{{operation_type=\"{op}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP prober_probe_total Probe results by kind.\n# TYPE prober_probe_total counter\n",
        );
        for (kind, result, n) in probes {
            let _ = writeln!(
                out,
                "prober_probe_total{{probe_type=\"{kind}\",result=\"{result}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_pod_start(Duration::from_millis(30));
        m.observe_pod_start(Duration::from_secs(3));
        m.observe_operation("run_pod_sandbox", Duration::from_millis(7), false);
        m.observe_operation("pull_image", Duration::from_millis(7), true);
        let text = m.render(
            &BTreeMap::from([("Running".into(), 2)]),
            &BTreeMap::new(),
            &[("Liveness", "failed", 3)],
        );
        assert!(
            text.contains("kubelet_pod_start_duration_seconds_bucket{le=\"0.025\"} 0"),
            "{text}"
        );
        assert!(text.contains("kubelet_pod_start_duration_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("kubelet_pod_start_duration_seconds_bucket{le=\"5\"} 2"));
        assert!(text.contains("kubelet_pod_start_duration_seconds_count 2"));
        assert!(text.contains("kubelet_running_pods{phase=\"Running\"} 2"));
        assert!(text.contains("prober_probe_total{probe_type=\"Liveness\",result=\"failed\"} 3"));
        assert!(
            text.contains(
                "kubelet_runtime_operations_errors_total{operation_type=\"pull_image\"} 1"
            )
        );
    }
}

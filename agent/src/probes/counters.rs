//! Probe run counts by kind and result, for the metrics endpoint
//! (`prober_probe_total{probe_type, result}` in the kubelet).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{ProbeKind, ProbeOutcome};

/// Counts of probe runs: one counter per kind × result, shared by every worker of a node.
#[derive(Debug, Default)]
pub struct ProbeCounters {
    counts: [[AtomicU64; 3]; 3],
}

/// The result labels, in the kubelet's words.
pub const RESULTS: [&str; 3] = ["successful", "failed", "unknown"];

fn result_index(outcome: &ProbeOutcome) -> usize {
    match outcome {
        ProbeOutcome::Success => 0,
        ProbeOutcome::Failure(_) => 1,
        ProbeOutcome::Unknown(_) => 2,
    }
}

impl ProbeCounters {
    /// Counts one run.
    pub fn record(&self, kind: ProbeKind, outcome: &ProbeOutcome) {
        self.counts[kind as usize][result_index(outcome)].fetch_add(1, Ordering::Relaxed);
    }

    /// Runs of `kind` with result label `result` (one of [`RESULTS`]); 0 for another label.
    pub fn get(&self, kind: ProbeKind, result: &str) -> u64 {
        RESULTS
            .iter()
            .position(|r| *r == result)
            .map(|i| self.counts[kind as usize][i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Every (kind, result, count), for rendering all series.
    pub fn snapshot(&self) -> Vec<(ProbeKind, &'static str, u64)> {
        let mut out = Vec::with_capacity(9);
        for kind in ProbeKind::ALL {
            for (i, result) in RESULTS.iter().enumerate() {
                out.push((
                    kind,
                    *result,
                    self.counts[kind as usize][i].load(Ordering::Relaxed),
                ));
            }
        }
        out
    }
}

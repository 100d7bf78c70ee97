//! A probe worker: one task per probe of one container instance, with the kubelet's timing and
//! threshold rules, publishing the probe's current result on a watch channel.
//!
//! - It waits until `initialDelaySeconds` after the container started, then probes every
//!   `periodSeconds`.
//! - A result is published once it has repeated `successThreshold` (readiness; 1 for the
//!   others) or `failureThreshold` times in a row. Unknown outcomes are not counted.
//! - Before any threshold is reached, readiness reads Failure and liveness and startup read
//!   Success, so a container is neither ready nor killed before it was probed.
//! - Liveness and startup stop probing once they publish Failure (the container is to be
//!   restarted; a new instance gets a new worker), and startup stops once it publishes Success
//!   (the container has started; the caller then starts the liveness and readiness workers).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Probe;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::{ProbeCounters, ProbeOutcome, ProbeTarget, run_probe};
use crate::cri::Cri;

/// The three kinds of probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// startupProbe: gates the other two.
    Startup = 0,
    /// livenessProbe: failure restarts the container.
    Liveness = 1,
    /// readinessProbe: drives the Ready condition.
    Readiness = 2,
}

impl ProbeKind {
    /// Every kind.
    pub const ALL: [ProbeKind; 3] = [
        ProbeKind::Startup,
        ProbeKind::Liveness,
        ProbeKind::Readiness,
    ];

    /// The name in events and metrics ("Liveness probe failed: ...").
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }

    fn initial(self) -> ProbeResult {
        match self {
            ProbeKind::Readiness => ProbeResult::Failure,
            ProbeKind::Liveness | ProbeKind::Startup => ProbeResult::Success,
        }
    }
}

/// A probe's published result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// Passing.
    Success,
    /// Failing.
    Failure,
}

/// What a worker publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    /// The current result.
    pub result: ProbeResult,
    /// Whether the result comes from probing (false: still the initial value).
    pub probed: bool,
    /// The reason of the last failed run, for the event ("Liveness probe failed: ...").
    pub message: Option<String>,
}

/// The timing of a probe, with the API's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub(crate) fn of(kind: ProbeKind, probe: &Probe) -> Timing {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(v.unwrap_or(default).max(min) as u64)
        };
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            // Only readiness may ask for more than one success (the API enforces it).
            success_threshold: match kind {
                ProbeKind::Readiness => probe.success_threshold.unwrap_or(1).max(1) as u32,
                _ => 1,
            },
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// A running probe worker. Dropping it stops the worker.
#[derive(Debug)]
pub struct ProbeHandle {
    kind: ProbeKind,
    state: watch::Receiver<ProbeState>,
    task: JoinHandle<()>,
}

impl ProbeHandle {
    /// Which probe this is.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// The result now.
    pub fn current(&self) -> ProbeState {
        self.state.borrow().clone()
    }

    /// A receiver that wakes on every change of result (its last value stays readable after
    /// the worker stopped).
    pub fn subscribe(&self) -> watch::Receiver<ProbeState> {
        self.state.clone()
    }

    /// Whether the worker stopped probing (a liveness or startup verdict, see the module doc).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the worker of one probe of one container instance. `started_at` is when the
/// container started (initialDelaySeconds counts from there); every run is counted in
/// `counters`.
pub fn spawn_probe_worker(
    kind: ProbeKind,
    probe: Probe,
    target: ProbeTarget,
    cri: Cri,
    started_at: SystemTime,
    counters: Arc<ProbeCounters>,
) -> ProbeHandle {
    let timing = Timing::of(kind, &probe);
    let probe = Arc::new(probe);
    let target = Arc::new(target);
    spawn_with(kind, timing, started_at, counters, move || {
        let (probe, target, cri) = (probe.clone(), target.clone(), cri.clone());
        async move { run_probe(&probe, &target, &cri).await }
    })
}

/// The worker loop around any probe function (tests script the outcomes).
pub(crate) fn spawn_with<F, Fut>(
    kind: ProbeKind,
    timing: Timing,
    started_at: SystemTime,
    counters: Arc<ProbeCounters>,
    mut run: F,
) -> ProbeHandle
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ProbeOutcome> + Send,
{
    let (tx, rx) = watch::channel(ProbeState {
        result: kind.initial(),
        probed: false,
        message: None,
    });
    let delay = (started_at + timing.initial_delay)
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let task = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let mut ticks = tokio::time::interval(timing.period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last: Option<ProbeResult> = None;
        let mut run_length = 0u32;
        loop {
            ticks.tick().await;
            let outcome = run().await;
            counters.record(kind, &outcome);
            let (result, message) = match outcome {
                ProbeOutcome::Success => (ProbeResult::Success, None),
                ProbeOutcome::Failure(reason) => (ProbeResult::Failure, Some(reason)),
                ProbeOutcome::Unknown(reason) => {
                    // The kubelet throws errored probes away: they neither pass nor fail.
                    tracing::debug!(kind = kind.as_str(), %reason, "probe errored");
                    continue;
                }
            };
            if last == Some(result) {
                run_length = run_length.saturating_add(1);
            } else {
                last = Some(result);
                run_length = 1;
            }
            let threshold = match result {
                ProbeResult::Success => timing.success_threshold,
                ProbeResult::Failure => timing.failure_threshold,
            };
            if run_length < threshold {
                continue;
            }
            tx.send_if_modified(|state| {
                let changed = state.result != result || !state.probed;
                state.result = result;
                state.probed = true;
                if message.is_some() {
                    state.message = message.clone();
                }
                changed
            });
            match (kind, result) {
                (ProbeKind::Liveness | ProbeKind::Startup, ProbeResult::Failure) => return,
                (ProbeKind::Startup, ProbeResult::Success) => return,
                _ => {}
            }
        }
    });
    ProbeHandle {
        kind,
        state: rx,
        task,
    }
}

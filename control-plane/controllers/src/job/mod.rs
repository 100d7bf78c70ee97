//! The Job controller (`job`): runs a Job's pods to completion as upstream's v1.33 controller
//! does: pods from the template tracked with the `batch.kubernetes.io/job-tracking` finalizer
//! and counted through `status.uncountedTerminatedPods`, NonIndexed and Indexed completion,
//! backoffLimit with exponential back-off for replacements, podFailurePolicy,
//! activeDeadlineSeconds and suspend; the interim conditions (SuccessCriteriaMet,
//! FailureTarget) first, Complete / Failed once no pod is left running.

pub mod conditions;
pub mod expectations;
pub mod failure_policy;
pub mod indexes;
pub mod pods;
mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::context::Context;

/// Upstream's `DefaultJobPodFailureBackOff`: the first replacement of a failed pod waits this
/// long, each further consecutive failure twice as long.
pub const DEFAULT_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream's `MaxJobPodFailureBackOff`.
pub const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(360);

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed (a conflict included: the Job is synced again).
    #[error("API: {0}")]
    Kube(#[from] kube::Error),
}

/// Failures since the last success, and when the last one was counted: how long the next
/// replacement waits (upstream keeps the same record in memory).
#[derive(Debug, Clone, Copy)]
struct Backoff {
    failures: u32,
    last: jiff::Timestamp,
}

/// What every sync shares.
struct Shared {
    client: kube::Client,
    pods: Store<Pod>,
    expectations: expectations::Expectations,
    backoff: Mutex<HashMap<String, Backoff>>,
    /// Resource versions of Jobs this controller has since replaced with a status write:
    /// a Job seen at one of them in the cache is stale, and is synced again shortly.
    superseded: Mutex<HashMap<String, Vec<String>>>,
    base_backoff: Duration,
}

/// Starts the controller (the registry's `job`).
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context))
}

async fn run(context: Context) {
    let client = context.client.clone();
    let (pod_store, pod_writer) = reflector::store();
    // Only pods the Job controller made carry this label; watching just those keeps the cache
    // small. The trigger below is the same stream that fills the cache.
    let pod_config = watcher::Config::default().labels("batch.kubernetes.io/controller-uid");
    let pod_events = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), pod_config),
    )
    .touched_objects()
    .default_backoff();
    let shared = Arc::new(Shared {
        client: client.clone(),
        pods: pod_store,
        expectations: expectations::Expectations::default(),
        backoff: Mutex::new(HashMap::new()),
        superseded: Mutex::new(HashMap::new()),
        base_backoff: context.options.job_pod_failure_backoff,
    });
    Controller::new(Api::<Job>::all(client), watcher::Config::default())
        .owns_stream(pod_events)
        .run(reconcile, error_policy, shared)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "job sync");
            }
        })
        .await;
}

async fn reconcile(job: Arc<Job>, shared: Arc<Shared>) -> Result<Action, Error> {
    shared.pods.wait_until_ready().await.ok();
    sync::sync(&job, &shared).await
}

fn error_policy(job: Arc<Job>, error: &Error, _shared: Arc<Shared>) -> Action {
    let conflict = matches!(error, Error::Kube(kube::Error::Api(status)) if status.code == 409);
    if !conflict {
        tracing::warn!(
            job = job.metadata.name.as_deref().unwrap_or(""),
            %error,
            "job sync failed"
        );
    }
    Action::requeue(if conflict {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(1)
    })
}

/// How long a Job with `failures` consecutive failures, the last at `last`, still waits before
/// a replacement pod is created (upstream's getRemainingTime).
pub fn remaining_backoff(
    base: Duration,
    failures: u32,
    last: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 2u32.saturating_pow(failures - 1);
    let delay = base.saturating_mul(factor).min(MAX_POD_FAILURE_BACKOFF);
    let elapsed = now.duration_since(last);
    let elapsed = Duration::try_from(elapsed).unwrap_or(Duration::ZERO);
    delay.saturating_sub(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_failure_up_to_six_minutes() {
        let t = jiff::Timestamp::UNIX_EPOCH;
        let base = DEFAULT_POD_FAILURE_BACKOFF;
        assert_eq!(remaining_backoff(base, 0, t, t), Duration::ZERO);
        assert_eq!(remaining_backoff(base, 1, t, t), Duration::from_secs(10));
        assert_eq!(remaining_backoff(base, 3, t, t), Duration::from_secs(40));
        assert_eq!(remaining_backoff(base, 20, t, t), MAX_POD_FAILURE_BACKOFF);
        let later = t + jiff::SignedDuration::from_secs(15);
        assert_eq!(remaining_backoff(base, 2, t, later), Duration::from_secs(5));
    }
}

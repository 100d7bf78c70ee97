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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
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
    let controller = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default());
    let jobs = controller.store();
    let orphans = client.clone();
    let pod_events = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), pod_config),
    )
    .touched_objects()
    .default_backoff()
    .inspect(move |event| {
        // A pod whose Job is gone is never synced again: its finalizer is released here
        // (upstream's orphan-pod handling), or the garbage collector could not remove it.
        if let Ok(pod) = event
            && pods::has_finalizer(pod)
            && !owner_cached(&jobs, pod)
        {
            tokio::spawn(release_orphan(orphans.clone(), pod.clone()));
        }
    });
    let pod_store_for_deletions = pod_store.clone();
    let shared = Arc::new(Shared {
        client: client.clone(),
        pods: pod_store,
        expectations: expectations::Expectations::default(),
        backoff: Mutex::new(HashMap::new()),
        superseded: Mutex::new(HashMap::new()),
        base_backoff: context.options.job_pod_failure_backoff,
    });
    let sync = controller
        .owns_stream(pod_events)
        .run(reconcile, error_policy, shared)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "job sync");
            }
        });
    futures::future::join(
        sync,
        release_on_job_deletion(client, pod_store_for_deletions),
    )
    .await;
}

/// A deleted Job is not synced again: the finalizers of the pods it leaves are released when
/// its deletion is seen (upstream's deleteJob handler).
async fn release_on_job_deletion(client: kube::Client, pods: Store<Pod>) {
    let mut events = watcher(Api::<Job>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let Ok(watcher::Event::Delete(job)) = event else {
            continue;
        };
        let uid = job.metadata.uid.clone().unwrap_or_default();
        for pod in pods.state() {
            if pods::owned_by(&pod, &uid) && pods::has_finalizer(&pod) {
                release_orphan(client.clone(), (*pod).clone()).await;
            }
        }
    }
}

/// The pod's controlling Job, by uid, from the Job cache.
fn owner_cached(jobs: &Store<Job>, pod: &Pod) -> bool {
    let Some(owner) = controller_owner(pod) else {
        return false;
    };
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    jobs.get(&ObjectRef::new(&owner.name).within(&namespace))
        .is_some_and(|job| job.metadata.uid.as_deref() == Some(owner.uid.as_str()))
}

fn controller_owner(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "Job")
}

/// Releases the finalizer of a pod whose Job the API confirms is gone (or replaced by
/// another of the same name): the cache alone may lag behind a Job just created.
async fn release_orphan(client: kube::Client, pod: Pod) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let owner_uid = controller_owner(&pod).map(|o| o.uid.clone());
    if let Some(owner) = controller_owner(&pod) {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
        match jobs.get_opt(&owner.name).await {
            Ok(Some(job)) if job.metadata.uid == owner_uid => return,
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(pod = %name, %error, "orphan check failed");
                return;
            }
        }
    }
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    // Read afresh: the cached copy's resource version may be behind the pod's.
    for _ in 0..3 {
        let current = match pods.get_opt(&name).await {
            Ok(Some(current)) if current.metadata.uid == pod.metadata.uid => current,
            Ok(_) => return,
            Err(error) => {
                tracing::debug!(pod = %name, %error, "orphan pod not read");
                return;
            }
        };
        if !pods::has_finalizer(&current) {
            return;
        }
        let patch = serde_json::json!({"metadata": {
            "finalizers": pods::finalizers_without_tracking(&current),
            "resourceVersion": current.metadata.resource_version,
        }});
        match pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return,
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => {
                tracing::debug!(pod = %name, %error, "orphan pod finalizer not released");
                return;
            }
        }
    }
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

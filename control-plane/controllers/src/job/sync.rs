//! One sync of one Job: count finished pods (through uncountedTerminatedPods and the tracking
//! finalizer), decide whether the Job has failed or succeeded, create or delete pods towards
//! the wanted number, and write the status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;

use super::conditions::{self, Finish};
use super::failure_policy::{self, Action as PolicyAction};
use super::{Backoff, Error, Shared, indexes, pods, remaining_backoff};

/// Upstream's cap on pods created or deleted in one sync.
const MAX_WRITES_PER_SYNC: usize = 500;

/// What the counting step found.
#[derive(Default)]
struct Counted {
    /// Pods whose finalizer may go now.
    release: Vec<Arc<Pod>>,
    /// The uncounted sets changed.
    changed: bool,
    /// Failures newly recorded (for the back-off record).
    new_failures: u32,
    /// Successes newly recorded.
    new_successes: u32,
}

pub(super) async fn sync(job: &Job, shared: &Shared) -> Result<Action, Error> {
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let namespace = job.metadata.namespace.clone().unwrap_or_default();
    let pod_api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    let job_api: Api<Job> = Api::namespaced(shared.client.clone(), &namespace);
    if is_stale(shared, &uid, job) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let pods: Vec<Arc<Pod>> = shared
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(&namespace) && pods::owned_by(p, &uid))
        .collect();
    if !shared.expectations.satisfied(&uid, &pods) {
        return Ok(Action::requeue(Duration::from_millis(300)));
    }
    let Some(spec) = job.spec.clone() else {
        return Ok(Action::await_change());
    };
    let original = job.status.clone().unwrap_or_default();
    let mut status = original.clone();
    // The Job as last written: a second status write in this sync goes on from the first.
    let mut current = job.clone();

    // A Job being deleted, or already finished, keeps no finalizer on its pods.
    if job.metadata.deletion_timestamp.is_some() || conditions::is_finished(&status) {
        for pod in pods.iter().filter(|p| pods::has_finalizer(p)) {
            release(&pod_api, shared, &uid, pod).await?;
        }
        if job.metadata.deletion_timestamp.is_some() {
            shared.expectations.forget(&uid);
            forget(shared, &uid);
        }
        return Ok(Action::await_change());
    }

    let now = jiff::Timestamp::now();
    let now_time = Time(now);
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let suspended = spec.suspend == Some(true);
    let mut finish = conditions::recorded_finish(&status);
    let mut completed: BTreeSet<i32> = if indexed {
        indexes::parse(
            status.completed_indexes.as_deref(),
            completions.unwrap_or(0),
        )
    } else {
        BTreeSet::new()
    };
    let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();

    // 1. Record newly finished pods as uncounted, before their finalizers go.
    let counted = count_finished(
        &spec,
        &pods,
        &mut uncounted,
        &mut completed,
        &mut finish,
        indexed,
    );
    if counted.changed {
        status.uncounted_terminated_pods = Some(uncounted.clone());
        if indexed {
            status.completed_indexes = Some(indexes::format(&completed));
        }
        if let Some(f) = finish.as_ref().filter(|f| f.interim == "FailureTarget") {
            conditions::set(
                &mut status,
                f.interim,
                "True",
                &f.reason,
                &f.message,
                &now_time,
            );
        }
        status = write_status(&job_api, shared, &mut current, status).await?;
    }
    record_backoff(shared, &uid, &counted, now);

    // 2. Release the pods now recorded, then 3. move them into the counters.
    let mut released: BTreeSet<String> = BTreeSet::new();
    for pod in &counted.release {
        release(&pod_api, shared, &uid, pod).await?;
        released.insert(pod.metadata.uid.clone().unwrap_or_default());
    }
    let still_tracked = |pod_uid: &String| {
        !released.contains(pod_uid)
            && pods
                .iter()
                .any(|p| p.metadata.uid.as_ref() == Some(pod_uid) && pods::has_finalizer(p))
    };
    let succeeded_now: Vec<String> = uncounted
        .succeeded
        .iter()
        .flatten()
        .filter(|u| !still_tracked(u))
        .cloned()
        .collect();
    let failed_now: Vec<String> = uncounted
        .failed
        .iter()
        .flatten()
        .filter(|u| !still_tracked(u))
        .cloned()
        .collect();
    let succeeded_moved = i32::try_from(succeeded_now.len()).unwrap_or(i32::MAX);
    let failed_moved = i32::try_from(failed_now.len()).unwrap_or(i32::MAX);
    if let Some(list) = uncounted.succeeded.as_mut() {
        list.retain(|u| !succeeded_now.contains(u));
    }
    if let Some(list) = uncounted.failed.as_mut() {
        list.retain(|u| !failed_now.contains(u));
    }
    if indexed {
        status.succeeded = Some(i32::try_from(completed.len()).unwrap_or(i32::MAX));
    } else {
        status.succeeded = Some(status.succeeded.unwrap_or(0) + succeeded_moved);
    }
    status.failed = Some(status.failed.unwrap_or(0) + failed_moved);
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: uncounted.succeeded.clone().filter(|l| !l.is_empty()),
        failed: uncounted.failed.clone().filter(|l| !l.is_empty()),
    });

    // 4. The Job's state from its pods.
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| pods::is_active(p)).collect();
    let terminating = pods.iter().filter(|p| pods::is_terminating(p)).count();
    let uncounted_succeeded = uncounted.succeeded.as_ref().map_or(0, Vec::len);
    let uncounted_failed = uncounted.failed.as_ref().map_or(0, Vec::len);
    let succeeded_total = if indexed {
        completed.len()
    } else {
        usize::try_from(status.succeeded.unwrap_or(0)).unwrap_or(0) + uncounted_succeeded
    };
    let failed_total = usize::try_from(status.failed.unwrap_or(0)).unwrap_or(0) + uncounted_failed;
    let mut requeue: Option<Duration> = None;

    if suspended {
        conditions::set(
            &mut status,
            "Suspended",
            "True",
            "JobSuspended",
            "Job suspended",
            &now_time,
        );
    } else {
        let was_suspended = conditions::true_condition(&status, "Suspended").is_some();
        if was_suspended {
            conditions::set(
                &mut status,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
                &now_time,
            );
            // The deadline counts from the resumption, as upstream.
            status.start_time = Some(now_time.clone());
        }
        if status.start_time.is_none() {
            status.start_time = Some(now_time.clone());
        }
    }

    if finish.is_none() && !suspended {
        let backoff_limit = usize::try_from(spec.backoff_limit.unwrap_or(6)).unwrap_or(0);
        if failed_total > backoff_limit || past_backoff_on_failure(&spec, &active) {
            finish = Some(Finish::failure(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
        } else if let (Some(deadline), Some(start)) =
            (spec.active_deadline_seconds, status.start_time.as_ref())
        {
            let end = start.0 + jiff::SignedDuration::from_secs(deadline);
            if end <= now {
                finish = Some(Finish::failure(
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ));
            } else {
                requeue = Duration::try_from(end.duration_since(now)).ok();
            }
        }
    }
    let success = match completions {
        Some(completions) => succeeded_total >= usize::try_from(completions).unwrap_or(0),
        None => succeeded_total > 0 && active.is_empty(),
    };
    if finish.is_none() && success && !suspended {
        finish = Some(Finish::completions_reached());
    }

    // 5. Pods towards the wanted number.
    let mut created = 0usize;
    let mut deleted: BTreeSet<String> = BTreeSet::new();
    if finish.is_some() || suspended {
        for pod in &active {
            delete(&pod_api, shared, &uid, pod).await?;
            deleted.insert(pod.metadata.uid.clone().unwrap_or_default());
        }
    } else {
        let only_failed = spec.pod_replacement_policy.as_deref() == Some("Failed")
            || spec.pod_failure_policy.is_some();
        let want = match completions {
            None if succeeded_total > 0 => active.len(),
            None => usize::try_from(parallelism).unwrap_or(0),
            Some(c) => usize::try_from(c)
                .unwrap_or(0)
                .saturating_sub(succeeded_total)
                .min(usize::try_from(parallelism).unwrap_or(0)),
        };
        let doomed = if indexed {
            surplus_indexed(&active, &completed, completions.unwrap_or(0))
        } else {
            surplus(&active, want)
        };
        for pod in doomed.iter().take(MAX_WRITES_PER_SYNC) {
            delete(&pod_api, shared, &uid, pod).await?;
            deleted.insert(pod.metadata.uid.clone().unwrap_or_default());
        }
        let kept = active.len() - doomed.len().min(active.len());
        let occupied = kept + if only_failed { terminating } else { 0 };
        if occupied < want {
            let wait = backoff_wait(shared, &uid, now);
            if wait > Duration::ZERO {
                requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
            } else {
                let count = (want - occupied).min(MAX_WRITES_PER_SYNC);
                let new_indexes: Vec<Option<i32>> = if indexed {
                    let busy: BTreeSet<i32> = pods
                        .iter()
                        .filter(|p| {
                            (pods::is_active(p)
                                && !deleted.contains(p.metadata.uid.as_deref().unwrap_or("")))
                                || (only_failed && pods::is_terminating(p))
                        })
                        .filter_map(|p| pods::index(p))
                        .collect();
                    (0..completions.unwrap_or(0))
                        .filter(|i| !completed.contains(i) && !busy.contains(i))
                        .take(count)
                        .map(Some)
                        .collect()
                } else {
                    vec![None; count]
                };
                for index in new_indexes {
                    let pod = pods::from_template(job, index);
                    let made = pod_api.create(&PostParams::default(), &pod).await?;
                    if let Some(made_name) = made.metadata.name.as_deref() {
                        shared.expectations.created(&uid, made_name);
                    }
                    created += 1;
                }
            }
        }
    }

    // 6. The status.
    let active_now = active
        .iter()
        .filter(|p| !deleted.contains(p.metadata.uid.as_deref().unwrap_or("")))
        .count()
        + created;
    let ready = active
        .iter()
        .filter(|p| !deleted.contains(p.metadata.uid.as_deref().unwrap_or("")) && pods::is_ready(p))
        .count();
    status.active = Some(i32::try_from(active_now).unwrap_or(i32::MAX));
    status.ready = Some(i32::try_from(ready).unwrap_or(i32::MAX));
    status.terminating = Some(i32::try_from(terminating + deleted.len()).unwrap_or(i32::MAX));
    if indexed {
        status.completed_indexes = Some(indexes::format(&completed));
    }
    if let Some(f) = &finish {
        conditions::set(
            &mut status,
            f.interim,
            "True",
            &f.reason,
            &f.message,
            &now_time,
        );
        let settled = active_now == 0
            && terminating + deleted.len() == 0
            && uncounted_succeeded + uncounted_failed == 0
            && !pods.iter().any(|p| {
                pods::has_finalizer(p)
                    && !released.contains(p.metadata.uid.as_deref().unwrap_or(""))
            });
        if settled {
            conditions::set(
                &mut status,
                f.terminal(),
                "True",
                &f.reason,
                &f.message,
                &now_time,
            );
            if f.terminal() == "Complete" {
                status.completion_time = Some(now_time.clone());
            }
        }
    }
    if status != original {
        write_status(&job_api, shared, &mut current, status).await?;
    }
    tracing::debug!(job = %name, namespace = %namespace, created, deleted = deleted.len(), "job synced");
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Step 1: finished pods with the finalizer go into uncountedTerminatedPods (succeeded, or
/// failed unless the pod failure policy ignores them); `finish` is set by a FailJob rule.
fn count_finished(
    spec: &JobSpec,
    all: &[Arc<Pod>],
    uncounted: &mut UncountedTerminatedPods,
    completed: &mut BTreeSet<i32>,
    finish: &mut Option<Finish>,
    indexed: bool,
) -> Counted {
    let mut counted = Counted::default();
    let only_failed = spec.pod_replacement_policy.as_deref() == Some("Failed")
        || spec.pod_failure_policy.is_some();
    let completions = spec.completions.unwrap_or(0);
    let succeeded = uncounted.succeeded.get_or_insert_with(Vec::new);
    let mut succeeded_set: BTreeSet<String> = succeeded.iter().cloned().collect();
    let failed = uncounted.failed.get_or_insert_with(Vec::new);
    let mut failed_set: BTreeSet<String> = failed.iter().cloned().collect();
    let mut new_succeeded = Vec::new();
    let mut new_failed = Vec::new();
    for pod in all.iter().filter(|p| pods::has_finalizer(p)) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let phase = pods::phase(pod);
        let considered_failed = phase == "Failed"
            || pods::deletion_finished(pod)
            || (!only_failed && pod.metadata.deletion_timestamp.is_some() && phase != "Succeeded");
        let can_release = finish.is_some() || phase == "Succeeded" || considered_failed;
        if !can_release {
            continue;
        }
        counted.release.push(Arc::clone(pod));
        let index = pods::index(pod).filter(|i| *i < completions);
        if phase == "Succeeded" && !failed_set.contains(&uid) {
            if !succeeded_set.contains(&uid) {
                succeeded_set.insert(uid.clone());
                new_succeeded.push(uid);
                counted.new_successes += 1;
                if let (true, Some(index)) = (indexed, index) {
                    completed.insert(index);
                }
            }
        } else if (considered_failed || finish.is_some())
            && !failed_set.contains(&uid)
            && !succeeded_set.contains(&uid)
            && (!indexed || index.is_some())
        {
            let action = match &spec.pod_failure_policy {
                Some(policy) if phase == "Failed" => failure_policy::evaluate(policy, pod),
                _ => PolicyAction::Count,
            };
            match action {
                PolicyAction::Ignore => continue,
                PolicyAction::FailJob(message) => {
                    if finish.is_none() {
                        *finish = Some(Finish::failure("PodFailurePolicy", &message));
                    }
                }
                PolicyAction::FailIndex | PolicyAction::Count => {}
            }
            failed_set.insert(uid.clone());
            new_failed.push(uid);
            counted.new_failures += 1;
        }
    }
    counted.changed = !new_succeeded.is_empty() || !new_failed.is_empty();
    succeeded.extend(new_succeeded);
    failed.extend(new_failed);
    counted
}

/// restartPolicy OnFailure: the containers' restarts count as failures (upstream's
/// pastBackoffLimitOnFailure).
fn past_backoff_on_failure(spec: &JobSpec, active: &[&Arc<Pod>]) -> bool {
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let restarts: i32 = active.iter().map(|p| pods::restarts(p)).sum();
    let limit = spec.backoff_limit.unwrap_or(6);
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// NonIndexed: the active pods beyond `want`, the least advanced first (not ready before
/// ready, newer before older), as upstream's activePodsForRemoval.
fn surplus<'a>(active: &[&'a Arc<Pod>], want: usize) -> Vec<&'a Arc<Pod>> {
    if active.len() <= want {
        return Vec::new();
    }
    let mut ranked: Vec<&Arc<Pod>> = active.to_vec();
    ranked.sort_by_key(|p| {
        (
            pods::is_ready(p),
            std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
        )
    });
    ranked.truncate(active.len() - want);
    ranked
}

/// Indexed: pods with no valid index, an index beyond completions or already completed, and
/// all but one pod of an index.
fn surplus_indexed<'a>(
    active: &[&'a Arc<Pod>],
    completed: &BTreeSet<i32>,
    completions: i32,
) -> Vec<&'a Arc<Pod>> {
    let mut doomed = Vec::new();
    let mut by_index: BTreeMap<i32, Vec<&Arc<Pod>>> = BTreeMap::new();
    for pod in active {
        match pods::index(pod) {
            Some(i) if i < completions && !completed.contains(&i) => {
                by_index.entry(i).or_default().push(pod)
            }
            _ => doomed.push(*pod),
        }
    }
    for (_, mut group) in by_index {
        if group.len() > 1 {
            group.sort_by_key(|p| {
                (
                    !pods::is_ready(p),
                    p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                )
            });
            doomed.extend(group.into_iter().skip(1));
        }
    }
    doomed
}

fn record_backoff(shared: &Shared, uid: &str, counted: &Counted, now: jiff::Timestamp) {
    let Ok(mut records) = shared.backoff.lock() else {
        return;
    };
    if counted.new_failures > 0 {
        let record = records.entry(uid.to_string()).or_insert(Backoff {
            failures: 0,
            last: now,
        });
        record.failures += counted.new_failures;
        record.last = now;
    } else if counted.new_successes > 0 {
        records.remove(uid);
    }
}

fn backoff_wait(shared: &Shared, uid: &str, now: jiff::Timestamp) -> Duration {
    let record = shared.backoff.lock().ok().and_then(|r| r.get(uid).copied());
    record.map_or(Duration::ZERO, |r| {
        remaining_backoff(shared.base_backoff, r.failures, r.last, now)
    })
}

fn forget(shared: &Shared, uid: &str) {
    if let Ok(mut records) = shared.backoff.lock() {
        records.remove(uid);
    }
    if let Ok(mut superseded) = shared.superseded.lock() {
        superseded.remove(uid);
    }
}

fn is_stale(shared: &Shared, uid: &str, job: &Job) -> bool {
    let Ok(mut superseded) = shared.superseded.lock() else {
        return false;
    };
    let version = job.metadata.resource_version.clone().unwrap_or_default();
    match superseded.get(uid) {
        Some(old) if old.contains(&version) => true,
        Some(_) => {
            superseded.remove(uid);
            false
        }
        None => false,
    }
}

/// Replaces the status (optimistically, at the Job's resource version); `job` becomes the
/// Job as written, and its status is returned.
async fn write_status(
    api: &Api<Job>,
    shared: &Shared,
    job: &mut Job,
    status: JobStatus,
) -> Result<JobStatus, Error> {
    let mut updated = job.clone();
    updated.status = Some(status);
    let name = job.metadata.name.clone().unwrap_or_default();
    let written = api
        .replace_status(&name, &PostParams::default(), &updated)
        .await?;
    let uid = job.metadata.uid.clone().unwrap_or_default();
    if let (Ok(mut superseded), Some(old)) = (
        shared.superseded.lock(),
        job.metadata.resource_version.clone(),
    ) {
        superseded.entry(uid).or_default().push(old);
    }
    *job = written;
    Ok(job.status.clone().unwrap_or_default())
}

/// Removes the tracking finalizer, at the pod's resource version (a conflict syncs again).
async fn release(api: &Api<Pod>, shared: &Shared, job_uid: &str, pod: &Pod) -> Result<(), Error> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let patch = serde_json::json!({"metadata": {
        "finalizers": pods::finalizers_without_tracking(pod),
        "resourceVersion": pod.metadata.resource_version,
    }});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error.into()),
    }
    shared
        .expectations
        .released(job_uid, pod.metadata.uid.as_deref().unwrap_or(""));
    Ok(())
}

async fn delete(api: &Api<Pod>, shared: &Shared, job_uid: &str, pod: &Pod) -> Result<(), Error> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(error) => return Err(error.into()),
    }
    shared
        .expectations
        .deleted(job_uid, pod.metadata.uid.as_deref().unwrap_or(""));
    Ok(())
}

//! The CronJob controller (`cronjob`, upstream's v2 controller): keeps `status.active`,
//! `lastScheduleTime` and `lastSuccessfulTime` from the CronJob's Jobs, creates the Job of the
//! latest due schedule time (named `<cronjob>-<minutes since the epoch>`, annotated with
//! `batch.kubernetes.io/cronjob-scheduled-timestamp`) under the concurrency policy and the
//! starting deadline, trims finished Jobs to the history limits, and is requeued at the next
//! schedule time.

pub mod plan;
pub mod schedule;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::context::Context;

/// The annotation with the schedule time a Job was created for (RFC 3339, in the CronJob's
/// time zone when it names one).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Errors of one sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("API: {0}")]
    Kube(#[from] kube::Error),
}

struct Shared {
    client: kube::Client,
    jobs: Store<Job>,
    recorder: Recorder,
}

/// Starts the controller (the registry's `cronjob`).
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context))
}

async fn run(context: Context) {
    let client = context.client.clone();
    let (job_store, job_writer) = reflector::store();
    // The trigger is the stream that fills the Job cache, so a sync always sees the change
    // that woke it.
    let job_events = reflector::reflector(
        job_writer,
        watcher(Api::<Job>::all(client.clone()), watcher::Config::default()),
    )
    .touched_objects()
    .default_backoff();
    let reporter = Reporter {
        controller: "cronjob-controller".into(),
        instance: None,
    };
    let shared = Arc::new(Shared {
        client: client.clone(),
        jobs: job_store,
        recorder: Recorder::new(client.clone(), reporter),
    });
    Controller::new(Api::<CronJob>::all(client), watcher::Config::default())
        .owns_stream(job_events)
        .run(reconcile, error_policy, shared)
        .for_each(|_| async {})
        .await;
}

fn error_policy(cronjob: Arc<CronJob>, error: &Error, _shared: Arc<Shared>) -> Action {
    tracing::warn!(cronjob = %cronjob.name_any(), %error, "cronjob sync failed");
    Action::requeue(Duration::from_secs(1))
}

async fn event(shared: &Shared, cronjob: &CronJob, kind: &str, reason: &str, note: String) {
    let event = Event {
        type_: if kind == "Warning" {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    if let Err(error) = shared
        .recorder
        .publish(&event, &cronjob.object_ref(&()))
        .await
    {
        tracing::debug!(%error, "cronjob event not recorded");
    }
}

fn condition_true(job: &Job, kind: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

fn is_finished(job: &Job) -> bool {
    condition_true(job, "Complete") || condition_true(job, "Failed")
}

async fn reconcile(cronjob: Arc<CronJob>, shared: Arc<Shared>) -> Result<Action, Error> {
    shared.jobs.wait_until_ready().await.ok();
    if cronjob.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = cronjob.namespace().unwrap_or_default();
    let name = cronjob.name_any();
    let uid = cronjob.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = cronjob.spec.clone() else {
        return Ok(Action::await_change());
    };
    let job_api: Api<Job> = Api::namespaced(shared.client.clone(), &namespace);
    let cronjob_api: Api<CronJob> = Api::namespaced(shared.client.clone(), &namespace);
    let children: Vec<Arc<Job>> = shared
        .jobs
        .state()
        .into_iter()
        .filter(|j| {
            j.metadata.namespace.as_deref() == Some(&namespace)
                && j.owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    let original = cronjob.status.clone().unwrap_or_default();
    let mut status = original.clone();

    // The active list and lastSuccessfulTime from the Jobs.
    let mut active = status.active.clone().unwrap_or_default();
    for job in &children {
        let job_uid = job.metadata.uid.as_deref();
        let listed = active.iter().any(|r| r.uid.as_deref() == job_uid);
        if listed && is_finished(job) {
            active.retain(|r| r.uid.as_deref() != job_uid);
            let condition = if condition_true(job, "Complete") {
                "Complete"
            } else {
                "Failed"
            };
            let note = format!(
                "Saw completed job: {}, condition: {condition}",
                job.name_any()
            );
            event(&shared, &cronjob, "Normal", "SawCompletedJob", note).await;
        }
        if condition_true(job, "Complete") {
            let completed = job.status.as_ref().and_then(|s| s.completion_time.clone());
            if let Some(completed) = completed {
                let later = status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|t| t.0 < completed.0);
                if later {
                    status.last_successful_time = Some(completed);
                }
            }
        }
    }
    // Listed Jobs the cache does not have: dropped only when the API has them gone too (the
    // cache may not show a Job just created).
    let mut kept = Vec::new();
    for reference in active {
        let cached = children
            .iter()
            .any(|j| j.metadata.uid.as_deref() == reference.uid.as_deref());
        if cached {
            kept.push(reference);
            continue;
        }
        let job_name = reference.name.clone().unwrap_or_default();
        match job_api.get_opt(&job_name).await? {
            Some(job) if job.metadata.uid == reference.uid && !is_finished(&job) => {
                kept.push(reference)
            }
            _ => {}
        }
    }
    status.active = Some(kept);

    let mut requeue = None;
    let zone = match spec.time_zone.as_deref() {
        Some(name) => TimeZone::get(name).map_err(|e| (name.to_string(), e.to_string())),
        None => Ok(TimeZone::system()),
    };
    match (zone, schedule::parse(&spec.schedule)) {
        (Err((zone, error)), _) => {
            let note = format!("invalid timeZone: {zone:?}: {error}");
            event(&shared, &cronjob, "Warning", "UnknownTimeZone", note).await;
        }
        (_, Err(error)) => {
            let note = format!("unparseable schedule: {:?} : {error}", spec.schedule);
            event(&shared, &cronjob, "Warning", "UnparseableSchedule", note).await;
        }
        (Ok(zone), Ok(schedule)) => {
            let created = cronjob
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or_else(jiff::Timestamp::now, |t| t.0);
            let now = jiff::Timestamp::now();
            let decision = plan::plan(&name, &spec, &status, created, now, &schedule, &zone);
            requeue = decision.requeue;
            if let Some((kind, reason, note)) = decision.event.clone() {
                event(&shared, &cronjob, kind, reason, note).await;
            }
            if decision.replace {
                for reference in status.active.take().unwrap_or_default() {
                    let job_name = reference.name.clone().unwrap_or_default();
                    delete_job(&job_api, &job_name).await?;
                    let note = format!("Deleted job {job_name}");
                    event(&shared, &cronjob, "Normal", "SuccessfulDelete", note).await;
                }
            }
            if let Some(scheduled) = decision.run {
                let job = job_for(&cronjob, scheduled, spec.time_zone.is_some(), &zone);
                let job_name = job.metadata.name.clone().unwrap_or_default();
                let made = match job_api.create(&PostParams::default(), &job).await {
                    Ok(made) => Some(made),
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        job_api.get_opt(&job_name).await?
                    }
                    Err(error) => return Err(error.into()),
                };
                if let Some(made) = made.filter(|j| {
                    j.owner_references()
                        .iter()
                        .any(|o| o.controller == Some(true) && o.uid == uid)
                }) {
                    let note = format!("Created job {job_name}");
                    event(&shared, &cronjob, "Normal", "SuccessfulCreate", note).await;
                    let list = status.active.get_or_insert_with(Vec::new);
                    if !list.iter().any(|r| r.uid == made.metadata.uid) {
                        list.push(reference(&made));
                    }
                }
                status.last_schedule_time = Some(Time(scheduled));
            }
        }
    }

    trim_history(&shared, &cronjob, &job_api, &children, &mut status).await?;

    if status != original {
        let mut updated = (*cronjob).clone();
        updated.status = Some(status);
        cronjob_api
            .replace_status(&name, &PostParams::default(), &updated)
            .await?;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// The Job for `scheduled`, from the template.
fn job_for(
    cronjob: &CronJob,
    scheduled: jiff::Timestamp,
    named_zone: bool,
    zone: &TimeZone,
) -> Job {
    let template = cronjob
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let stamp = if named_zone {
        scheduled
            .to_zoned(zone.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    } else {
        scheduled.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    };
    annotations.insert(SCHEDULED_TIMESTAMP.into(), stamp);
    Job {
        metadata: ObjectMeta {
            name: Some(plan::job_name(&cronjob.name_any(), scheduled)),
            namespace: cronjob.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name: cronjob.name_any(),
                uid: cronjob.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

async fn delete_job(api: &Api<Job>, name: &str) -> Result<(), Error> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Deletes the oldest finished Jobs beyond successfulJobsHistoryLimit (3) and
/// failedJobsHistoryLimit (1).
async fn trim_history(
    shared: &Shared,
    cronjob: &CronJob,
    api: &Api<Job>,
    children: &[Arc<Job>],
    status: &mut k8s_openapi::api::batch::v1::CronJobStatus,
) -> Result<(), Error> {
    let spec = cronjob.spec.as_ref();
    let limits = [
        (
            "Complete",
            spec.and_then(|s| s.successful_jobs_history_limit)
                .unwrap_or(3),
        ),
        (
            "Failed",
            spec.and_then(|s| s.failed_jobs_history_limit).unwrap_or(1),
        ),
    ];
    for (kind, limit) in limits {
        // Oldest first by start time, Jobs without one last (upstream's byJobStartTime).
        type Key = (
            bool,
            Option<jiff::Timestamp>,
            Option<jiff::Timestamp>,
            String,
        );
        let mut finished: BTreeMap<Key, &Job> = BTreeMap::new();
        for job in children.iter().filter(|j| condition_true(j, kind)) {
            if job.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let start = job
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            let created = job.metadata.creation_timestamp.as_ref().map(|t| t.0);
            finished.insert(
                (start.is_none(), start, created, job.name_any()),
                job.as_ref(),
            );
        }
        let surplus = finished
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        for job in finished.values().take(surplus) {
            let job_name = job.name_any();
            delete_job(api, &job_name).await?;
            if let Some(list) = status.active.as_mut() {
                list.retain(|r| r.uid != job.metadata.uid);
            }
            let note = format!("Deleted job {job_name}");
            event(shared, cronjob, "Normal", "SuccessfulDelete", note).await;
        }
    }
    Ok(())
}

//! What the controller has written but its pod cache may not show yet: pods created, pods
//! deleted, finalizers removed. A Job is not synced again until the cache has caught up (or
//! the expectations expire), so that it never counts a pod twice nor creates one too many.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::pods;

/// After this long, expectations are dropped: the cache missed the event (upstream: 5 min).
const EXPIRY: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Pending {
    created: HashSet<String>,
    deleted: HashSet<String>,
    released: HashSet<String>,
    since: Option<Instant>,
}

/// Expectations per Job uid.
#[derive(Debug, Default)]
pub struct Expectations {
    jobs: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    fn with<T>(&self, job: &str, f: impl FnOnce(&mut Pending) -> T) -> T {
        let mut jobs = match self.jobs.lock() {
            Ok(jobs) => jobs,
            Err(poisoned) => poisoned.into_inner(),
        };
        let pending = jobs.entry(job.to_string()).or_default();
        pending.since = Some(Instant::now());
        f(pending)
    }

    /// A pod named `name` was created.
    pub fn created(&self, job: &str, name: &str) {
        self.with(job, |p| p.created.insert(name.to_string()));
    }

    /// The pod with `uid` was deleted.
    pub fn deleted(&self, job: &str, uid: &str) {
        self.with(job, |p| p.deleted.insert(uid.to_string()));
    }

    /// The tracking finalizer of the pod with `uid` was removed.
    pub fn released(&self, job: &str, uid: &str) {
        self.with(job, |p| p.released.insert(uid.to_string()));
    }

    /// Whether the cache (`pods`, the Job's pods) shows every write; satisfied ones are
    /// forgotten.
    pub fn satisfied(&self, job: &str, pods: &[std::sync::Arc<Pod>]) -> bool {
        let mut jobs = match self.jobs.lock() {
            Ok(jobs) => jobs,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(pending) = jobs.get_mut(job) else {
            return true;
        };
        let by_uid: HashMap<&str, &Pod> = pods
            .iter()
            .map(|p| (p.metadata.uid.as_deref().unwrap_or(""), p.as_ref()))
            .collect();
        pending.created.retain(|name| {
            !pods
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(name))
        });
        pending.deleted.retain(|uid| {
            by_uid
                .get(uid.as_str())
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        });
        pending.released.retain(|uid| {
            by_uid
                .get(uid.as_str())
                .is_some_and(|p| pods::has_finalizer(p))
        });
        let done =
            pending.created.is_empty() && pending.deleted.is_empty() && pending.released.is_empty();
        let expired = pending.since.is_some_and(|s| s.elapsed() > EXPIRY);
        if done || expired {
            if expired && !done {
                tracing::warn!(
                    job,
                    "pod cache did not show the Job's writes in time; syncing anyway"
                );
            }
            jobs.remove(job);
            return true;
        }
        false
    }

    /// Forgets a deleted Job.
    pub fn forget(&self, job: &str) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.remove(job);
        }
    }
}

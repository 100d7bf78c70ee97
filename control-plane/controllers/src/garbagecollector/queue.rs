//! A work queue as client-go's: a job queued twice runs once, a job queued while it runs runs
//! again after, and failed jobs come back after an exponential back-off.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::graph::Job;

/// First retry delay; doubles per failure.
const BASE_DELAY: Duration = Duration::from_millis(50);
/// Longest retry delay.
const MAX_DELAY: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct State {
    order: VecDeque<Job>,
    queued: HashSet<Job>,
    running: HashSet<Job>,
    again: HashSet<Job>,
    failures: HashMap<Job, u32>,
}

/// The queue, shared by the graph builder and the workers.
#[derive(Debug, Default, Clone)]
pub struct Queue {
    state: Arc<Mutex<State>>,
    ready: Arc<Notify>,
}

impl Queue {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }

    /// Queues `job` unless it is queued already.
    pub fn add(&self, job: Job) {
        let added = self.with(|s| {
            if s.running.contains(&job) {
                s.again.insert(job);
                return false;
            }
            if s.queued.insert(job.clone()) {
                s.order.push_back(job);
                return true;
            }
            false
        });
        if added {
            self.ready.notify_one();
        }
    }

    /// The next job, waiting for one.
    pub async fn next(&self) -> Job {
        loop {
            let notified = self.ready.notified();
            let job = self.with(|s| {
                let job = s.order.pop_front()?;
                s.queued.remove(&job);
                s.running.insert(job.clone());
                Some(job)
            });
            if let Some(job) = job {
                return job;
            }
            notified.await;
        }
    }

    /// Marks `job` finished; `failed` brings it back after its back-off.
    pub fn done(&self, job: Job, failed: bool) {
        let (again, delay) = self.with(|s| {
            s.running.remove(&job);
            let again = s.again.remove(&job);
            if !failed {
                s.failures.remove(&job);
                return (again, None);
            }
            let count = s.failures.entry(job.clone()).or_insert(0);
            *count = count.saturating_add(1);
            let delay = BASE_DELAY
                .saturating_mul(2u32.saturating_pow(count.saturating_sub(1).min(16)))
                .min(MAX_DELAY);
            (again, Some(delay))
        });
        match delay {
            _ if again => self.add(job),
            Some(delay) => {
                let queue = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    queue.add(job);
                });
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_once_and_again_when_queued_while_running() {
        let queue = Queue::default();
        queue.add(Job::Attempt("a".into()));
        queue.add(Job::Attempt("a".into()));
        queue.add(Job::Attempt("b".into()));
        let first = queue.next().await;
        assert_eq!(first, Job::Attempt("a".into()));
        queue.add(Job::Attempt("a".into()));
        assert_eq!(queue.next().await, Job::Attempt("b".into()));
        queue.done(first, false);
        assert_eq!(queue.next().await, Job::Attempt("a".into()));
    }
}

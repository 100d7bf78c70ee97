//! Capstan's scheduler: watches unscheduled pods and the nodes, filters and scores nodes as
//! kube-scheduler's default plugins do, binds through `pods/binding`, and preempts by priority.
//! It reaches the cluster only through a `kube::Client` and acts only while it holds the
//! `kube-system/kube-scheduler` Lease.

pub mod bind;
pub mod cycle;
pub mod events;
pub mod filters;
pub mod message;
pub mod prebind;
pub mod preempt;
pub mod queue;
pub mod resources;
pub mod scheduler;
pub mod scores;
pub mod selectors;
pub mod snapshot;
pub mod volumes;

use std::future::Future;
use std::time::Duration;

/// kube-scheduler's settings that Capstan reads.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Leader-election identity, unique per process.
    pub identity: String,
    /// The profile's `schedulerName`; pods naming another scheduler are left alone.
    pub scheduler_name: String,
    /// Leader-election timings: lease duration, renew deadline, retry period; `None` for the
    /// upstream defaults.
    pub leader_election: Option<(Duration, Duration, Duration)>,
}

impl SchedulerOptions {
    /// The upstream defaults: the `default-scheduler` profile.
    pub fn new(identity: &str) -> SchedulerOptions {
        SchedulerOptions {
            identity: identity.into(),
            scheduler_name: "default-scheduler".into(),
            leader_election: None,
        }
    }
}

/// Schedules pods whenever this process holds the scheduler's Lease, until `shutdown`.
pub async fn run(
    client: kube::Client,
    options: SchedulerOptions,
    shutdown: impl Future<Output = ()>,
) {
    let mut election =
        capstan_leader::LeaderElection::new("kube-system", "kube-scheduler", &options.identity);
    if let Some((lease, renew, retry)) = options.leader_election {
        election.lease_duration = lease;
        election.renew_deadline = renew;
        election.retry_period = retry;
    }
    election
        .run(
            client.clone(),
            || schedule(client.clone(), options.clone()),
            shutdown,
        )
        .await;
}

/// The scheduling loop, while leader.
async fn schedule(client: kube::Client, options: SchedulerOptions) {
    tracing::info!(scheduler = %options.scheduler_name, "leading: scheduling");
    scheduler::Scheduler::run(client, options).await;
}

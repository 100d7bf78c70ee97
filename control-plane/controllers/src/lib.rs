//! Capstan's controller manager: the kube-controller-manager loops that matter to users, each a
//! loop over watch caches (state in, desired state out, API writes) that reaches the cluster
//! only through a `kube::Client`. Several control planes may run against one store: the loops
//! run only in the holder of the `kube-system/kube-controller-manager` Lease.

pub mod apps_shared;
pub mod certificates;
pub mod context;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod discovery;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod endpointslice_mirroring;
pub mod events;
pub mod garbagecollector;
pub mod informer;
pub mod job;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod placement;
pub mod podgc;
pub mod podutil;
pub mod queue;
pub mod registry;
pub mod replicaset;
pub mod root_ca;
pub mod serviceaccount;
pub mod serviceaccount_token;
pub mod statefulset;
pub mod taint_eviction;
pub mod ttl_after_finished;

use std::future::Future;

pub use context::{Context, ControllerOptions};

/// Runs the enabled controllers whenever this process holds the controller manager's Lease,
/// until `shutdown` completes.
pub async fn run(
    client: kube::Client,
    options: ControllerOptions,
    shutdown: impl Future<Output = ()>,
) {
    let election = capstan_leader::LeaderElection {
        identity: options.identity.clone(),
        ..capstan_leader::LeaderElection::new(
            "kube-system",
            "kube-controller-manager",
            &options.identity,
        )
    };
    let election = match options.leader_election.clone() {
        Some(timings) => capstan_leader::LeaderElection {
            lease_duration: timings.lease_duration,
            renew_deadline: timings.renew_deadline,
            retry_period: timings.retry_period,
            ..election
        },
        None => election,
    };
    let context = Context::new(client.clone(), options);
    election
        .run(client, || registry::run_enabled(context.clone()), shutdown)
        .await;
}

//! The controllers by name (kube-controller-manager's `--controllers` names), and how they are
//! started together.

use futures::future::BoxFuture;
use tokio::task::JoinSet;

use crate::context::Context;

/// A controller's loop: runs until dropped.
pub type Start = fn(Context) -> BoxFuture<'static, ()>;

/// Every controller, by its upstream name.
pub fn all() -> Vec<(&'static str, Start)> {
    vec![
        ("daemonset", crate::daemonset::start),
        ("statefulset", crate::statefulset::start),
        ("csrapproving", crate::certificates::approving::start),
        ("csrsigning", crate::certificates::signing::start),
        ("nodeipam", crate::node_ipam::start),
        ("nodelifecycle", crate::node_lifecycle::start),
        ("taint-eviction-controller", crate::taint_eviction::start),
        ("disruption", crate::disruption::start),
        ("endpoints", crate::endpoints::start),
        ("endpointslice", crate::endpointslice::start),
        (
            "endpointslice-mirroring-controller",
            crate::endpointslice_mirroring::start,
        ),
        ("replicaset", crate::replicaset::start_replicaset),
        (
            "replicationcontroller",
            crate::replicaset::start_replicationcontroller,
        ),
        ("deployment", crate::deployment::start),
        ("garbagecollector", crate::garbagecollector::start),
        ("namespace", crate::namespace::start),
        ("serviceaccount", crate::serviceaccount::start),
        ("serviceaccount-token", crate::serviceaccount_token::start),
        (
            "legacy-serviceaccount-token-cleaner",
            crate::serviceaccount_token::cleaner::start,
        ),
        ("pod-garbage-collector", crate::podgc::start),
        ("root-ca-certificate-publisher", crate::root_ca::start),
        ("job", crate::job::start),
        ("cronjob", crate::cronjob::start),
        ("ttl-after-finished", crate::ttl_after_finished::start),
    ]
}

/// Starts each enabled controller as a task and waits; dropping the future stops them all
/// (leadership lost, or shutdown).
pub async fn run_enabled(context: Context) {
    let mut tasks = JoinSet::new();
    for (name, start) in all() {
        if !context.options.enabled(name) {
            tracing::info!(controller = name, "controller disabled");
            continue;
        }
        tracing::info!(controller = name, "starting controller");
        tasks.spawn(start(context.clone()));
    }
    while let Some(ended) = tasks.join_next().await {
        if let Err(error) = ended {
            tracing::error!(%error, "a controller stopped");
        }
    }
    // With every controller ended, keep holding the lease rather than flapping.
    futures::future::pending::<()>().await;
}

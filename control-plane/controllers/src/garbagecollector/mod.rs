//! `garbagecollector`: the ownerReferences graph over every served resource that can be
//! listed, watched and deleted. Dependents whose owners are all gone are deleted (Background);
//! an owner deleted in the foreground waits for its blocking dependents; an orphaning owner's
//! dependents lose their references to it. Monitors follow discovery, re-read every 30 s as
//! upstream's resync of monitors.

pub mod graph;
pub mod monitors;
pub mod worker;

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::context::Context;
use crate::discovery::{self, Served};
use crate::queue::{Backoff, WorkQueue};
use graph::{Graph, Node};
use monitors::{Change, Monitors};
use worker::{Env, Resources};

/// How often discovery is read again for new or removed resources.
const RESYNC: Duration = Duration::from_secs(30);
/// Concurrent workers (`--concurrent-gc-syncs` is 20 upstream; a few suffice in one process).
const WORKERS: usize = 5;
/// Failed jobs' back-off.
const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(50),
    max: Duration::from_secs(30),
};

/// The controller's start function.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context))
}

async fn run(context: Context) {
    let client = context.client.clone();
    let env = Env {
        client: client.clone(),
        graph: Arc::new(Mutex::new(Graph::default())),
        resources: Arc::new(RwLock::new(Resources::default())),
        queue: Arc::new(WorkQueue::with_backoff(BACKOFF)),
    };
    let (synced_tx, synced) = watch::channel(false);
    let (changes_tx, changes) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    for _ in 0..WORKERS {
        tasks.spawn(work(env.clone(), synced.clone()));
    }
    let mut monitors = Monitors::default();
    let served = loop {
        match discovery::served(&client, &[]).await {
            Ok(served) => break served,
            Err(error) => {
                tracing::warn!(%error, "garbage collector: discovery failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let served: Vec<Arc<Served>> = served.into_iter().map(Arc::new).collect();
    *env.resources
        .write()
        .unwrap_or_else(PoisonError::into_inner) = Resources::new(&served);
    let initial = monitors.sync(&client, &served, &changes_tx, &mut tasks);
    tracing::info!(
        resources = initial.len(),
        "garbage collector monitors started"
    );
    tasks.spawn(build(env.clone(), changes, initial, synced_tx));
    loop {
        tokio::time::sleep(RESYNC).await;
        match discovery::served(&client, &[]).await {
            Ok(served) => {
                let served: Vec<Arc<Served>> = served.into_iter().map(Arc::new).collect();
                *env.resources
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Resources::new(&served);
                monitors.sync(&client, &served, &changes_tx, &mut tasks);
            }
            Err(error) => tracing::warn!(%error, "garbage collector: discovery failed"),
        }
    }
}

/// The graph builder: applies the monitors' changes and queues what they call for. Jobs wait
/// until every initial monitor has listed once, so that no owner is taken for absent only
/// because its resource was not listed yet.
async fn build(
    env: Env,
    mut changes: mpsc::UnboundedReceiver<Change>,
    initial: Vec<String>,
    synced: watch::Sender<bool>,
) {
    let mut pending: std::collections::HashSet<String> = initial.into_iter().collect();
    if pending.is_empty() {
        let _ = synced.send(true);
    }
    while let Some(change) = changes.recv().await {
        let jobs = {
            let mut graph = env.graph.lock().unwrap_or_else(PoisonError::into_inner);
            let jobs = match change {
                Change::Upsert(resource, object) => match Node::of(&resource, &object) {
                    Some((uid, node)) => graph.upsert(uid, node),
                    None => Vec::new(),
                },
                Change::Delete(_, object) => match object.metadata.uid.as_deref() {
                    Some(uid) => graph.remove(uid),
                    None => Vec::new(),
                },
                Change::Listed(resource, alive) => {
                    pending.remove(&resource);
                    graph.retain(&resource, &alive)
                }
                Change::Stopped(resource) => {
                    pending.remove(&resource);
                    graph.retain(&resource, &Default::default())
                }
            };
            let mut jobs = jobs;
            if pending.is_empty() && !*synced.borrow() {
                tracing::info!("garbage collector synced");
                jobs.extend(graph.initial_jobs());
                let _ = synced.send(true);
            }
            jobs
        };
        for job in jobs {
            env.queue.add(job);
        }
    }
}

/// A worker: runs jobs once the graph is synced, retrying failed ones with back-off.
async fn work(env: Env, mut synced: watch::Receiver<bool>) {
    if synced.wait_for(|s| *s).await.is_err() {
        return;
    }
    loop {
        let job = env.queue.next().await;
        let result = env.run(&job).await;
        match result {
            Ok(()) => env.queue.forget(&job),
            Err(error) => {
                tracing::debug!(?job, %error, "garbage collector job failed; retrying");
                env.queue.add_rate_limited(job.clone());
            }
        }
        env.queue.done(&job);
    }
}

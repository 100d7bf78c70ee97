//! The `disruption` controller: each PodDisruptionBudget's status (currentHealthy,
//! desiredHealthy, expectedPods, disruptionsAllowed, the `DisruptionAllowed` condition) from
//! the pods it selects, and the cleanup of `disruptedPods` the eviction subresource records.

pub mod scale;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use kube::Resource;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::context::Context;
use crate::events::EventSink;
use crate::informer::{informer, touched};
use crate::placement::object_key;
use crate::podutil;
use crate::queue::{self, Backoff, WorkQueue};
use status::StatusError;

/// Failed syncs' back-off.
const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(50),
    max: Duration::from_secs(100),
};

/// Starts the controller.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context))
}

struct Shared {
    client: kube::Client,
    budgets: Store<PodDisruptionBudget>,
    pods: Store<Pod>,
    events: EventSink,
}

async fn run(context: Context) {
    let client = context.client.clone();
    let config = watcher::Config::default;
    let (budgets, budget_events) =
        informer(Api::<PodDisruptionBudget>::all(client.clone()), config());
    let (pods, pod_events) = informer(Api::<Pod>::all(client.clone()), config());
    // Upstream's disruption controller records as the controller manager.
    let (events, publish) = EventSink::new(client.clone(), "controllermanager");
    tokio::spawn(publish);
    let shared = Arc::new(Shared {
        client,
        budgets,
        pods,
        events,
    });
    let queue: WorkQueue<String> = WorkQueue::with_backoff(BACKOFF);
    let for_pods = Arc::clone(&shared);
    let triggers = stream::select_all(vec![
        budget_events
            .filter_map(|e| async move { touched(e) })
            .map(|b: PodDisruptionBudget| vec![object_key(&b.metadata)])
            .boxed(),
        pod_events
            .filter_map(|e| async move { touched(e) })
            .map(move |p: Pod| for_pods.budgets_of(&p))
            .boxed(),
    ]);
    let feed = {
        let queue = &queue;
        triggers.for_each(move |keys| {
            for key in keys {
                queue.add(key);
            }
            futures::future::ready(())
        })
    };
    let work = async {
        let ready = futures::future::join(
            shared.budgets.wait_until_ready(),
            shared.pods.wait_until_ready(),
        )
        .await;
        if ready.0.is_err() || ready.1.is_err() {
            return;
        }
        loop {
            let key = queue.next().await;
            match shared.sync(&key).await {
                Ok(None) => queue.forget(&key),
                Ok(Some(after)) => {
                    queue.forget(&key);
                    queue.add_after(key.clone(), after);
                }
                Err(error) => {
                    tracing::warn!(budget = %key, %error, "disruption sync failed");
                    queue.add_rate_limited(key.clone());
                }
            }
            queue.done(&key);
        }
    };
    tokio::select! {
        () = feed => {}
        () = work => {}
    }
}

/// The pods a budget selects: none without a selector, all with an empty one.
fn selects(pdb: &PodDisruptionBudget, pod: &Pod) -> bool {
    pdb.metadata.namespace == pod.metadata.namespace
        && pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|sel| podutil::selector_matches(sel, pod.metadata.labels.as_ref()))
}

impl Shared {
    /// The budgets a pod change concerns: those selecting it and those that recorded it.
    fn budgets_of(&self, pod: &Pod) -> Vec<String> {
        let name = pod.metadata.name.as_deref().unwrap_or("");
        self.budgets
            .state()
            .iter()
            .filter(|b| {
                selects(b, pod)
                    || (b.metadata.namespace == pod.metadata.namespace
                        && b.status
                            .as_ref()
                            .and_then(|s| s.disrupted_pods.as_ref())
                            .is_some_and(|d| d.contains_key(name)))
            })
            .map(|b| object_key(&b.metadata))
            .collect()
    }

    async fn sync(&self, key: &str) -> Result<Option<Duration>, StatusError> {
        let (namespace, name) = queue::split(key);
        let Some(pdb) = self.budgets.get(&ObjectRef::new(name).within(namespace)) else {
            return Ok(None);
        };
        let now = Timestamp::now();
        match self.compute(&pdb, now).await {
            Ok((status, recheck)) => {
                self.write(&pdb, status).await?;
                Ok(recheck.map(|at| {
                    Duration::try_from(at.duration_since(now)).unwrap_or_default()
                        + Duration::from_millis(100)
                }))
            }
            Err(error) => {
                // Fail safe: no disruptions while the numbers are unknown.
                self.write(&pdb, status::failed(&pdb, &error.to_string(), now))
                    .await?;
                Err(error)
            }
        }
    }

    async fn compute(
        &self,
        pdb: &PodDisruptionBudget,
        now: Timestamp,
    ) -> Result<(PodDisruptionBudgetStatus, Option<Timestamp>), StatusError> {
        let namespace = pdb.metadata.namespace.as_deref().unwrap_or("");
        let all_pods = self.pods.state();
        let pods: Vec<&Pod> = all_pods
            .iter()
            .filter(|p| selects(pdb, p))
            .map(|p| p.as_ref())
            .collect();
        if pods.is_empty() {
            self.events.normal(
                pdb.object_ref(&()),
                "NoPods",
                "No matching pods found".into(),
            );
        }
        let counted = self.expected_count(pdb, namespace, &pods).await;
        let (expected, desired) = counted.inspect_err(|error| {
            self.events.warning(
                pdb.object_ref(&()),
                "CalculateExpectedPodCountFailed",
                format!("Failed to calculate the number of expected pods: {error}"),
            );
        })?;
        let (disrupted, recheck) = status::disrupted(pdb, &pods, now);
        let current = status::healthy(&pods, &disrupted);
        Ok((
            status::status(pdb, current, desired, expected, disrupted, now),
            recheck,
        ))
    }

    /// (expectedPods, desiredHealthy), with the controllers' scale when the budget needs it.
    async fn expected_count(
        &self,
        pdb: &PodDisruptionBudget,
        namespace: &str,
        pods: &[&Pod],
    ) -> Result<(i32, i32), StatusError> {
        let scale = if status::needs_scale(pdb) {
            let (scale, unmanaged) = scale::expected_scale(&self.client, namespace, pods).await?;
            if !unmanaged.is_empty() {
                tracing::debug!(budget = ?pdb.metadata.name, pods = ?unmanaged, "unmanaged pods");
                let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
                self.events.warning(
                    pdb.object_ref(&()),
                    "UnmanagedPods",
                    format!(
                        "Pods selected by this PodDisruptionBudget (selector: {}) were found to be \
                         unmanaged. As a result, the status of the PDB cannot be calculated \
                         correctly, which may result in undefined behavior. To account for these \
                         pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
                        status::go_selector(selector)
                    ),
                );
            }
            Some(scale)
        } else {
            None
        };
        status::expected(pdb, pods.len(), scale)
    }

    async fn write(
        &self,
        pdb: &PodDisruptionBudget,
        status: PodDisruptionBudgetStatus,
    ) -> Result<(), StatusError> {
        if pdb.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let namespace = pdb.metadata.namespace.as_deref().unwrap_or("");
        let name = pdb.metadata.name.as_deref().unwrap_or("");
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), namespace);
        let mut updated = pdb.clone();
        updated.status = Some(status);
        api.replace_status(name, &PostParams::default(), &updated)
            .await?;
        Ok(())
    }
}

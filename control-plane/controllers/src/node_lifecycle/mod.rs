//! "nodelifecycle": watches Nodes and their Leases in `kube-node-lease`; a node not heard
//! from for `--node-monitor-grace-period` has its kubelet conditions set Unknown, its pods
//! marked not ready, and gets the `unreachable` taints (NoExecute, rate limited as
//! `--node-eviction-rate`; evicting is the taint-eviction controller's part). The NoSchedule
//! taints follow the node's conditions (TaintNodesByCondition) on every node change. When the
//! kubelet posts Ready again the taints go.
//!
//! Nodes are looked at on every Node or Lease change and every `--node-monitor-period`, over
//! the watch caches; silence is measured on the controller's clock.

pub mod events;
pub mod health;
mod limiter;
mod pods;
pub mod taints;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::context::Context;
use events::{Kind, Recorder, node_reference};
use health::Probes;
use limiter::Limiter;

/// The namespace of the nodes' Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Starts the controller.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context))
}

/// Which watch an event came from.
enum Source {
    Nodes(bool),
    Leases(bool),
    Pods(bool),
}

async fn run(context: Context) {
    let client = context.client.clone();
    let (nodes, node_writer) = reflector::store::<Node>();
    let (leases, lease_writer) = reflector::store::<Lease>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let config = watcher::Config::default();
    let node_events = reflector::reflector(
        node_writer,
        watcher::watcher(Api::<Node>::all(client.clone()), config.clone()),
    )
    .default_backoff()
    .map(|e| Source::Nodes(matches!(e, Ok(Event::InitDone))));
    let lease_events = reflector::reflector(
        lease_writer,
        watcher::watcher(
            Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
            config,
        ),
    )
    .default_backoff()
    .map(|e| Source::Leases(matches!(e, Ok(Event::InitDone))));
    let pod_events = reflector::reflector(
        pod_writer,
        watcher::watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().fields("spec.nodeName!="),
        ),
    )
    .default_backoff()
    .map(|e| Source::Pods(matches!(e, Ok(Event::InitDone))));
    let mut events = stream::select(
        stream::select(node_events.boxed(), lease_events.boxed()),
        pod_events.boxed(),
    );

    let mut monitor = Monitor {
        client: client.clone(),
        recorder: Recorder::new(client, "node-controller"),
        grace: context.options.node_monitor_grace_period,
        probes: Probes::default(),
        limiter: Limiter::new(limiter::NODE_EVICTION_RATE),
        pods_marked: HashSet::new(),
    };
    let mut synced = (false, false, false);
    let mut tick = tokio::time::interval(context.options.node_monitor_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let look = tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Source::Nodes(done)) => { synced.0 |= done; true }
                Some(Source::Leases(done)) => { synced.1 |= done; true }
                Some(Source::Pods(done)) => { synced.2 |= done; false }
            },
            _ = tick.tick() => true,
        };
        if look && synced == (true, true, true) {
            monitor.pass(&nodes, &leases, &pods).await;
        }
    }
}

/// The controller's memory between passes.
struct Monitor {
    client: kube::Client,
    recorder: Recorder,
    grace: Duration,
    probes: Probes,
    limiter: Limiter,
    /// Nodes whose pods were marked not ready since their Ready condition left True.
    pods_marked: HashSet<String>,
}

impl Monitor {
    /// Looks at every node once.
    async fn pass(&mut self, nodes: &Store<Node>, leases: &Store<Lease>, pods: &Store<Pod>) {
        let all = nodes.state();
        let names: HashSet<String> = all.iter().filter_map(|n| n.metadata.name.clone()).collect();
        self.probes.retain(|name| names.contains(name));
        self.pods_marked.retain(|name| names.contains(name));
        for node in all {
            let Some(name) = node.metadata.name.clone() else {
                continue;
            };
            let renew = leases
                .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE))
                .and_then(|l| {
                    l.spec
                        .as_ref()?
                        .renew_time
                        .as_ref()
                        .map(|t| t.0.to_string())
                });
            let silent = self.probes.observe(&node, renew, Instant::now());
            if let Err(error) = self.look_at((*node).clone(), silent, pods).await {
                // The next change or period looks again, from a fresher cache.
                tracing::debug!(node = %name, %error, "node not updated; retried");
            }
        }
    }

    /// Brings one node's conditions, taints and pods in line with how long it was silent.
    async fn look_at(
        &mut self,
        mut node: Node,
        silent: Duration,
        pods: &Store<Pod>,
    ) -> Result<(), kube::Error> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let api: Api<Node> = Api::all(self.client.clone());
        let was_ready = health::ready_status(&node) == "True";
        if silent > self.grace
            && let Some(conditions) = health::unknown_conditions(&node, jiff::Timestamp::now())
        {
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "status": {"conditions": conditions},
            });
            node = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            tracing::info!(node = %name, ?silent, "node stopped posting status: conditions Unknown");
            if was_ready {
                let message = format!("Node {name} status is now: NodeNotReady");
                self.recorder
                    .record(
                        &node_reference(&node),
                        Kind::Normal,
                        "NodeNotReady",
                        &message,
                    )
                    .await;
            }
        }
        let ready = health::condition(&node, "Ready").map(|c| c.status.clone());
        match ready.as_deref() {
            Some("True") | None => {
                self.pods_marked.remove(&name);
            }
            Some(_) if !self.pods_marked.contains(&name) => {
                let on_node: Vec<Pod> = pods
                    .state()
                    .iter()
                    .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&name))
                    .map(|p| (**p).clone())
                    .collect();
                if pods::mark_not_ready(&self.client, &self.recorder, &on_node).await {
                    self.pods_marked.insert(name.clone());
                }
            }
            Some(_) => {}
        }
        let now = Instant::now();
        let allow = self.limiter.ready(now);
        if let Some(wanted) = taints::desired(&node, jiff::Timestamp::now(), allow) {
            let adds_no_execute = !taints::has_no_execute(&node)
                && wanted.iter().any(|t| {
                    t.effect == "NoExecute" && Some(t.key.as_str()) == taints::no_execute(&node)
                });
            let patch = json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": wanted},
            });
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            if adds_no_execute {
                self.limiter.take(now);
            }
            let keys: Vec<String> = wanted
                .iter()
                .map(|t| format!("{}:{}", t.key, t.effect))
                .collect();
            tracing::info!(node = %name, taints = ?keys, "node taints updated");
        }
        Ok(())
    }
}

//! "nodeipam": gives every Node a podCIDR (`spec.podCIDR` and `spec.podCIDRs`) from
//! `--cluster-cidr`, subnets of `--node-cidr-mask-size`, as upstream's RangeAllocator. What
//! nodes hold is read back from every (re)list before anything is handed out, so a restart
//! never hands out a range twice; a deleted Node's range is freed. When the range is used up
//! the node gets a `CIDRNotAvailable` event and waits for a range to be freed.

pub mod cidrs;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::context::Context;
use crate::node_lifecycle::events::{Kind, Recorder, node_reference};
use cidrs::CidrSet;

/// How soon a node whose allocation failed (API error, range used up) is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the controller; it does nothing without `--cluster-cidr`.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context))
}

async fn run(context: Context) {
    let Some(cluster) = context.options.cluster_cidr else {
        tracing::info!("node IPAM off: no --cluster-cidr");
        return;
    };
    let mask = context.options.node_cidr_mask_size;
    let set = match CidrSet::new(cluster, mask) {
        Ok(set) => set,
        Err(error) => {
            tracing::error!(%error, "node IPAM off");
            return;
        }
    };
    let client = context.client.clone();
    let mut ipam = Ipam {
        api: Api::all(client.clone()),
        recorder: Recorder::new(client.clone(), "cidrAllocator"),
        set,
        mask,
        nodes: HashMap::new(),
        pending: BTreeSet::new(),
        reported: HashSet::new(),
    };
    let mut events = watcher::watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relist: Option<Vec<Node>> = None;
    loop {
        let retry = async {
            if ipam.pending.is_empty() {
                futures::future::pending::<()>().await;
            }
            tokio::time::sleep(RETRY).await;
        };
        let event = tokio::select! {
            event = events.next() => event,
            _ = retry => {
                ipam.allocate_pending().await;
                continue;
            }
        };
        match event {
            None => return,
            Some(Err(error)) => tracing::debug!(%error, "node watch failed; retried"),
            Some(Ok(Event::Init)) => relist = Some(Vec::new()),
            Some(Ok(Event::InitApply(node))) => {
                if let Some(list) = relist.as_mut() {
                    list.push(node);
                }
            }
            Some(Ok(Event::InitDone)) => {
                ipam.rebuild(relist.take().unwrap_or_default());
                ipam.allocate_pending().await;
            }
            Some(Ok(Event::Apply(node))) => {
                ipam.seen(node);
                ipam.allocate_pending().await;
            }
            Some(Ok(Event::Delete(node))) => {
                ipam.deleted(&node);
                ipam.allocate_pending().await;
            }
        }
    }
}

/// The allocator's state, rebuilt from every list.
struct Ipam {
    api: Api<Node>,
    recorder: Recorder,
    set: CidrSet,
    mask: u8,
    /// Nodes by name: the CIDR each holds (or was given by us).
    nodes: HashMap<String, Option<IpNet>>,
    /// Nodes still waiting for a CIDR.
    pending: BTreeSet<String>,
    /// Nodes told that no CIDR is left (once each while they wait).
    reported: HashSet<String>,
}

fn pod_cidr(node: &Node) -> Option<IpNet> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs
        .as_ref()
        .and_then(|c| c.first())
        .or(spec.pod_cidr.as_ref())
        .and_then(|c| c.parse().ok())
}

fn name(node: &Node) -> String {
    node.metadata.name.clone().unwrap_or_default()
}

impl Ipam {
    /// Starts over from a full list: every range a node holds is taken first.
    fn rebuild(&mut self, nodes: Vec<Node>) {
        if let Ok(set) = CidrSet::new(self.set.cluster(), self.mask) {
            self.set = set;
        }
        self.nodes.clear();
        self.pending.clear();
        for node in &nodes {
            if let Some(cidr) = pod_cidr(node) {
                self.occupy(node, cidr);
            }
        }
        for node in nodes {
            if pod_cidr(&node).is_none() {
                self.nodes.insert(name(&node), None);
                self.pending.insert(name(&node));
            }
        }
    }

    fn occupy(&mut self, node: &Node, cidr: IpNet) {
        if !self.set.occupy(&cidr) {
            tracing::warn!(node = %name(node), %cidr, range = %self.set.cluster(),
                "node podCIDR is outside the cluster CIDR; left alone");
        }
        self.nodes.insert(name(node), Some(cidr));
    }

    fn seen(&mut self, node: Node) {
        let key = name(&node);
        match (pod_cidr(&node), self.nodes.get(&key).copied().flatten()) {
            (Some(cidr), held) => {
                if let Some(held) = held.filter(|h| *h != cidr) {
                    self.set.release(&held);
                }
                self.occupy(&node, cidr);
                self.pending.remove(&key);
                self.reported.remove(&key);
            }
            // Ours already (the watch has not caught up with our write yet).
            (None, Some(_)) => {}
            (None, None) => {
                self.nodes.insert(key.clone(), None);
                self.pending.insert(key);
            }
        }
    }

    fn deleted(&mut self, node: &Node) {
        let key = name(node);
        if let Some(cidr) = self.nodes.remove(&key).flatten().or_else(|| pod_cidr(node)) {
            self.set.release(&cidr);
            tracing::info!(node = %key, %cidr, "node deleted: podCIDR released");
        }
        self.pending.remove(&key);
        self.reported.remove(&key);
    }

    /// Tries every waiting node once.
    async fn allocate_pending(&mut self) {
        let waiting: Vec<String> = self.pending.iter().cloned().collect();
        for node in waiting {
            self.allocate(&node).await;
        }
    }

    async fn allocate(&mut self, node: &str) {
        let Some(cidr) = self.set.allocate() else {
            if self.reported.insert(node.to_string()) {
                tracing::error!(node, range = %self.set.cluster(),
                    "CIDR allocation failed; there are no remaining CIDRs left to allocate in the accepted range");
                let message = format!("Node {node} status is now: CIDRNotAvailable");
                let reference = match self.api.get(node).await {
                    Ok(object) => node_reference(&object),
                    Err(_) => return,
                };
                self.recorder
                    .record(&reference, Kind::Normal, "CIDRNotAvailable", &message)
                    .await;
            }
            return;
        };
        let patch = json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
        match self
            .api
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node, %cidr, "podCIDR allocated");
                self.nodes.insert(node.to_string(), Some(cidr));
                self.pending.remove(node);
                self.reported.remove(node);
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                self.set.release(&cidr);
                self.nodes.remove(node);
                self.pending.remove(node);
            }
            Err(error) => {
                tracing::warn!(node, %cidr, %error, "podCIDR not written; retried");
                self.set.release(&cidr);
            }
        }
    }
}

//! Hollow nodes: many Nodes in one process, each registered with capacity, its Lease renewed,
//! and the pods bound to it reported Running (with fake IPs) without any runtime. They let the
//! scheduler and the controllers be tested and benchmarked at scale, as kubemark does upstream.
//!
//! A pod template steers its hollow life through annotations:
//! - `hollow.capstan.dev/exit-after`: seconds after start when the containers exit
//!   (restartPolicy Always restarts them, counting restarts; Never / OnFailure end the pod);
//! - `hollow.capstan.dev/exit-code`: their exit code (default 0);
//! - `hollow.capstan.dev/ready`: `"false"` keeps the pod running but not Ready;
//! - `hollow.capstan.dev/ready-after`: seconds after start when it becomes Ready.

mod node;
mod pods;

pub use node::{HollowNode, NodeSpec};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

/// The annotation with the seconds after which the containers exit.
pub const EXIT_AFTER: &str = "hollow.capstan.dev/exit-after";
/// The annotation with the containers' exit code.
pub const EXIT_CODE: &str = "hollow.capstan.dev/exit-code";
/// The annotation that keeps a pod unready when `"false"`.
pub const READY: &str = "hollow.capstan.dev/ready";
/// The annotation with the seconds after start when the pod becomes Ready.
pub const READY_AFTER: &str = "hollow.capstan.dev/ready-after";

/// How the set of hollow nodes behaves.
#[derive(Debug, Clone)]
pub struct HollowOptions {
    /// How often each node renews its Lease (the kubelet: 10 s).
    pub lease_renew_interval: Duration,
    /// The Lease duration written (the kubelet: 40 s).
    pub lease_duration_seconds: i32,
}

impl Default for HollowOptions {
    fn default() -> HollowOptions {
        HollowOptions {
            lease_renew_interval: Duration::from_secs(10),
            lease_duration_seconds: 40,
        }
    }
}

/// Shared between the nodes' tasks and the owner.
#[derive(Debug, Default)]
pub(crate) struct Nodes {
    /// By node name: whether it is alive (renews its Lease and runs its pods).
    pub alive: Mutex<HashMap<String, Arc<HollowNode>>>,
}

/// A set of hollow nodes served by one pod watch; stops when dropped.
pub struct HollowCluster {
    client: kube::Client,
    options: HollowOptions,
    nodes: Arc<Nodes>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for HollowCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HollowCluster")
            .field("options", &self.options)
            .finish()
    }
}

impl HollowCluster {
    /// Starts the pod loop that serves every node added later.
    pub fn new(client: kube::Client, options: HollowOptions) -> HollowCluster {
        let nodes = Arc::new(Nodes::default());
        let mut tasks = JoinSet::new();
        tasks.spawn(pods::run(client.clone(), Arc::clone(&nodes)));
        HollowCluster {
            client,
            options,
            nodes,
            tasks,
        }
    }

    /// Registers a node (creating or updating its Node object) and starts its Lease loop.
    pub async fn add(&mut self, spec: NodeSpec) -> Result<(), kube::Error> {
        let node = Arc::new(HollowNode::new(spec, self.nodes.alive_count()));
        node.register(&self.client).await?;
        if let Ok(mut alive) = self.nodes.alive.lock() {
            alive.insert(node.name().to_string(), Arc::clone(&node));
        }
        self.tasks.spawn(node::renew_lease(
            self.client.clone(),
            Arc::clone(&node),
            self.options.clone(),
        ));
        Ok(())
    }

    /// Adds `count` nodes named `<prefix>-<i>` with the same capacity.
    pub async fn add_many(
        &mut self,
        prefix: &str,
        count: usize,
        template: &NodeSpec,
    ) -> Result<(), kube::Error> {
        for i in 0..count {
            let spec = NodeSpec {
                name: format!("{prefix}-{i}"),
                ..template.clone()
            };
            self.add(spec).await?;
        }
        Ok(())
    }

    /// Stops a node as a crash would: no more Lease renewals, its pods no longer served. The
    /// Node object stays, as it does when a kubelet dies.
    pub fn kill(&self, name: &str) {
        if let Ok(alive) = self.nodes.alive.lock()
            && let Some(node) = alive.get(name)
        {
            node.kill();
        }
    }

    /// Brings a killed node back: it renews its Lease and serves its pods again.
    pub fn revive(&self, name: &str) {
        if let Ok(alive) = self.nodes.alive.lock()
            && let Some(node) = alive.get(name)
        {
            node.revive();
        }
    }

    /// Names of the registered nodes.
    pub fn names(&self) -> Vec<String> {
        self.nodes
            .alive
            .lock()
            .map(|alive| alive.keys().cloned().collect())
            .unwrap_or_default()
    }
}

impl Nodes {
    fn alive_count(&self) -> usize {
        self.alive.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// The node called `name`, if it is ours and alive.
    pub(crate) fn serving(&self, name: &str) -> Option<Arc<HollowNode>> {
        let alive = self.alive.lock().ok()?;
        alive.get(name).filter(|n| n.is_alive()).cloned()
    }
}

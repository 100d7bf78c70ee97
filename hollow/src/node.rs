//! One hollow node: its Node object, its Lease, and whether it is alive.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::HollowOptions;

/// What a hollow node registers.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The Node's name.
    pub name: String,
    /// CPU capacity, a quantity (`"4"`).
    pub cpu: String,
    /// Memory capacity, a quantity (`"16Gi"`).
    pub memory: String,
    /// Pod capacity.
    pub pods: u32,
    /// Extended resources and any other capacity, by resource name.
    pub extra_capacity: BTreeMap<String, String>,
    /// Labels besides the well-known ones the kubelet sets.
    pub labels: BTreeMap<String, String>,
    /// Taints registered with the Node (`--register-with-taints`).
    pub taints: Vec<Taint>,
    /// Images reported present, with their sizes in bytes (ImageLocality reads them).
    pub images: Vec<(String, i64)>,
    /// Registered unschedulable (`spec.unschedulable`).
    pub unschedulable: bool,
}

impl Default for NodeSpec {
    fn default() -> NodeSpec {
        NodeSpec {
            name: "hollow".into(),
            cpu: "4".into(),
            memory: "16Gi".into(),
            pods: 110,
            extra_capacity: BTreeMap::new(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            images: Vec::new(),
            unschedulable: false,
        }
    }
}

/// A registered hollow node.
#[derive(Debug)]
pub struct HollowNode {
    spec: NodeSpec,
    index: usize,
    alive: AtomicBool,
    next_ip: AtomicU32,
}

impl HollowNode {
    pub(crate) fn new(spec: NodeSpec, index: usize) -> HollowNode {
        HollowNode {
            spec,
            index,
            alive: AtomicBool::new(true),
            next_ip: AtomicU32::new(0),
        }
    }

    /// The Node's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Whether it renews its Lease and serves its pods.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    pub(crate) fn kill(&self) {
        self.alive.store(false, Ordering::SeqCst);
    }

    pub(crate) fn revive(&self) {
        self.alive.store(true, Ordering::SeqCst);
    }

    /// The node's fake InternalIP: 10.254.x.y by its index.
    pub fn internal_ip(&self) -> String {
        format!("10.254.{}.{}", self.index / 250, self.index % 250 + 1)
    }

    /// A fresh fake pod IP from a per-node /24 of 10.128.0.0/9 (never a real pod network).
    pub(crate) fn next_pod_ip(&self) -> String {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed) % 253 + 2;
        let i = self.index;
        format!("10.{}.{}.{}", 128 + (i / 256) % 128, i % 256, n)
    }

    /// Creates the Node (or finds it there from an earlier run) and posts its status.
    pub(crate) async fn register(&self, client: &kube::Client) -> Result<(), kube::Error> {
        let nodes: Api<Node> = Api::all(client.clone());
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), self.spec.name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), "amd64".to_string()),
            ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
            ("beta.kubernetes.io/arch".to_string(), "amd64".to_string()),
        ]);
        labels.extend(self.spec.labels.clone());
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": self.spec.name, "labels": labels},
            "spec": {
                "taints": self.spec.taints,
                "unschedulable": self.spec.unschedulable.then_some(true),
            },
        }))
        .map_err(kube::Error::SerdeError)?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error),
        }
        self.post_status(client).await
    }

    /// Posts the whole status as the kubelet's status loop does: capacity, conditions Ready.
    pub(crate) async fn post_status(&self, client: &kube::Client) -> Result<(), kube::Error> {
        let nodes: Api<Node> = Api::all(client.clone());
        let now = jiff::Timestamp::now().to_string();
        let mut capacity = BTreeMap::from([
            ("cpu".to_string(), self.spec.cpu.clone()),
            ("memory".to_string(), self.spec.memory.clone()),
            ("pods".to_string(), self.spec.pods.to_string()),
            ("ephemeral-storage".to_string(), "100Gi".to_string()),
            ("hugepages-2Mi".to_string(), "0".to_string()),
        ]);
        capacity.extend(self.spec.extra_capacity.clone());
        let condition = |kind: &str, status: &str, reason: &str, message: &str| {
            json!({"type": kind, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": now, "lastTransitionTime": now})
        };
        let images: Vec<_> = self
            .spec
            .images
            .iter()
            .map(|(name, size)| json!({"names": [name], "sizeBytes": size}))
            .collect();
        let status = json!({"status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.internal_ip()},
                {"type": "Hostname", "address": self.spec.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": "hollow", "osImage": "hollow", "operatingSystem": "linux",
                "architecture": "amd64", "containerRuntimeVersion": "hollow://0.1.0",
                "kubeletVersion": "v1.33.0-hollow", "kubeProxyVersion": "",
            },
            "images": images,
        }});
        nodes
            .patch_status(
                &self.spec.name,
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await?;
        Ok(())
    }
}

/// Renews the node's Lease in `kube-node-lease` while it is alive; re-posts the status when
/// it comes back from the dead, as a restarted kubelet would.
pub(crate) async fn renew_lease(
    client: kube::Client,
    node: Arc<HollowNode>,
    options: HollowOptions,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut was_alive = true;
    loop {
        let alive = node.is_alive();
        if alive {
            if !was_alive && let Err(error) = node.post_status(&client).await {
                tracing::warn!(node = node.name(), %error, "hollow node status not posted");
            }
            if let Err(error) = renew_once(&client, &leases, &node, &options).await {
                tracing::debug!(node = node.name(), %error, "hollow node lease not renewed");
            }
        }
        was_alive = alive;
        tokio::time::sleep(options.lease_renew_interval).await;
    }
}

async fn renew_once(
    client: &kube::Client,
    leases: &Api<Lease>,
    node: &HollowNode,
    options: &HollowOptions,
) -> Result<(), kube::Error> {
    let now = MicroTime(jiff::Timestamp::now());
    let patch = json!({"spec": {"renewTime": now}});
    match leases
        .patch(node.name(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error),
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let owner = nodes.get(node.name()).await?;
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(node.name().to_string()),
            namespace: Some("kube-node-lease".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.name().to_string(),
                uid: owner.metadata.uid.unwrap_or_default(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.name().to_string()),
            lease_duration_seconds: Some(options.lease_duration_seconds),
            renew_time: Some(now),
            ..LeaseSpec::default()
        }),
    };
    leases.create(&PostParams::default(), &lease).await?;
    Ok(())
}

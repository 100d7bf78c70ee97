//! The scheduler's view of the cluster: every node with the pods assigned to it (bound or
//! assumed) and aggregates kept up to date as pods come and go — requested resources, host
//! ports, images — so that a scheduling cycle reads them in O(nodes) and not O(pods).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::resources::{Resources, pod_requests};
use crate::selectors::{Labels, selects};

/// `namespace/name`.
pub type PodKey = String;

/// The key of a pod.
pub fn pod_key(pod: &Pod) -> PodKey {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A pod (anti-)affinity term with its namespaces resolved.
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    /// Pods it selects; `None` selects none.
    pub selector: Option<LabelSelector>,
    /// The namespaces it looks in.
    pub namespaces: HashSet<String>,
    /// `namespaceSelector: {}`: every namespace.
    pub all_namespaces: bool,
    /// The node label that makes a topology domain.
    pub topology_key: String,
}

impl AffinityTerm {
    fn new(term: &k8s_openapi::api::core::v1::PodAffinityTerm, own_namespace: &str) -> Self {
        let mut namespaces: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        let all_namespaces = term.namespace_selector.as_ref().is_some_and(|s| {
            s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
        });
        if namespaces.is_empty() && term.namespace_selector.is_none() {
            namespaces.insert(own_namespace.to_string());
        }
        AffinityTerm {
            selector: term.label_selector.clone(),
            namespaces,
            all_namespaces,
            topology_key: term.topology_key.clone(),
        }
    }

    /// Whether the term selects `pod`.
    pub fn matches(&self, pod: &PodInfo) -> bool {
        (self.all_namespaces || self.namespaces.contains(&pod.namespace))
            && self
                .selector
                .as_ref()
                .is_some_and(|s| selects(s, &pod.labels))
    }
}

/// A host port a pod asks for: (host IP, protocol, port).
pub type HostPort = (String, String, i32);

/// A PersistentVolumeClaim a pod's volume uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodClaim {
    /// The claim's name: `claimName`, or `<pod>-<volume>` for a generic ephemeral volume.
    pub name: String,
    /// From a generic ephemeral volume (the ephemeral volume controller creates the claim).
    pub ephemeral: bool,
}

/// What the scheduler reads of a pod, computed once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: PodKey,
    /// The namespace.
    pub namespace: String,
    /// The pod's UID.
    pub uid: String,
    /// The pod as last seen.
    pub pod: Arc<Pod>,
    /// Its labels.
    pub labels: Labels,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// Effective requests.
    pub requests: Resources,
    /// Effective requests with the scoring defaults for missing CPU / memory.
    pub non_zero: Resources,
    /// Host ports asked for.
    pub host_ports: Vec<HostPort>,
    /// The claims its volumes use, in volume order.
    pub claims: Vec<PodClaim>,
    /// Required pod affinity terms.
    pub required_affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// Preferred pod affinity terms with weights.
    pub preferred_affinity: Vec<(i32, AffinityTerm)>,
    /// Preferred pod anti-affinity terms with weights.
    pub preferred_anti_affinity: Vec<(i32, AffinityTerm)>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// `spec.nodeName`, if bound.
    pub node_name: Option<String>,
    /// Being deleted.
    pub terminating: bool,
}

impl PodInfo {
    /// Reads `pod`.
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let empty = k8s_openapi::api::core::v1::PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&empty);
        let mut host_ports = Vec::new();
        for container in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            for port in container.ports.iter().flatten() {
                if let Some(host_port) = port.host_port.filter(|p| *p > 0) {
                    host_ports.push((
                        port.host_ip
                            .clone()
                            .filter(|ip| !ip.is_empty())
                            .unwrap_or_else(|| "0.0.0.0".into()),
                        port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        host_port,
                    ));
                }
            }
        }
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let claims = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|volume| {
                if let Some(claim) = &volume.persistent_volume_claim {
                    Some(PodClaim {
                        name: claim.claim_name.clone(),
                        ephemeral: false,
                    })
                } else {
                    volume.ephemeral.as_ref().map(|_| PodClaim {
                        name: format!("{pod_name}-{}", volume.name),
                        ephemeral: true,
                    })
                }
            })
            .collect();
        let no_affinity = k8s_openapi::api::core::v1::Affinity::default();
        let affinity = spec.affinity.as_ref().unwrap_or(&no_affinity);
        let terms = |terms: Option<&Vec<k8s_openapi::api::core::v1::PodAffinityTerm>>| {
            terms
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::new(t, &namespace))
                .collect::<Vec<_>>()
        };
        let weighted =
            |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                terms
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        (
                            t.weight,
                            AffinityTerm::new(&t.pod_affinity_term, &namespace),
                        )
                    })
                    .collect::<Vec<_>>()
            };
        let pa = affinity.pod_affinity.as_ref();
        let paa = affinity.pod_anti_affinity.as_ref();
        PodInfo {
            key: pod_key(&pod),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            priority: spec.priority.unwrap_or(0),
            requests: pod_requests(&pod, false),
            non_zero: pod_requests(&pod, true),
            host_ports,
            claims,
            required_affinity: terms(pa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: terms(paa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: weighted(pa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_anti_affinity: weighted(paa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            namespace,
            pod,
        }
    }

    /// Whether the pod has any pod (anti-)affinity term, which other pods' placement reads.
    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }
}

/// A node and what is on it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// The Node; `None` while only pods naming it are known.
    pub node: Option<Arc<Node>>,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// Its taints.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// `status.allocatable`.
    pub allocatable: Resources,
    /// The sum of its pods' requests.
    pub requested: Resources,
    /// The sum of its pods' non-zero requests.
    pub non_zero_requested: Resources,
    /// Its pods, bound or assumed.
    pub pods: HashMap<PodKey, Arc<PodInfo>>,
    /// Host ports in use, counted.
    pub used_ports: HashMap<HostPort, usize>,
    /// Image names it reports, with sizes.
    pub images: HashMap<String, i64>,
    /// How many of its pods' volumes use each claim (`namespace/name`), ephemeral ones aside.
    pub claim_refs: HashMap<String, usize>,
}

impl NodeInfo {
    fn set_node(&mut self, node: Arc<Node>) {
        let spec = node.spec.clone().unwrap_or_default();
        let status = node.status.clone().unwrap_or_default();
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        self.taints = spec.taints.unwrap_or_default();
        self.unschedulable = spec.unschedulable.unwrap_or(false);
        self.allocatable = status
            .allocatable
            .as_ref()
            .map(Resources::from_list)
            .unwrap_or_default();
        self.images = status
            .images
            .iter()
            .flatten()
            .flat_map(|image| {
                let size = image.size_bytes.unwrap_or(0);
                image
                    .names
                    .iter()
                    .flatten()
                    .map(move |name| (normalize_image(name), size))
            })
            .collect();
        self.node = Some(node);
    }

    fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.add(&pod.non_zero);
        for port in &pod.host_ports {
            *self.used_ports.entry(port.clone()).or_default() += 1;
        }
        for claim in pod.claims.iter().filter(|c| !c.ephemeral) {
            *self
                .claim_refs
                .entry(format!("{}/{}", pod.namespace, claim.name))
                .or_default() += 1;
        }
        self.pods.insert(pod.key.clone(), pod);
    }

    fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let pod = self.pods.remove(key)?;
        self.requested.sub(&pod.requests);
        self.non_zero_requested.sub(&pod.non_zero);
        for port in &pod.host_ports {
            if let Some(count) = self.used_ports.get_mut(port) {
                *count -= 1;
                if *count == 0 {
                    self.used_ports.remove(port);
                }
            }
        }
        for claim in pod.claims.iter().filter(|c| !c.ephemeral) {
            let key = format!("{}/{}", pod.namespace, claim.name);
            if let Some(count) = self.claim_refs.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    self.claim_refs.remove(&key);
                }
            }
        }
        Some(pod)
    }

    /// A copy without `victims`, for preemption's dry runs.
    pub fn without(&self, victims: &[PodKey]) -> NodeInfo {
        let mut copy = self.clone();
        for victim in victims {
            copy.remove_pod(victim);
        }
        copy
    }

    /// A copy with `pod` added, for preemption's dry runs.
    pub fn with(&self, pod: Arc<PodInfo>) -> NodeInfo {
        let mut copy = self.clone();
        copy.add_pod(pod);
        copy
    }
}

/// An image name as the kubelet reports it: `busybox` is `docker.io/library/busybox:latest`.
pub fn normalize_image(name: &str) -> String {
    let mut name = name.to_string();
    let last = name.rsplit('/').next().unwrap_or_default();
    if !last.contains(':') && !last.contains('@') {
        name.push_str(":latest");
    }
    let first = name.split('/').next().unwrap_or_default();
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if !has_registry {
        if name.contains('/') {
            name = format!("docker.io/{name}");
        } else {
            name = format!("docker.io/library/{name}");
        }
    }
    name
}

/// Every node and every assigned pod.
#[derive(Debug, Default)]
pub struct Cache {
    /// Nodes by name, sorted so that cycles are deterministic.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Assigned (bound or assumed) pods by key: the node they are on.
    pub assigned: HashMap<PodKey, String>,
    /// Pods assumed on a node, whose binding has not been seen yet.
    pub assumed: HashSet<PodKey>,
    /// Assigned pods with pod (anti-)affinity terms.
    pub with_affinity: HashSet<PodKey>,
    /// How many nodes report each image.
    pub image_nodes: HashMap<String, usize>,
}

impl Cache {
    /// Records a Node (added or updated); whether scheduling-relevant fields changed.
    pub fn apply_node(&mut self, node: Node) -> bool {
        let name = node.metadata.name.clone().unwrap_or_default();
        let info = self.nodes.entry(name.clone()).or_insert_with(|| NodeInfo {
            name,
            ..NodeInfo::default()
        });
        let before = (
            info.node.is_some(),
            info.labels.clone(),
            info.taints.clone(),
            info.unschedulable,
            info.allocatable.clone(),
        );
        for image in info.images.keys() {
            if let Some(count) = self.image_nodes.get_mut(image) {
                *count = count.saturating_sub(1);
            }
        }
        info.set_node(Arc::new(node));
        for image in info.images.keys() {
            *self.image_nodes.entry(image.clone()).or_default() += 1;
        }
        before
            != (
                true,
                info.labels.clone(),
                info.taints.clone(),
                info.unschedulable,
                info.allocatable.clone(),
            )
    }

    /// Forgets a Node; its pods stay counted until they go.
    pub fn delete_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            for image in info.images.keys() {
                if let Some(count) = self.image_nodes.get_mut(image) {
                    *count = count.saturating_sub(1);
                }
            }
            info.node = None;
            info.images.clear();
            if info.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
    }

    /// Adds (or moves) an assigned pod onto `node`.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.remove_pod(&pod.key);
        self.assigned.insert(pod.key.clone(), node.to_string());
        if pod.has_affinity() {
            self.with_affinity.insert(pod.key.clone());
        }
        self.nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeInfo {
                name: node.to_string(),
                ..NodeInfo::default()
            })
            .add_pod(pod);
    }

    /// Removes an assigned pod; the pod it was, if any.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let node = self.assigned.remove(key)?;
        self.with_affinity.remove(key);
        self.assumed.remove(key);
        let info = self.nodes.get_mut(&node)?;
        let pod = info.remove_pod(key);
        if info.node.is_none() && info.pods.is_empty() {
            self.nodes.remove(&node);
        }
        pod
    }

    /// The assigned pod with `key`.
    pub fn pod(&self, key: &str) -> Option<&Arc<PodInfo>> {
        let node = self.assigned.get(key)?;
        self.nodes.get(node)?.pods.get(key)
    }

    /// Nodes that exist (not only named by pods).
    pub fn ready_nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values().filter(|n| n.node.is_some())
    }

    /// How many Nodes exist.
    pub fn node_count(&self) -> usize {
        self.ready_nodes().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_normalized() {
        assert_eq!(
            normalize_image("busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize_image("nginx:1.25"),
            "docker.io/library/nginx:1.25"
        );
        assert_eq!(normalize_image("me/app"), "docker.io/me/app:latest");
        assert_eq!(
            normalize_image("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
    }

    #[test]
    fn aggregates_follow_pods() {
        let mut cache = Cache::default();
        let pod: Pod = match serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}},
                      "ports": [{"containerPort": 80, "hostPort": 8080}]}]},
        })) {
            Ok(pod) => pod,
            Err(error) => panic!("{error}"),
        };
        let info = Arc::new(PodInfo::new(Arc::new(pod)));
        cache.add_pod(Arc::clone(&info), "n");
        cache.add_pod(info, "n");
        let node = &cache.nodes["n"];
        assert_eq!(node.requested.milli_cpu, 1000);
        assert_eq!(node.used_ports.len(), 1);
        assert!(cache.remove_pod("d/p").is_some());
        assert!(!cache.nodes.contains_key("n"));
    }
}

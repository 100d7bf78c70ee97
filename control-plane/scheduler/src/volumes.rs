//! The scheduler's view of storage: PersistentVolumeClaims, PersistentVolumes and
//! StorageClasses mirrored from their watches, with the PV bindings and claim annotations the
//! scheduler has assumed but not yet seen come back (upstream's assume caches), and the
//! helpers of component-helpers' `storage/volume` that the volume filters read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Resource;
use kube::runtime::watcher::{self, Event};

use crate::resources::parse_milli;
use crate::selectors::{Labels, term_matches};

/// The annotation a WaitForFirstConsumer claim gets with the node chosen for provisioning.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The annotation of a volume or claim bound by a controller rather than by its author.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The beta annotation that named a claim's or volume's class before `storageClassName`.
const ANN_BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The provisioner of classes that cannot provision (local volumes).
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

/// Objects of one kind mirrored from a watch, by key.
#[derive(Debug)]
pub struct Mirror<K> {
    /// The objects by key (`namespace/name`, or `name` for cluster-scoped kinds).
    pub items: HashMap<String, Arc<K>>,
    relist: Option<HashSet<String>>,
    /// Whether the first list has been seen.
    pub synced: bool,
}

impl<K> Default for Mirror<K> {
    fn default() -> Self {
        Mirror {
            items: HashMap::new(),
            relist: None,
            synced: false,
        }
    }
}

/// The key of an object: `namespace/name`, or `name` when it has no namespace.
pub fn object_key<K: Resource>(object: &K) -> String {
    let meta = object.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    }
}

impl<K: Resource> Mirror<K> {
    /// Takes in a watch event; the keys of the objects it changed (added, updated, deleted).
    pub fn on_event(&mut self, event: Result<Event<K>, watcher::Error>) -> Vec<String> {
        match event {
            Err(error) => {
                tracing::debug!(%error, "watch failed; retrying");
                Vec::new()
            }
            Ok(Event::Init) => {
                self.relist = Some(HashSet::new());
                Vec::new()
            }
            Ok(Event::InitApply(object)) => {
                let key = object_key(&object);
                if let Some(seen) = self.relist.as_mut() {
                    seen.insert(key.clone());
                }
                self.items.insert(key.clone(), Arc::new(object));
                vec![key]
            }
            Ok(Event::InitDone) => {
                self.synced = true;
                let Some(seen) = self.relist.take() else {
                    return Vec::new();
                };
                let gone: Vec<String> = self
                    .items
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in &gone {
                    self.items.remove(key);
                }
                gone
            }
            Ok(Event::Apply(object)) => {
                let key = object_key(&object);
                self.items.insert(key.clone(), Arc::new(object));
                vec![key]
            }
            Ok(Event::Delete(object)) => {
                let key = object_key(&object);
                self.items.remove(&key);
                vec![key]
            }
        }
    }
}

/// The claims, volumes and classes, with assumed changes laid over them.
#[derive(Debug, Default)]
pub struct Volumes {
    /// Claims by `namespace/name`.
    pub claims: Mirror<PersistentVolumeClaim>,
    /// Volumes by name.
    pub volumes: Mirror<PersistentVolume>,
    /// Classes by name.
    pub classes: Mirror<StorageClass>,
    /// Volumes assumed bound by this scheduler, as they were before (restored on failure).
    assumed_volumes: HashMap<String, Arc<PersistentVolume>>,
    /// Claims assumed annotated with a selected node, as they were before.
    assumed_claims: HashMap<String, Arc<PersistentVolumeClaim>>,
}

impl Volumes {
    /// Whether the three watches have listed once.
    pub fn synced(&self) -> bool {
        self.claims.synced && self.volumes.synced && self.classes.synced
    }

    /// A claim's watch event; whether anything changed.
    pub fn on_claim_event(
        &mut self,
        event: Result<Event<PersistentVolumeClaim>, watcher::Error>,
    ) -> bool {
        let keys = self.claims.on_event(event);
        for key in &keys {
            // The API server's version supersedes what was assumed.
            self.assumed_claims.remove(key);
        }
        !keys.is_empty()
    }

    /// A volume's watch event; whether anything changed.
    pub fn on_volume_event(
        &mut self,
        event: Result<Event<PersistentVolume>, watcher::Error>,
    ) -> bool {
        let keys = self.volumes.on_event(event);
        for key in &keys {
            self.assumed_volumes.remove(key);
        }
        !keys.is_empty()
    }

    /// A class's watch event; whether anything changed.
    pub fn on_class_event(&mut self, event: Result<Event<StorageClass>, watcher::Error>) -> bool {
        !self.classes.on_event(event).is_empty()
    }

    /// The claim `name` in `namespace`.
    pub fn claim(&self, namespace: &str, name: &str) -> Option<&Arc<PersistentVolumeClaim>> {
        self.claims.items.get(&format!("{namespace}/{name}"))
    }

    /// The volume `name`.
    pub fn volume(&self, name: &str) -> Option<&Arc<PersistentVolume>> {
        self.volumes.items.get(name)
    }

    /// The class `name`.
    pub fn class(&self, name: &str) -> Option<&Arc<StorageClass>> {
        self.classes.items.get(name)
    }

    /// The volumes of class `class`, sorted by name so that choices are deterministic.
    pub fn volumes_of_class(&self, class: &str) -> Vec<Arc<PersistentVolume>> {
        let by_name: BTreeMap<&String, &Arc<PersistentVolume>> = self
            .volumes
            .items
            .iter()
            .filter(|(_, v)| volume_class(v) == class)
            .collect();
        by_name.into_values().cloned().collect()
    }

    /// Reserve: records `volume` as bound to `claim` (its claimRef set) until the watch shows
    /// the real one.
    pub fn assume_binding(&mut self, volume: &PersistentVolume, claim: &PersistentVolumeClaim) {
        let key = object_key(volume);
        let mut bound = volume.clone();
        bound.spec.get_or_insert_with(Default::default).claim_ref = Some(claim_ref(claim));
        if let Some(old) = self.volumes.items.insert(key.clone(), Arc::new(bound)) {
            self.assumed_volumes.entry(key).or_insert(old);
        }
    }

    /// Reserve: records `claim` as annotated with `node` for provisioning.
    pub fn assume_selected_node(&mut self, claim: &PersistentVolumeClaim, node: &str) {
        let key = object_key(claim);
        let mut annotated = claim.clone();
        annotated
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ANN_SELECTED_NODE.into(), node.into());
        if let Some(old) = self.claims.items.insert(key.clone(), Arc::new(annotated)) {
            self.assumed_claims.entry(key).or_insert(old);
        }
    }

    /// Unreserve: puts back what was assumed for `volumes` and `claims`, unless the watch has
    /// replaced it since.
    pub fn revert(&mut self, volumes: &[String], claims: &[String]) {
        for key in volumes {
            if let Some(old) = self.assumed_volumes.remove(key) {
                self.volumes.items.insert(key.clone(), old);
            }
        }
        for key in claims {
            if let Some(old) = self.assumed_claims.remove(key) {
                self.claims.items.insert(key.clone(), old);
            }
        }
    }
}

/// The reference a volume bound to `claim` carries.
pub fn claim_ref(claim: &PersistentVolumeClaim) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// A claim's class: `spec.storageClassName`, else the beta annotation, else none (`""`).
pub fn claim_class(claim: &PersistentVolumeClaim) -> String {
    if let Some(class) = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_BETA_CLASS))
    {
        return class.clone();
    }
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

/// A volume's class, read as [`claim_class`] reads a claim's.
pub fn volume_class(volume: &PersistentVolume) -> String {
    if let Some(class) = volume
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_BETA_CLASS))
    {
        return class.clone();
    }
    volume
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default()
}

/// The volume a claim is bound to; `None` while `spec.volumeName` is empty.
///
/// Upstream also wants the PV controller's `pv.kubernetes.io/bind-completed` annotation;
/// Capstan runs no PV controller, so a claim naming its volume counts as bound.
pub fn bound_volume(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Whether claims of `class` wait for their first consumer; a missing class binds at once.
pub fn delays_binding(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

/// Whether a volume's `spec.nodeAffinity` admits a node with `labels` (upstream's
/// CheckNodeAffinity, which matches labels only: a field requirement never matches).
pub fn volume_fits_node(volume: &PersistentVolume, labels: &Labels) -> bool {
    let Some(required) = volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    required
        .node_selector_terms
        .iter()
        .any(|term| term_matches(term, "", labels))
}

/// The node names a local volume is pinned to by `kubernetes.io/hostname In` terms (upstream's
/// GetLocalPersistentVolumeNodeNames); empty when it names none.
pub fn local_volume_nodes(volume: &PersistentVolume) -> HashSet<String> {
    let mut result = HashSet::new();
    let terms = volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    for term in terms {
        let mut nodes: Option<HashSet<String>> = None;
        for requirement in term.match_expressions.iter().flatten() {
            if requirement.key == "kubernetes.io/hostname" && requirement.operator == "In" {
                let values: HashSet<String> =
                    requirement.values.iter().flatten().cloned().collect();
                nodes = Some(match nodes {
                    None => values,
                    Some(nodes) => nodes.intersection(&values).cloned().collect(),
                });
            }
        }
        result.extend(nodes.into_iter().flatten());
    }
    result
}

fn storage_milli(
    quantities: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> i128 {
    quantities
        .and_then(|q| q.get("storage"))
        .and_then(|q| parse_milli(&q.0))
        .unwrap_or(0)
}

/// A claim's requested storage, in thousandths of a byte.
pub fn claim_request(claim: &PersistentVolumeClaim) -> i128 {
    storage_milli(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
}

fn volume_capacity(volume: &PersistentVolume) -> i128 {
    storage_milli(volume.spec.as_ref().and_then(|s| s.capacity.as_ref()))
}

/// Whether `volume` is bound (or pre-bound) to `claim`: its claimRef names it, and its UID
/// when the claimRef has one.
pub fn volume_bound_to(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(reference) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    reference.name == claim.metadata.name
        && reference.namespace == claim.metadata.namespace
        && reference
            .uid
            .as_deref()
            .filter(|u| !u.is_empty())
            .is_none_or(|u| Some(u) == claim.metadata.uid.as_deref())
}

fn access_modes_fit(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let offered = volume
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default();
    claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or_default()
        .iter()
        .all(|mode| offered.contains(mode))
}

fn volume_mode(mode: Option<&String>) -> &str {
    mode.map(String::as_str).unwrap_or("Filesystem")
}

/// Whether a volume nobody has claimed is free to bind. Upstream wants phase `Available`,
/// which the PV controller sets; Capstan has none, so a new volume's `Pending` counts too.
fn available(volume: &PersistentVolume) -> bool {
    let phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
    match phase {
        Some("Available") => true,
        None | Some("Pending") => volume.spec.as_ref().is_none_or(|s| s.claim_ref.is_none()),
        _ => false,
    }
}

/// Upstream's FindMatchingVolume on the scheduler's path: the volume pre-bound to `claim` if
/// it fits the node, else the smallest available one of the claim's class, selector, access
/// modes and volume mode, with room for the request and fitting the node.
pub fn find_matching_volume(
    claim: &PersistentVolumeClaim,
    volumes: &[Arc<PersistentVolume>],
    node_labels: &Labels,
    excluded: &HashSet<String>,
) -> Option<Arc<PersistentVolume>> {
    let requested = claim_request(claim);
    let class = claim_class(claim);
    let spec = claim.spec.as_ref();
    let selector = spec.and_then(|s| s.selector.as_ref());
    let claim_mode = volume_mode(spec.and_then(|s| s.volume_mode.as_ref()));
    let mut smallest: Option<(i128, &Arc<PersistentVolume>)> = None;
    for volume in volumes {
        let name = volume.metadata.name.clone().unwrap_or_default();
        if excluded.contains(&name) {
            continue;
        }
        let volume_spec = volume.spec.as_ref();
        if volume_spec.is_some_and(|s| s.claim_ref.is_some()) && !volume_bound_to(volume, claim) {
            continue;
        }
        let capacity = volume_capacity(volume);
        if capacity < requested
            || volume_mode(volume_spec.and_then(|s| s.volume_mode.as_ref())) != claim_mode
            || volume.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let fits_node = volume_fits_node(volume, node_labels);
        if volume_bound_to(volume, claim) {
            // A pre-bound volume is the claim's or nothing.
            return fits_node.then(|| Arc::clone(volume));
        }
        let labels = volume.metadata.labels.clone().unwrap_or_default();
        if !available(volume)
            || selector.is_some_and(|s| !crate::selectors::selects(s, &labels))
            || volume_class(volume) != class
            || !fits_node
            || !access_modes_fit(claim, volume)
        {
            continue;
        }
        if smallest.is_none_or(|(size, _)| size > capacity) {
            smallest = Some((capacity, volume));
        }
    }
    smallest.map(|(_, volume)| Arc::clone(volume))
}

/// Whether a node with `labels` meets a class's `allowedTopologies` (none: every node).
pub fn class_allows_node(class: &StorageClass, labels: &Labels) -> bool {
    let terms = class.allowed_topologies.as_deref().unwrap_or_default();
    terms.is_empty()
        || terms.iter().any(|term| {
            term.match_label_expressions.iter().flatten().all(|e| {
                labels
                    .get(&e.key)
                    .is_some_and(|value| e.values.contains(value))
            })
        })
}

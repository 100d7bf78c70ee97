//! What each node may reach, as the Node authorizer's graph holds it upstream: the pods bound
//! to a node, and for each pod the Secrets, ConfigMaps, PersistentVolumeClaims and service
//! account it refers to; a claim leads on to its bound PersistentVolume. Kept in memory from
//! store watches of pods and claims, so that authorizing reads no storage.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use capstan_store::{KeyValue, ListOptions, Revision, Store, StoreError, WatchEvent};
use futures::StreamExt;
use serde_json::Value;

const PODS: &str = "/registry/pods/";
const CLAIMS: &str = "/registry/persistentvolumeclaims/";

/// A kind of object a pod leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reached {
    /// A Secret of the pod's namespace.
    Secret,
    /// A ConfigMap of the pod's namespace.
    ConfigMap,
    /// A PersistentVolumeClaim of the pod's namespace.
    Claim,
    /// The pod's ServiceAccount.
    ServiceAccount,
}

/// One pod as the graph keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PodEdges {
    node: String,
    namespace: String,
    refs: BTreeSet<(Reached, String)>,
}

#[derive(Debug, Default)]
struct Index {
    /// Pods by storage key.
    pods: HashMap<String, PodEdges>,
    /// Pod keys by node name.
    by_node: HashMap<String, BTreeSet<String>>,
    /// The volume each claim is bound to, by (namespace, claim).
    claim_volumes: HashMap<(String, String), String>,
}

impl Index {
    fn put(&mut self, kv: &KeyValue) {
        let Ok(object) = serde_json::from_slice::<Value>(&kv.value) else {
            self.remove(&kv.key);
            return;
        };
        if let Some(rest) = kv.key.strip_prefix(CLAIMS) {
            let Some((namespace, name)) = rest.split_once('/') else {
                return;
            };
            let key = (namespace.to_string(), name.to_string());
            match object
                .pointer("/spec/volumeName")
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
            {
                Some(volume) => {
                    self.claim_volumes.insert(key, volume.to_string());
                }
                None => {
                    self.claim_volumes.remove(&key);
                }
            }
            return;
        }
        self.remove_pod(&kv.key);
        if let Some(edges) = pod_edges(&object) {
            self.by_node
                .entry(edges.node.clone())
                .or_default()
                .insert(kv.key.clone());
            self.pods.insert(kv.key.clone(), edges);
        }
    }

    fn remove(&mut self, key: &str) {
        if let Some(rest) = key.strip_prefix(CLAIMS) {
            if let Some((namespace, name)) = rest.split_once('/') {
                self.claim_volumes
                    .remove(&(namespace.to_string(), name.to_string()));
            }
            return;
        }
        self.remove_pod(key);
    }

    fn remove_pod(&mut self, key: &str) {
        if let Some(old) = self.pods.remove(key)
            && let Some(keys) = self.by_node.get_mut(&old.node)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.by_node.remove(&old.node);
            }
        }
    }

    fn pods_of<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a PodEdges> + 'a {
        self.by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|key| self.pods.get(key))
    }

    fn reaches(&self, node: &str, kind: Reached, namespace: &str, name: &str) -> bool {
        self.pods_of(node)
            .any(|pod| pod.namespace == namespace && pod.refs.contains(&(kind, name.to_string())))
    }

    fn reaches_volume(&self, node: &str, volume: &str) -> bool {
        self.pods_of(node).any(|pod| {
            pod.refs.iter().any(|(kind, claim)| {
                *kind == Reached::Claim
                    && self
                        .claim_volumes
                        .get(&(pod.namespace.clone(), claim.clone()))
                        .is_some_and(|v| v == volume)
            })
        })
    }
}

/// The edges of a pod bound to a node; `None` for an unbound pod.
fn pod_edges(pod: &Value) -> Option<PodEdges> {
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())?;
    let namespace = pod.pointer("/metadata/namespace")?.as_str()?.to_string();
    Some(PodEdges {
        node: node.to_string(),
        namespace,
        refs: references(pod),
    })
}

/// What a pod refers to: its service account, and the Secrets, ConfigMaps and claims of its
/// volumes, image pull secrets and containers' env (upstream's `VisitPodSecretNames` and
/// kin).
pub fn references(pod: &Value) -> BTreeSet<(Reached, String)> {
    let mut refs = BTreeSet::new();
    let Some(spec) = pod.get("spec") else {
        return refs;
    };
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut add = |kind: Reached, name: Option<&Value>| {
        if let Some(name) = name.and_then(Value::as_str).filter(|n| !n.is_empty()) {
            refs.insert((kind, name.to_string()));
        }
    };
    add(
        Reached::ServiceAccount,
        spec.get("serviceAccountName")
            .or_else(|| spec.get("serviceAccount")),
    );
    for secret in array(spec.get("imagePullSecrets")) {
        add(Reached::Secret, secret.get("name"));
    }
    for volume in array(spec.get("volumes")) {
        add(Reached::Secret, volume.pointer("/secret/secretName"));
        add(Reached::ConfigMap, volume.pointer("/configMap/name"));
        add(
            Reached::Claim,
            volume.pointer("/persistentVolumeClaim/claimName"),
        );
        if volume.get("ephemeral").is_some()
            && let Some(volume_name) = volume.get("name").and_then(Value::as_str)
        {
            // The claim an ephemeral volume makes is named `<pod>-<volume>`.
            let claim = Value::String(format!("{pod_name}-{volume_name}"));
            add(Reached::Claim, Some(&claim));
        }
        for source in array(volume.pointer("/projected/sources")) {
            add(Reached::Secret, source.pointer("/secret/name"));
            add(Reached::ConfigMap, source.pointer("/configMap/name"));
        }
        // The volume plugins that take a secret for their own credentials.
        for plugin in [
            "/csi/nodePublishSecretRef/name",
            "/cephfs/secretRef/name",
            "/rbd/secretRef/name",
            "/iscsi/secretRef/name",
            "/flexVolume/secretRef/name",
            "/azureFile/secretName",
            "/scaleIO/secretRef/name",
            "/storageos/secretRef/name",
            "/cinder/secretRef/name",
        ] {
            add(Reached::Secret, volume.pointer(plugin));
        }
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for container in array(spec.get(list)) {
            for env in array(container.get("env")) {
                add(Reached::Secret, env.pointer("/valueFrom/secretKeyRef/name"));
                add(
                    Reached::ConfigMap,
                    env.pointer("/valueFrom/configMapKeyRef/name"),
                );
            }
            for from in array(container.get("envFrom")) {
                add(Reached::Secret, from.pointer("/secretRef/name"));
                add(Reached::ConfigMap, from.pointer("/configMapRef/name"));
            }
        }
    }
    refs
}

fn array(value: Option<&Value>) -> impl Iterator<Item = &Value> {
    value.and_then(Value::as_array).into_iter().flatten()
}

/// The shared graph.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    index: Arc<RwLock<Index>>,
}

impl Graph {
    fn read<T>(&self, f: impl FnOnce(&Index) -> T) -> T {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        f(&index)
    }

    fn write(&self, f: impl FnOnce(&mut Index)) {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        f(&mut index);
    }

    /// Whether a pod bound to `node` refers to the `kind` object `namespace`/`name`.
    pub fn reaches(&self, node: &str, kind: Reached, namespace: &str, name: &str) -> bool {
        self.read(|index| index.reaches(node, kind, namespace, name))
    }

    /// Whether a pod bound to `node` uses a claim bound to the PersistentVolume `volume`.
    pub fn reaches_volume(&self, node: &str, volume: &str) -> bool {
        self.read(|index| index.reaches_volume(node, volume))
    }

    /// The node a pod is bound to, if the graph knows the pod.
    pub fn node_of(&self, namespace: &str, pod: &str) -> Option<String> {
        let key = format!("{PODS}{namespace}/{pod}");
        self.read(|index| index.pods.get(&key).map(|p| p.node.clone()))
    }

    /// Lists pods and claims at one revision into the graph; returns that revision.
    pub async fn load(&self, store: &dyn Store) -> Result<Revision, StoreError> {
        let revision = store.revision().await?;
        let mut index = Index::default();
        for prefix in [PODS, CLAIMS] {
            let options = ListOptions {
                revision: Some(revision),
                ..ListOptions::default()
            };
            for kv in store.list(prefix, options).await?.items {
                index.put(&kv);
            }
        }
        self.write(|i| *i = index);
        Ok(revision)
    }

    /// Follows the store from `revision` on, forever, relisting after a failed watch.
    pub async fn follow(self, store: Arc<dyn Store>, mut revision: Revision) {
        loop {
            match self.watch(&*store, &mut revision).await {
                Ok(()) => tracing::debug!("node graph watch ended; resuming"),
                Err(error) => tracing::warn!(%error, "node graph watch failed; relisting"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            match self.load(&*store).await {
                Ok(listed) => revision = listed,
                Err(error) => tracing::warn!(%error, "node graph relist failed; retrying"),
            }
        }
    }

    async fn watch(&self, store: &dyn Store, revision: &mut Revision) -> Result<(), StoreError> {
        let streams = vec![
            store.watch(PODS, *revision).await?,
            store.watch(CLAIMS, *revision).await?,
        ];
        let mut events = futures::stream::select_all(streams);
        while let Some(event) = events.next().await {
            let event = event?;
            *revision = (*revision).max(event.revision());
            match &event {
                WatchEvent::Put { kv, .. } => self.write(|i| i.put(kv)),
                WatchEvent::Delete { prev, .. } => self.write(|i| i.remove(&prev.key)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: serde_json::to_vec(&value).unwrap(),
            create_revision: 1,
            mod_revision: 1,
        }
    }

    #[test]
    fn a_bound_pod_leads_to_what_it_refers_to_and_nothing_else() {
        let mut index = Index::default();
        index.put(&kv(
            "/registry/pods/ns/web",
            json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": {
                "nodeName": "n1", "serviceAccountName": "sa",
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "a", "secret": {"secretName": "vol-secret"}},
                    {"name": "b", "projected": {"sources": [{"configMap": {"name": "proj-cm"}}]}},
                    {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "d", "ephemeral": {}}
                ],
                "containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "env-secret"}}],
                    "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}]}]
            }}),
        ));
        index.put(&kv(
            "/registry/persistentvolumeclaims/ns/data",
            json!({"spec": {"volumeName": "pv-1"}}),
        ));
        for (kind, name) in [
            (Reached::ServiceAccount, "sa"),
            (Reached::Secret, "pull"),
            (Reached::Secret, "vol-secret"),
            (Reached::Secret, "env-secret"),
            (Reached::ConfigMap, "proj-cm"),
            (Reached::ConfigMap, "env-cm"),
            (Reached::Claim, "data"),
            (Reached::Claim, "web-d"),
        ] {
            assert!(index.reaches("n1", kind, "ns", name), "{kind:?} {name}");
            assert!(!index.reaches("n2", kind, "ns", name), "n2 reaches {name}");
            assert!(!index.reaches("n1", kind, "other", name), "wrong namespace");
        }
        assert!(!index.reaches("n1", Reached::Secret, "ns", "unrelated"));
        assert!(index.reaches_volume("n1", "pv-1"));
        assert!(!index.reaches_volume("n2", "pv-1"));
        // Moved off the node (deleted), the pod leads nowhere.
        index.remove("/registry/pods/ns/web");
        assert!(!index.reaches("n1", Reached::Secret, "ns", "pull"));
        assert!(index.by_node.is_empty());
    }

    #[test]
    fn an_unbound_pod_leads_nowhere() {
        let mut index = Index::default();
        index.put(&kv(
            "/registry/pods/ns/p",
            json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"imagePullSecrets": [{"name": "s"}]}}),
        ));
        assert!(index.pods.is_empty());
    }
}

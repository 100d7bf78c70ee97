//! The ownership graph: every object the monitors see, by UID, with its owners and the reverse
//! index from an owner's UID to its dependents (also for owners never seen). Changes to it
//! say which objects the workers must look at.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::DynamicObject;

/// The finalizer of foreground deletion: the owner waits for its blocking dependents.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of orphaning deletion: dependents lose their references to the owner.
pub const ORPHAN: &str = "orphan";

/// One object as the graph knows it.
#[derive(Debug, Clone)]
pub struct Node {
    /// Which monitor (served resource key) saw it.
    pub resource: String,
    /// Its namespace, if namespaced.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Its owners.
    pub owners: Vec<OwnerReference>,
    /// deletionTimestamp is set.
    pub deleting: bool,
    /// Being deleted with the `foregroundDeletion` finalizer.
    pub deleting_dependents: bool,
    /// Being deleted with the `orphan` finalizer.
    pub orphaning: bool,
}

impl Node {
    /// The node of `object` seen by monitor `resource`; `None` without a UID.
    pub fn of(resource: &str, object: &DynamicObject) -> Option<(String, Node)> {
        let meta = &object.metadata;
        let uid = meta.uid.clone()?;
        let deleting = meta.deletion_timestamp.is_some();
        let has = |f: &str| meta.finalizers.iter().flatten().any(|x| x == f);
        Some((
            uid,
            Node {
                resource: resource.to_string(),
                namespace: meta.namespace.clone(),
                name: meta.name.clone().unwrap_or_default(),
                owners: meta.owner_references.clone().unwrap_or_default(),
                deleting,
                deleting_dependents: deleting && has(FOREGROUND),
                orphaning: deleting && has(ORPHAN),
            },
        ))
    }

    /// Whether its reference to `owner` blocks the owner's foreground deletion.
    pub fn blocks(&self, owner: &str) -> bool {
        self.owners
            .iter()
            .any(|r| r.uid == owner && r.block_owner_deletion == Some(true))
    }
}

/// What a worker is to do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Job {
    /// Decide whether the object goes (owners gone), or finish its foreground deletion.
    Attempt(String),
    /// Remove references to the orphaning owner from its dependents, then its finalizer.
    Orphan(String),
}

/// The graph.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// The node of `uid`.
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// The dependents of `owner` the graph knows, with their UIDs.
    pub fn dependents(&self, owner: &str) -> Vec<(String, Node)> {
        self.dependents
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.nodes.get(uid).map(|n| (uid.clone(), n.clone())))
            .collect()
    }

    /// Every node that needs a look after the first full listing: dependents of owners not
    /// in the graph, and owners in foreground or orphaning deletion.
    pub fn initial_jobs(&self) -> Vec<Job> {
        let mut jobs = Vec::new();
        for (uid, node) in &self.nodes {
            if node.owners.iter().any(|r| !self.nodes.contains_key(&r.uid))
                || node.deleting_dependents
            {
                jobs.push(Job::Attempt(uid.clone()));
            }
            if node.orphaning {
                jobs.push(Job::Orphan(uid.clone()));
            }
        }
        jobs
    }

    /// Records `node` (added or changed); the jobs that follow.
    pub fn upsert(&mut self, uid: String, node: Node) -> Vec<Job> {
        let mut jobs = Vec::new();
        let old = self.nodes.remove(&uid);
        let old_owners: Vec<OwnerReference> =
            old.as_ref().map(|o| o.owners.clone()).unwrap_or_default();
        for gone in old_owners
            .iter()
            .filter(|r| !node.owners.iter().any(|n| n.uid == r.uid))
        {
            if let Some(set) = self.dependents.get_mut(&gone.uid) {
                set.remove(&uid);
                if set.is_empty() {
                    self.dependents.remove(&gone.uid);
                }
            }
        }
        for owner in &node.owners {
            self.dependents
                .entry(owner.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        // An owner waiting in foreground deletion may be unblocked by a changed reference.
        for owner in old_owners.iter().chain(node.owners.iter()) {
            let was = old.as_ref().is_some_and(|o| o.blocks(&owner.uid));
            if was && !node.blocks(&owner.uid) && self.is_deleting_dependents(&owner.uid) {
                jobs.push(Job::Attempt(owner.uid.clone()));
            }
        }
        let starts_foreground =
            node.deleting_dependents && !old.as_ref().is_some_and(|o| o.deleting_dependents);
        if starts_foreground {
            for dependent in self.dependents.get(&uid).into_iter().flatten() {
                jobs.push(Job::Attempt(dependent.clone()));
            }
            jobs.push(Job::Attempt(uid.clone()));
        }
        if node.orphaning {
            jobs.push(Job::Orphan(uid.clone()));
        }
        // A reference to an owner never seen: the owner may be gone, a worker checks.
        if node.owners.iter().any(|r| !self.nodes.contains_key(&r.uid)) {
            jobs.push(Job::Attempt(uid.clone()));
        }
        self.nodes.insert(uid, node);
        jobs
    }

    /// Forgets `uid` (deleted); its dependents and its waiting owners get a look.
    pub fn remove(&mut self, uid: &str) -> Vec<Job> {
        let Some(node) = self.nodes.remove(uid) else {
            return Vec::new();
        };
        let mut jobs: Vec<Job> = self
            .dependents
            .get(uid)
            .into_iter()
            .flatten()
            .map(|d| Job::Attempt(d.clone()))
            .collect();
        for owner in &node.owners {
            if let Some(set) = self.dependents.get_mut(&owner.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&owner.uid);
                }
            }
            if self.is_deleting_dependents(&owner.uid) {
                jobs.push(Job::Attempt(owner.uid.clone()));
            }
        }
        jobs
    }

    /// Forgets every node of monitor `resource` not in `alive` (a relist's result).
    pub fn retain(&mut self, resource: &str, alive: &HashSet<String>) -> Vec<Job> {
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|(uid, n)| n.resource == resource && !alive.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        gone.iter().flat_map(|uid| self.remove(uid)).collect()
    }

    fn is_deleting_dependents(&self, uid: &str) -> bool {
        self.nodes.get(uid).is_some_and(|n| n.deleting_dependents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: uid.into(),
            uid: uid.into(),
            block_owner_deletion: Some(block),
            controller: None,
        }
    }

    fn node(owners: Vec<OwnerReference>) -> Node {
        Node {
            resource: "/v1/configmaps".into(),
            namespace: Some("default".into()),
            name: "x".into(),
            owners,
            deleting: false,
            deleting_dependents: false,
            orphaning: false,
        }
    }

    #[test]
    fn a_deleted_owner_sends_its_dependents_to_the_workers() {
        let mut graph = Graph::default();
        graph.upsert("owner".into(), node(vec![]));
        let jobs = graph.upsert("dep".into(), node(vec![reference("owner", false)]));
        assert!(jobs.is_empty(), "the owner is known: {jobs:?}");
        assert_eq!(graph.remove("owner"), vec![Job::Attempt("dep".into())]);
    }

    #[test]
    fn foreground_deletion_looks_at_dependents_and_the_owner_again_when_one_goes() {
        let mut graph = Graph::default();
        graph.upsert("owner".into(), node(vec![]));
        graph.upsert("dep".into(), node(vec![reference("owner", true)]));
        let mut owner = node(vec![]);
        owner.deleting = true;
        owner.deleting_dependents = true;
        let jobs = graph.upsert("owner".into(), owner);
        assert!(jobs.contains(&Job::Attempt("dep".into())), "{jobs:?}");
        assert!(jobs.contains(&Job::Attempt("owner".into())), "{jobs:?}");
        assert_eq!(graph.remove("dep"), vec![Job::Attempt("owner".into())]);
    }

    #[test]
    fn a_reference_to_an_unseen_owner_is_checked() {
        let mut graph = Graph::default();
        let jobs = graph.upsert("dep".into(), node(vec![reference("ghost", false)]));
        assert_eq!(jobs, vec![Job::Attempt("dep".into())]);
        assert_eq!(graph.initial_jobs(), vec![Job::Attempt("dep".into())]);
    }
}

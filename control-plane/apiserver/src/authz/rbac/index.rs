//! The RBAC objects in memory: Roles, ClusterRoles, RoleBindings and ClusterRoleBindings, listed
//! once and kept current by store watches, so that authorizing a request reads no storage (as
//! upstream's RBAC authorizer reads informer caches). Like those caches it is a moment behind
//! the store: a binding just created applies once its watch event arrived.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use capstan_store::{KeyValue, ListOptions, Revision, Store, StoreError, WatchEvent};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Notify;

use super::rules::PolicyRule;

/// The group of the RBAC kinds.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// The storage prefixes of the four kinds, as the kind table lays them out.
const ROLES: &str = "/registry/roles.rbac.authorization.k8s.io/";
const CLUSTER_ROLES: &str = "/registry/clusterroles.rbac.authorization.k8s.io/";
const ROLE_BINDINGS: &str = "/registry/rolebindings.rbac.authorization.k8s.io/";
const CLUSTER_ROLE_BINDINGS: &str = "/registry/clusterrolebindings.rbac.authorization.k8s.io/";
const PREFIXES: [&str; 4] = [ROLES, CLUSTER_ROLES, ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS];

/// A subject of a binding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount`.
    #[serde(default)]
    pub kind: String,
    /// The name.
    #[serde(default)]
    pub name: String,
    /// The ServiceAccount's namespace (the binding's when empty).
    #[serde(default)]
    pub namespace: String,
}

/// What a binding grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RoleRef {
    /// `Role` or `ClusterRole`.
    #[serde(default)]
    pub kind: String,
    /// The role's name.
    #[serde(default)]
    pub name: String,
}

/// A RoleBinding or ClusterRoleBinding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// The binding's name.
    pub name: String,
    /// The namespace; empty for a ClusterRoleBinding.
    pub namespace: String,
    /// The role granted.
    pub role_ref: RoleRef,
    /// To whom.
    pub subjects: Vec<Subject>,
    /// The revision it was last changed at.
    pub revision: i64,
}

/// A Role or ClusterRole, with what aggregation needs of it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleEntry {
    /// The rules.
    pub rules: Vec<PolicyRule>,
    /// The labels (aggregation selects by them).
    pub labels: BTreeMap<String, String>,
    /// The `aggregationRule.clusterRoleSelectors`, when the role aggregates others.
    pub selectors: Option<Vec<Value>>,
    /// The object as stored and the revision it was changed at, for aggregation's updates.
    pub stored: KeyValue,
}

/// Everything RBAC policy holds at one moment.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Roles by (namespace, name).
    pub roles: BTreeMap<(String, String), RoleEntry>,
    /// ClusterRoles by name.
    pub cluster_roles: BTreeMap<String, RoleEntry>,
    /// RoleBindings by (namespace, name).
    pub role_bindings: BTreeMap<(String, String), Binding>,
    /// ClusterRoleBindings by name.
    pub cluster_role_bindings: BTreeMap<String, Binding>,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleObject {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    rules: Option<Vec<PolicyRule>>,
    #[serde(default)]
    aggregation_rule: Option<AggregationRule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AggregationRule {
    #[serde(default)]
    cluster_role_selectors: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BindingObject {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    subjects: Option<Vec<Subject>>,
    #[serde(default)]
    role_ref: RoleRef,
}

impl Policy {
    /// Applies a watch event, unless the index already holds a newer state of the key (after a
    /// relist, the watch may still deliver older events).
    fn apply(&mut self, event: &WatchEvent) {
        let held = self.revision_of(event.key());
        match event {
            WatchEvent::Put { kv, .. } if held.is_none_or(|h| h < kv.mod_revision) => self.put(kv),
            WatchEvent::Delete { prev, revision } if held.is_some_and(|h| h < *revision) => {
                self.remove(&prev.key)
            }
            _ => {}
        }
    }

    fn revision_of(&self, key: &str) -> Option<i64> {
        let (prefix, rest) = PREFIXES
            .iter()
            .find_map(|p| key.strip_prefix(p).map(|rest| (*p, rest)))?;
        let pair = || {
            rest.split_once('/')
                .map(|(ns, name)| (ns.to_string(), name.to_string()))
        };
        match prefix {
            ROLES => self.roles.get(&pair()?).map(|r| r.stored.mod_revision),
            ROLE_BINDINGS => self.role_bindings.get(&pair()?).map(|b| b.revision),
            CLUSTER_ROLES => self.cluster_roles.get(rest).map(|r| r.stored.mod_revision),
            _ => self.cluster_role_bindings.get(rest).map(|b| b.revision),
        }
    }

    fn put(&mut self, kv: &KeyValue) {
        let parsed = if kv.key.starts_with(ROLES) || kv.key.starts_with(CLUSTER_ROLES) {
            serde_json::from_slice::<RoleObject>(&kv.value).map(|role| {
                let entry = RoleEntry {
                    rules: role.rules.unwrap_or_default(),
                    labels: role.metadata.labels.unwrap_or_default(),
                    selectors: role
                        .aggregation_rule
                        .map(|a| a.cluster_role_selectors.unwrap_or_default()),
                    stored: kv.clone(),
                };
                if kv.key.starts_with(ROLES) {
                    self.roles
                        .insert((role.metadata.namespace, role.metadata.name), entry);
                } else {
                    self.cluster_roles.insert(role.metadata.name, entry);
                }
            })
        } else {
            serde_json::from_slice::<BindingObject>(&kv.value).map(|object| {
                let binding = Binding {
                    name: object.metadata.name,
                    namespace: object.metadata.namespace,
                    role_ref: object.role_ref,
                    subjects: object.subjects.unwrap_or_default(),
                    revision: kv.mod_revision,
                };
                if kv.key.starts_with(ROLE_BINDINGS) {
                    self.role_bindings
                        .insert((binding.namespace.clone(), binding.name.clone()), binding);
                } else {
                    self.cluster_role_bindings
                        .insert(binding.name.clone(), binding);
                }
            })
        };
        if let Err(error) = parsed {
            // A stored object RBAC cannot read grants nothing.
            tracing::warn!(key = %kv.key, %error, "RBAC object not understood; ignored");
            self.remove(&kv.key);
        }
    }

    fn remove(&mut self, key: &str) {
        let Some((prefix, rest)) = PREFIXES
            .iter()
            .find_map(|p| key.strip_prefix(p).map(|rest| (*p, rest)))
        else {
            return;
        };
        let pair = || {
            rest.split_once('/')
                .map(|(ns, name)| (ns.to_string(), name.to_string()))
        };
        match prefix {
            ROLES => {
                if let Some(pair) = pair() {
                    self.roles.remove(&pair);
                }
            }
            ROLE_BINDINGS => {
                if let Some(pair) = pair() {
                    self.role_bindings.remove(&pair);
                }
            }
            CLUSTER_ROLES => {
                self.cluster_roles.remove(rest);
            }
            _ => {
                self.cluster_role_bindings.remove(rest);
            }
        }
    }
}

/// The shared, watched policy.
#[derive(Clone, Default)]
pub struct Index {
    policy: Arc<RwLock<Policy>>,
    /// Told whenever ClusterRoles changed, for aggregation.
    pub(crate) cluster_roles_changed: Arc<Notify>,
}

impl Index {
    /// Reads the policy under a lock held for the closure only.
    pub fn read<T>(&self, f: impl FnOnce(&Policy) -> T) -> T {
        let policy = self.policy.read().unwrap_or_else(|p| p.into_inner());
        f(&policy)
    }

    fn write(&self, f: impl FnOnce(&mut Policy)) {
        let mut policy = self.policy.write().unwrap_or_else(|p| p.into_inner());
        f(&mut policy);
    }

    /// Lists the four kinds at one revision into the index; returns that revision.
    pub async fn load(&self, store: &dyn Store) -> Result<Revision, StoreError> {
        let revision = store.revision().await?;
        let mut policy = Policy::default();
        for prefix in PREFIXES {
            let options = ListOptions {
                revision: Some(revision),
                ..ListOptions::default()
            };
            for kv in store.list(prefix, options).await?.items {
                policy.put(&kv);
            }
        }
        self.write(|p| *p = policy);
        self.cluster_roles_changed.notify_one();
        Ok(revision)
    }

    /// Follows the store from `revision` on, forever: relists when a watch fails (compacted,
    /// store gone), after a pause.
    pub async fn follow(self, store: Arc<dyn Store>, mut revision: Revision) {
        loop {
            match self.watch(&*store, &mut revision).await {
                Ok(()) => tracing::debug!("RBAC watch ended; resuming"),
                Err(error) => tracing::warn!(%error, "RBAC watch failed; relisting"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            match self.load(&*store).await {
                Ok(listed) => revision = listed,
                Err(error) => tracing::warn!(%error, "RBAC relist failed; retrying"),
            }
        }
    }

    async fn watch(&self, store: &dyn Store, revision: &mut Revision) -> Result<(), StoreError> {
        let mut streams = Vec::new();
        for prefix in PREFIXES {
            streams.push(store.watch(prefix, *revision).await?);
        }
        let mut events = futures::stream::select_all(streams);
        while let Some(event) = events.next().await {
            let event = event?;
            *revision = (*revision).max(event.revision());
            self.write(|p| p.apply(&event));
            if event.key().starts_with(CLUSTER_ROLES) {
                self.cluster_roles_changed.notify_one();
            }
        }
        Ok(())
    }
}

/// The storage key of a ClusterRole.
pub fn cluster_role_key(name: &str) -> String {
    format!("{CLUSTER_ROLES}{name}")
}

/// The storage key of a ClusterRoleBinding.
pub fn cluster_role_binding_key(name: &str) -> String {
    format!("{CLUSTER_ROLE_BINDINGS}{name}")
}

//! The Node authorizer (`--authorization-mode=Node`), as kube-apiserver's: a node's user
//! (`system:node:<name>` in `system:nodes`) may read only the Secrets, ConfigMaps,
//! PersistentVolumeClaims and PersistentVolumes its pods use, create tokens only for its pods'
//! service accounts, and touch only its own Lease; everything else it may do is the static
//! `system:node` rules. It never denies, so RBAC may still allow. Which pods are a node's
//! comes from the [`graph`]; NodeRestriction admission limits the writes further.

pub mod graph;

use std::sync::Arc;

use capstan_store::Store;

use super::Decision;
use super::attributes::Attributes;
use super::rbac::rules::PolicyRule;
use crate::server::RequestUser;
use graph::{Graph, Reached};

/// The group every node's user is in.
pub const NODES_GROUP: &str = "system:nodes";
/// The prefix of a node's user name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// Where node Leases live.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node a user is, upstream's `NodeIdentity`: `Some(name)` for `system:node:<name>` in
/// `system:nodes` (the name may be empty), `None` for every other user.
pub fn node_identity(user: &RequestUser) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    user.groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

/// Aborts the graph's watch when the authorizer goes away.
struct Follow(tokio::task::JoinHandle<()>);

impl Drop for Follow {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The Node authorizer over its watched graph.
pub struct NodeAuthorizer {
    graph: Graph,
    rules: Vec<PolicyRule>,
    _follow: Follow,
}

impl std::fmt::Debug for NodeAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeAuthorizer")
    }
}

impl NodeAuthorizer {
    /// Loads the graph from `store` and keeps it current.
    pub async fn start(store: Arc<dyn Store>) -> Result<NodeAuthorizer, capstan_store::StoreError> {
        let graph = Graph::default();
        let revision = graph.load(&*store).await?;
        let follow = tokio::spawn(graph.clone().follow(store, revision));
        Ok(NodeAuthorizer {
            graph,
            rules: node_rules(),
            _follow: Follow(follow),
        })
    }

    /// The graph, for NodeRestriction.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The decision on `attributes` for `user`, with the reason for not allowing.
    pub fn authorize(&self, user: &RequestUser, attributes: &Attributes) -> (Decision, String) {
        let Some(node) = node_identity(user) else {
            return (Decision::NoOpinion, String::new());
        };
        if node.is_empty() {
            return no(format!("unknown node for user {:?}", user.name));
        }
        if attributes.resource_request {
            match (attributes.api_group.as_str(), attributes.resource.as_str()) {
                ("", "secrets") => return self.read_namespaced(node, Reached::Secret, attributes),
                ("", "configmaps") => {
                    return self.read_namespaced(node, Reached::ConfigMap, attributes);
                }
                ("", "persistentvolumeclaims") if attributes.subresource.is_empty() => {
                    return self.get(node, attributes, |graph, a| {
                        graph.reaches(node, Reached::Claim, &a.namespace, &a.name)
                    });
                }
                ("", "persistentvolumes") => {
                    return self.get(node, attributes, |graph, a| {
                        graph.reaches_volume(node, &a.name)
                    });
                }
                ("", "serviceaccounts") => return self.create_token(node, attributes),
                ("coordination.k8s.io", "leases") => return lease(node, attributes),
                _ => {}
            }
        }
        match self.rules.iter().any(|rule| rule.allows(attributes)) {
            true => (Decision::Allow, String::new()),
            false => (Decision::NoOpinion, String::new()),
        }
    }

    fn read_namespaced(&self, node: &str, kind: Reached, a: &Attributes) -> (Decision, String) {
        if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
            return no("can only read resources of this type".into());
        }
        if !a.subresource.is_empty() {
            return no("cannot read subresource".into());
        }
        if a.namespace.is_empty() {
            return no("can only read namespaced object of this type".into());
        }
        self.related(
            node,
            a,
            self.graph.reaches(node, kind, &a.namespace, &a.name),
        )
    }

    fn get(
        &self,
        node: &str,
        a: &Attributes,
        reaches: impl Fn(&Graph, &Attributes) -> bool,
    ) -> (Decision, String) {
        if a.verb != "get" {
            return no("can only get individual resources of this type".into());
        }
        if !a.subresource.is_empty() {
            return no("cannot get subresource".into());
        }
        self.related(node, a, reaches(&self.graph, a))
    }

    fn create_token(&self, node: &str, a: &Attributes) -> (Decision, String) {
        if a.verb != "create" || a.name.is_empty() {
            return no("can only create tokens for individual service accounts".into());
        }
        if a.subresource != "token" {
            return no("can only create token subresource of serviceaccount".into());
        }
        let reaches = self
            .graph
            .reaches(node, Reached::ServiceAccount, &a.namespace, &a.name);
        self.related(node, a, reaches)
    }

    fn related(&self, node: &str, a: &Attributes, reaches: bool) -> (Decision, String) {
        if a.name.is_empty() {
            return no("No Object name found".into());
        }
        match reaches {
            true => (Decision::Allow, String::new()),
            false => no(format!(
                "no relationship found between node '{node}' and this object"
            )),
        }
    }
}

fn no(reason: String) -> (Decision, String) {
    (Decision::NoOpinion, reason)
}

/// A node's own Lease only.
fn lease(node: &str, a: &Attributes) -> (Decision, String) {
    if !matches!(
        a.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return no("can only get, create, update, patch, or delete a node lease".into());
    }
    if a.namespace != LEASE_NAMESPACE {
        return no(format!(
            "can only access leases in the {LEASE_NAMESPACE} namespace"
        ));
    }
    if !a.subresource.is_empty() {
        return no("cannot access subresource".into());
    }
    if a.verb != "create" && a.name != node {
        return no("can only access node lease with the same name as the requesting node".into());
    }
    (Decision::Allow, String::new())
}

/// The bootstrap `system:node` ClusterRole's rules, which upstream's Node authorizer holds as
/// its static node rules.
fn node_rules() -> Vec<PolicyRule> {
    super::rbac::policy::cluster_roles()
        .into_iter()
        .find(|role| role.name == "system:node")
        .map(|role| role.rules)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn node_user(name: &str) -> RequestUser {
        RequestUser {
            name: format!("system:node:{name}"),
            uid: None,
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
        }
    }

    #[test]
    fn only_node_users_are_nodes() {
        assert_eq!(node_identity(&node_user("n1")), Some("n1"));
        let mut outsider = node_user("n1");
        outsider.groups = vec!["system:authenticated".into()];
        assert_eq!(node_identity(&outsider), None);
        let mut renamed = node_user("n1");
        renamed.name = "alice".into();
        assert_eq!(node_identity(&renamed), None);
    }

    #[test]
    fn leases_are_the_nodes_own() {
        let get = |path: &str, method: Method| {
            lease("n1", &Attributes::from_request(&method, path, None))
        };
        let own = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1";
        assert_eq!(get(own, Method::PUT).0, Decision::Allow);
        let (decision, reason) = get(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2",
            Method::PUT,
        );
        assert_eq!(decision, Decision::NoOpinion);
        assert_eq!(
            reason,
            "can only access node lease with the same name as the requesting node"
        );
        let (_, reason) = get(
            "/apis/coordination.k8s.io/v1/namespaces/default/leases/n1",
            Method::GET,
        );
        assert_eq!(
            reason,
            "can only access leases in the kube-node-lease namespace"
        );
        let (_, reason) = get(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            Method::GET,
        );
        assert_eq!(
            reason,
            "can only get, create, update, patch, or delete a node lease"
        );
    }

    #[test]
    fn the_static_rules_are_the_system_node_role() {
        let rules = node_rules();
        let allowed = |method: Method, path: &str| {
            let a = Attributes::from_request(&method, path, None);
            rules.iter().any(|r| r.allows(&a))
        };
        assert!(allowed(Method::PATCH, "/api/v1/nodes/n1/status"));
        assert!(allowed(Method::GET, "/api/v1/pods"));
        assert!(!allowed(Method::DELETE, "/api/v1/namespaces/default"));
    }
}

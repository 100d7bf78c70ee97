//! Authorization: members of `system:masters` pass (as kube-apiserver's privileged-group
//! authorizer, ahead of every other), then the authorizers `--authorization-mode` lists, in its
//! order; the first to allow or deny decides, and a request none allows is Forbidden with
//! upstream's message and the reasons the authorizers gave.

pub mod attributes;
pub mod impersonation;
pub mod node;
pub mod rbac;

use std::sync::Arc;

use capstan_store::Store;

use crate::server::RequestUser;
use crate::status::ApiError;
use attributes::Attributes;
use node::NodeAuthorizer;
use rbac::Rbac;
use rbac::rules::PolicyRule;

/// The group whose members pass every authorization check.
pub const MASTERS_GROUP: &str = "system:masters";

/// One value of `--authorization-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// What each node may reach through the pods bound to it.
    Node,
    /// Role-based access control over the `rbac.authorization.k8s.io` objects.
    Rbac,
    /// Allows everything.
    AlwaysAllow,
    /// Allows nothing.
    AlwaysDeny,
}

/// Parses `--authorization-mode` (a comma list, as kube-apiserver takes it).
pub fn parse_modes(text: &str) -> Result<Vec<Mode>, String> {
    let mut modes = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let mode = match name {
            "Node" => Mode::Node,
            "RBAC" => Mode::Rbac,
            "AlwaysAllow" => Mode::AlwaysAllow,
            "AlwaysDeny" => Mode::AlwaysDeny,
            "ABAC" | "Webhook" => {
                return Err(format!(
                    "authorization-mode {name:?} is not implemented yet in capstan (Node, RBAC, \
                     AlwaysAllow and AlwaysDeny are)"
                ));
            }
            other => {
                return Err(format!(
                    "authorization-mode {other:?} is not a valid mode (valid: Node, RBAC, \
                     AlwaysAllow, AlwaysDeny)"
                ));
            }
        };
        if modes.contains(&mode) {
            return Err(format!(
                "authorization-mode {name:?} has mode specified more than once"
            ));
        }
        modes.push(mode);
    }
    if modes.is_empty() {
        return Err("at least one authorization-mode must be passed".to_string());
    }
    Ok(modes)
}

/// An authorizer's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Explicitly denied: no later authorizer is asked.
    Deny,
    /// Neither: the next authorizer decides; none left means denied.
    NoOpinion,
}

/// The rules a user holds, as SelfSubjectRulesReview reports them.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Rules with resources.
    pub resource: Vec<PolicyRule>,
    /// Rules with non-resource URLs.
    pub non_resource: Vec<PolicyRule>,
    /// Whether some authorizer could not list what it allows.
    pub incomplete: bool,
    /// Errors met while listing.
    pub errors: Vec<String>,
}

/// The authorizer chain.
#[derive(Debug)]
pub struct Authorizer {
    modes: Vec<Mode>,
    node: Option<NodeAuthorizer>,
    rbac: Option<Rbac>,
}

impl Authorizer {
    /// The chain of `modes`; RBAC loads and watches its objects in `store`.
    pub async fn start(
        modes: &[Mode],
        store: Arc<dyn Store>,
    ) -> Result<Authorizer, capstan_store::StoreError> {
        let node = match modes.contains(&Mode::Node) {
            true => Some(NodeAuthorizer::start(Arc::clone(&store)).await?),
            false => None,
        };
        let rbac = match modes.contains(&Mode::Rbac) {
            true => Some(Rbac::start(store).await?),
            false => None,
        };
        Ok(Authorizer {
            modes: modes.to_vec(),
            node,
            rbac,
        })
    }

    /// The Node authorizer, when the chain has one.
    pub fn node(&self) -> Option<&NodeAuthorizer> {
        self.node.as_ref()
    }

    /// The RBAC authorizer, when the chain has one.
    pub fn rbac(&self) -> Option<&Rbac> {
        self.rbac.as_ref()
    }

    /// The decision on `attributes` for `user`, with the reason.
    pub fn decide(&self, user: &RequestUser, attributes: &Attributes) -> (Decision, String) {
        if user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return (Decision::Allow, String::new());
        }
        let mut reasons = Vec::new();
        for mode in &self.modes {
            let (decision, reason) = match mode {
                Mode::AlwaysAllow => (Decision::Allow, String::new()),
                Mode::AlwaysDeny => (Decision::NoOpinion, "Everything is forbidden.".to_string()),
                Mode::Node => match &self.node {
                    Some(node) => node.authorize(user, attributes),
                    None => (Decision::NoOpinion, String::new()),
                },
                Mode::Rbac => match &self.rbac {
                    Some(rbac) => match rbac.authorize(user, attributes) {
                        (true, reason) => (Decision::Allow, reason),
                        (false, reason) => (Decision::NoOpinion, reason),
                    },
                    None => (Decision::NoOpinion, String::new()),
                },
            };
            if decision != Decision::NoOpinion {
                return (decision, reason);
            }
            if !reason.is_empty() {
                reasons.push(reason);
            }
        }
        (Decision::NoOpinion, reasons.join("\n"))
    }

    /// Passes when `user` may do `attributes`; upstream's Forbidden error otherwise.
    pub fn check(&self, user: &RequestUser, attributes: &Attributes) -> Result<(), ApiError> {
        match self.decide(user, attributes) {
            (Decision::Allow, _) => Ok(()),
            (_, reason) => Err(forbidden(user, attributes, &reason)),
        }
    }

    /// What `user` may do in `namespace`, from every authorizer of the chain.
    pub fn rules_for(&self, user: &RequestUser, namespace: &str) -> Rules {
        let mut rules = Rules::default();
        for mode in &self.modes {
            match mode {
                Mode::AlwaysAllow => {
                    rules
                        .resource
                        .push(PolicyRule::resource(&["*"], &["*"], &["*"]));
                    rules
                        .non_resource
                        .push(PolicyRule::non_resource(&["*"], &["*"]));
                }
                Mode::AlwaysDeny => {}
                Mode::Node => {
                    // As upstream: a node's rules are not enumerated.
                    if self.node.is_some() && node::node_identity(user).is_some() {
                        rules
                            .errors
                            .push("node authorizer does not support user rule resolution".into());
                    }
                }
                Mode::Rbac => {
                    if let Some(rbac) = &self.rbac {
                        let (found, errors) = rbac.rules_for(user, namespace);
                        for rule in found {
                            if !rule.resources.is_empty() {
                                rules.resource.push(PolicyRule {
                                    non_resource_urls: Vec::new(),
                                    ..rule.clone()
                                });
                            }
                            if !rule.non_resource_urls.is_empty() {
                                rules.non_resource.push(PolicyRule {
                                    verbs: rule.verbs,
                                    non_resource_urls: rule.non_resource_urls,
                                    ..PolicyRule::default()
                                });
                            }
                        }
                        rules.errors.extend(errors);
                    }
                }
            }
        }
        rules.incomplete = !rules.errors.is_empty();
        rules
    }
}

/// Kube's Forbidden for a request not authorized: `pods is forbidden: User "alice" cannot list
/// resource "pods" in API group "" in the namespace "default"`, then `: <reason>` when the
/// authorizers gave one.
pub fn forbidden(user: &RequestUser, attributes: &Attributes, reason: &str) -> ApiError {
    let mut what = if attributes.resource_request {
        let scope = if attributes.namespace.is_empty() {
            " at the cluster scope".to_string()
        } else {
            format!(" in the namespace {:?}", attributes.namespace)
        };
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?}{scope}",
            user.name,
            attributes.verb,
            attributes.combined_resource(),
            attributes.api_group
        )
    } else {
        format!(
            "User {:?} cannot {} path {:?}",
            user.name, attributes.verb, attributes.path
        )
    };
    if !reason.is_empty() {
        what = format!("{what}: {reason}");
    }
    if !attributes.resource_request || attributes.resource.is_empty() {
        return ApiError::new(403, "Forbidden", format!("forbidden: {what}"));
    }
    if !attributes.name.is_empty() {
        return ApiError::forbidden(
            &attributes.api_group,
            &attributes.resource,
            &attributes.name,
            &what,
        );
    }
    let qualified = if attributes.api_group.is_empty() {
        attributes.resource.clone()
    } else {
        format!("{}.{}", attributes.resource, attributes.api_group)
    };
    let mut error = ApiError::new(
        403,
        "Forbidden",
        format!("{qualified} is forbidden: {what}"),
    );
    error.details.group = Some(attributes.api_group.clone());
    error.details.kind = Some(attributes.resource.clone());
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn modes_parse_as_kube_apiserver_takes_them() {
        assert_eq!(
            parse_modes("RBAC,AlwaysAllow"),
            Ok(vec![Mode::Rbac, Mode::AlwaysAllow])
        );
        assert_eq!(parse_modes("Node,RBAC"), Ok(vec![Mode::Node, Mode::Rbac]));
        let webhook = parse_modes("Node,Webhook").unwrap_err();
        assert!(webhook.contains("not implemented yet"), "{webhook}");
        assert!(
            parse_modes("Bogus")
                .unwrap_err()
                .contains("not a valid mode")
        );
        assert!(
            parse_modes("RBAC,RBAC")
                .unwrap_err()
                .contains("more than once")
        );
        assert!(parse_modes("").is_err());
    }

    #[test]
    fn forbidden_messages_are_upstreams() {
        let alice = RequestUser {
            name: "alice".into(),
            ..RequestUser::default()
        };
        let list = Attributes::from_request(&Method::GET, "/api/v1/namespaces/default/pods", None);
        assert_eq!(
            forbidden(&alice, &list, "").message,
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let get = Attributes::from_request(
            &Method::GET,
            "/apis/apps/v1/namespaces/d/deployments/web/scale",
            None,
        );
        assert_eq!(
            forbidden(
                &alice,
                &get,
                "RBAC: role.rbac.authorization.k8s.io \"x\" not found"
            )
            .message,
            "deployments.apps \"web\" is forbidden: User \"alice\" cannot get resource \"deployments/scale\" in API group \"apps\" in the namespace \"d\": RBAC: role.rbac.authorization.k8s.io \"x\" not found"
        );
        let nodes = Attributes::from_request(&Method::GET, "/api/v1/nodes", None);
        assert!(
            forbidden(&alice, &nodes, "")
                .message
                .ends_with("at the cluster scope")
        );
        let path = Attributes::from_request(&Method::GET, "/metrics", None);
        assert_eq!(
            forbidden(&alice, &path, "").message,
            "forbidden: User \"alice\" cannot get path \"/metrics\""
        );
    }
}

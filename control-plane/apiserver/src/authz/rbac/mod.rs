//! The RBAC authorizer: a request is allowed when a ClusterRoleBinding, or a RoleBinding of its
//! namespace, binds a subject the user matches to a role with a rule allowing it. Nothing is
//! ever denied, only not allowed (kube's `NoOpinion`), so later authorizers may still allow.

pub mod aggregation;
pub mod bootstrap;
pub mod escalation;
pub mod index;
pub mod policy;
pub mod rules;

use std::sync::Arc;

use capstan_store::Store;

use crate::authz::attributes::Attributes;
use crate::server::RequestUser;
use index::{Binding, Index, Policy, Subject};
use rules::PolicyRule;

/// Aborts the index's background tasks when the authorizer goes away.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The RBAC authorizer over its watched index.
pub struct Rbac {
    index: Index,
    _tasks: Tasks,
}

impl std::fmt::Debug for Rbac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rbac")
    }
}

/// What a visit of the user's rules found.
enum Visit {
    /// A rule allowed it; the reason names where it came from.
    Allowed(String),
    /// Nothing allowed it; the errors met on the way (missing roles).
    NotAllowed(Vec<String>),
}

impl Rbac {
    /// Loads the policy from `store` and keeps it current, with ClusterRole aggregation.
    pub async fn start(store: Arc<dyn Store>) -> Result<Rbac, capstan_store::StoreError> {
        let index = Index::default();
        let revision = index.load(&*store).await?;
        let follow = tokio::spawn(index.clone().follow(Arc::clone(&store), revision));
        let aggregate = tokio::spawn(aggregation::run(index.clone(), store));
        Ok(Rbac {
            index,
            _tasks: Tasks(vec![follow, aggregate]),
        })
    }

    /// The index, for escalation checks and reviews.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Whether RBAC allows `attributes` for `user`; the reason either way (`RBAC: allowed by
    /// ...` or the resolution errors), empty when there is nothing to say.
    pub fn authorize(&self, user: &RequestUser, attributes: &Attributes) -> (bool, String) {
        let visit = self.index.read(|policy| {
            visit(policy, user, &attributes.namespace, |rule| {
                rule.allows(attributes)
            })
        });
        match visit {
            Visit::Allowed(reason) => (true, format!("RBAC: allowed by {reason}")),
            Visit::NotAllowed(errors) if errors.is_empty() => (false, String::new()),
            Visit::NotAllowed(errors) => (false, format!("RBAC: {}", aggregate(&errors))),
        }
    }

    /// Every rule `user` holds in `namespace` (cluster-wide ones included; only those for an
    /// empty namespace), and the resolution errors.
    pub fn rules_for(&self, user: &RequestUser, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        self.index.read(|policy| rules_for(policy, user, namespace))
    }
}

/// Kube's error aggregate: one error as is, several in brackets.
pub fn aggregate(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        _ => format!("[{}]", errors.join(", ")),
    }
}

/// The rules of `user` in `namespace` from `policy`.
pub fn rules_for(
    policy: &Policy,
    user: &RequestUser,
    namespace: &str,
) -> (Vec<PolicyRule>, Vec<String>) {
    let mut rules = Vec::new();
    let visit = visit(policy, user, namespace, |rule| {
        rules.push(rule.clone());
        false
    });
    let errors = match visit {
        Visit::NotAllowed(errors) => errors,
        Visit::Allowed(_) => Vec::new(),
    };
    (rules, errors)
}

/// The rules of a role reference (`Role` in `namespace`, or `ClusterRole`), or the error the
/// RBAC authorizer reports for it.
pub fn role_rules<'p>(
    policy: &'p Policy,
    kind: &str,
    name: &str,
    namespace: &str,
) -> Result<&'p [PolicyRule], String> {
    match kind {
        "ClusterRole" => policy
            .cluster_roles
            .get(name)
            .map(|r| r.rules.as_slice())
            .ok_or_else(|| format!("clusterrole.rbac.authorization.k8s.io \"{name}\" not found")),
        "Role" => policy
            .roles
            .get(&(namespace.to_string(), name.to_string()))
            .map(|r| r.rules.as_slice())
            .ok_or_else(|| format!("role.rbac.authorization.k8s.io \"{name}\" not found")),
        other => Err(format!("unsupported role reference kind: {other:?}")),
    }
}

/// Visits the rules bound to `user` (ClusterRoleBindings, then the RoleBindings of
/// `namespace`) until `stop` says a rule is enough.
fn visit(
    policy: &Policy,
    user: &RequestUser,
    namespace: &str,
    mut stop: impl FnMut(&PolicyRule) -> bool,
) -> Visit {
    let mut errors = Vec::new();
    let bindings = policy.cluster_role_bindings.values().chain(
        policy
            .role_bindings
            .range((namespace.to_string(), String::new())..)
            .take_while(|((ns, _), _)| !namespace.is_empty() && ns == namespace)
            .map(|(_, b)| b),
    );
    for binding in bindings {
        let Some(subject) = binding.subjects.iter().find(|s| applies(s, user, binding)) else {
            continue;
        };
        let rules = match role_rules(
            policy,
            &binding.role_ref.kind,
            &binding.role_ref.name,
            &binding.namespace,
        ) {
            Ok(rules) => rules,
            Err(error) => {
                errors.push(error);
                continue;
            }
        };
        if rules.iter().any(&mut stop) {
            return Visit::Allowed(describe(binding, subject));
        }
    }
    Visit::NotAllowed(errors)
}

/// Whether `subject` of `binding` is `user`.
fn applies(subject: &Subject, user: &RequestUser, binding: &Binding) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let namespace = if subject.namespace.is_empty() {
                &binding.namespace
            } else {
                &subject.namespace
            };
            !namespace.is_empty()
                && user.name == format!("system:serviceaccount:{namespace}:{}", subject.name)
        }
        _ => false,
    }
}

/// `ClusterRoleBinding "x" of ClusterRole "y" to Group "z"`, as upstream words the source.
fn describe(binding: &Binding, subject: &Subject) -> String {
    let who = match subject.kind.as_str() {
        "ServiceAccount" => {
            let namespace = if subject.namespace.is_empty() {
                &binding.namespace
            } else {
                &subject.namespace
            };
            format!("{} \"{}/{namespace}\"", subject.kind, subject.name)
        }
        _ => format!("{} \"{}\"", subject.kind, subject.name),
    };
    if binding.namespace.is_empty() {
        format!(
            "ClusterRoleBinding \"{}\" of {} \"{}\" to {who}",
            binding.name, binding.role_ref.kind, binding.role_ref.name
        )
    } else {
        format!(
            "RoleBinding \"{}/{}\" of {} \"{}\" to {who}",
            binding.name, binding.namespace, binding.role_ref.kind, binding.role_ref.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_store::KeyValue;
    use http::Method;
    use index::{RoleEntry, RoleRef};

    fn entry(rules: Vec<PolicyRule>) -> RoleEntry {
        RoleEntry {
            rules,
            labels: Default::default(),
            selectors: None,
            stored: KeyValue {
                key: String::new(),
                value: Vec::new(),
                create_revision: 1,
                mod_revision: 1,
            },
        }
    }

    fn subject(kind: &str, name: &str, namespace: &str) -> Subject {
        Subject {
            kind: kind.into(),
            name: name.into(),
            namespace: namespace.into(),
        }
    }

    #[test]
    fn service_accounts_groups_and_role_bindings_to_cluster_roles() {
        let mut policy = Policy::default();
        policy.cluster_roles.insert(
            "reader".into(),
            entry(vec![PolicyRule::resource(&["get"], &[""], &["pods"])]),
        );
        policy.role_bindings.insert(
            ("apps".into(), "readers".into()),
            Binding {
                name: "readers".into(),
                namespace: "apps".into(),
                role_ref: RoleRef {
                    kind: "ClusterRole".into(),
                    name: "reader".into(),
                },
                subjects: vec![
                    subject("ServiceAccount", "builder", ""),
                    subject("Group", "qa", ""),
                ],
                revision: 1,
            },
        );
        let get = Attributes::from_request(&Method::GET, "/api/v1/namespaces/apps/pods/p", None);
        let other_namespace =
            Attributes::from_request(&Method::GET, "/api/v1/namespaces/web/pods/p", None);
        let account = RequestUser {
            name: "system:serviceaccount:apps:builder".into(),
            ..RequestUser::default()
        };
        let found = visit(&policy, &account, &get.namespace, |r| r.allows(&get));
        let Visit::Allowed(reason) = found else {
            panic!("the service account of the binding's namespace is not allowed");
        };
        assert_eq!(
            reason,
            "RoleBinding \"readers/apps\" of ClusterRole \"reader\" to ServiceAccount \"builder/apps\""
        );
        let same_name_elsewhere = RequestUser {
            name: "system:serviceaccount:web:builder".into(),
            ..RequestUser::default()
        };
        assert!(matches!(
            visit(&policy, &same_name_elsewhere, &get.namespace, |r| r
                .allows(&get)),
            Visit::NotAllowed(_)
        ));
        let tester = RequestUser {
            name: "tess".into(),
            groups: vec!["qa".into()],
            ..RequestUser::default()
        };
        assert!(matches!(
            visit(&policy, &tester, &get.namespace, |r| r.allows(&get)),
            Visit::Allowed(_)
        ));
        // A RoleBinding grants in its namespace only.
        assert!(matches!(
            visit(&policy, &tester, &other_namespace.namespace, |r| r
                .allows(&other_namespace)),
            Visit::NotAllowed(_)
        ));
        let (rules, errors) = rules_for(&policy, &tester, "apps");
        assert_eq!((rules.len(), errors.len()), (1, 0));
        assert!(rules_for(&policy, &tester, "").0.is_empty());
    }
}

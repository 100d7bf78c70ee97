//! Escalation prevention, as kube's RBAC storage does it: a Role or ClusterRole may only be
//! written with rules its author holds (unless allowed `escalate` on it), and a binding only
//! made to a role whose rules its author holds (unless allowed `bind` on the role).
//! `system:masters` passes both.

use serde_json::Value;

use super::index::GROUP;
use super::rules::{self, PolicyRule};
use crate::authz::attributes::Attributes;
use crate::authz::{Authorizer, Decision, MASTERS_GROUP};
use crate::server::RequestUser;
use crate::status::{ApiError, ApiResult};

/// Refuses a write of the role `object` (`roles` or `clusterroles`, named `name` in
/// `namespace`) that grants what `user` does not hold.
pub fn check_role(
    authorizer: &Authorizer,
    user: &RequestUser,
    resource: &str,
    namespace: &str,
    name: &str,
    object: &Value,
) -> ApiResult<()> {
    if is_master(user) || allowed(authorizer, user, "escalate", resource, namespace, name) {
        return Ok(());
    }
    if resource == "clusterroles" && object.get("aggregationRule").is_some_and(|a| !a.is_null()) {
        let all = [
            PolicyRule::resource(&["*"], &["*"], &["*"]),
            PolicyRule::non_resource(&["*"], &["*"]),
        ];
        if confirm(authorizer, user, namespace, &all).is_err() {
            return Err(ApiError::forbidden(
                GROUP,
                resource,
                name,
                "must have cluster-admin privileges to use the aggregationRule",
            ));
        }
    }
    let requested: Vec<PolicyRule> = object
        .get("rules")
        .filter(|r| !r.is_null())
        .map(|r| serde_json::from_value(r.clone()))
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("rules: {e}")))?
        .unwrap_or_default();
    confirm(authorizer, user, namespace, &requested)
        .map_err(|why| ApiError::forbidden(GROUP, resource, name, &why))
}

/// Refuses a write of the binding `object` (`rolebindings` or `clusterrolebindings`) to a role
/// whose rules `user` does not hold.
pub fn check_binding(
    authorizer: &Authorizer,
    user: &RequestUser,
    resource: &str,
    namespace: &str,
    name: &str,
    object: &Value,
) -> ApiResult<()> {
    if is_master(user) {
        return Ok(());
    }
    let role_ref = object.get("roleRef");
    let field = |f: &str| {
        role_ref
            .and_then(|r| r.get(f))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (kind, role) = (field("kind"), field("name"));
    let role_resource = match kind.as_str() {
        "Role" => "roles",
        _ => "clusterroles",
    };
    if allowed(authorizer, user, "bind", role_resource, namespace, &role) {
        return Ok(());
    }
    let Some(rbac) = authorizer.rbac() else {
        return Err(ApiError::forbidden(
            GROUP,
            resource,
            name,
            "RBAC is not enabled, so the rules of the role cannot be checked",
        ));
    };
    let rules = rbac
        .index()
        .read(|policy| super::role_rules(policy, &kind, &role, namespace).map(<[_]>::to_vec));
    let rules = rules.map_err(|_| ApiError::not_found(GROUP, role_resource, &role))?;
    confirm(authorizer, user, namespace, &rules)
        .map_err(|why| ApiError::forbidden(GROUP, resource, name, &why))
}

fn is_master(user: &RequestUser) -> bool {
    user.groups.iter().any(|g| g == MASTERS_GROUP)
}

fn allowed(
    authorizer: &Authorizer,
    user: &RequestUser,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> bool {
    let attributes = Attributes {
        verb: verb.into(),
        resource_request: true,
        api_group: GROUP.into(),
        api_version: "v1".into(),
        resource: resource.into(),
        name: name.into(),
        namespace: namespace.into(),
        ..Attributes::default()
    };
    authorizer.decide(user, &attributes).0 == Decision::Allow
}

/// Kube's `ConfirmNoEscalation`: the rules `user` holds in `namespace` cover `requested`, or
/// the message naming what they lack.
fn confirm(
    authorizer: &Authorizer,
    user: &RequestUser,
    namespace: &str,
    requested: &[PolicyRule],
) -> Result<(), String> {
    let (owned, errors) = match authorizer.rbac() {
        Some(rbac) => rbac.rules_for(user, namespace),
        None => (Vec::new(), Vec::new()),
    };
    let (covered, missing) = rules::covers(&owned, requested);
    if covered {
        return Ok(());
    }
    let mut lines: Vec<String> = rules::compact(missing)
        .iter()
        .map(PolicyRule::compact_string)
        .collect();
    lines.sort();
    lines.dedup();
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let mut message = format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        lines.join("\n")
    );
    if !errors.is_empty() {
        message.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
    }
    Err(message)
}

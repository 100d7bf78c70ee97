//! Authorization until RBAC is built: members of `system:masters` may do anything (as with
//! kube-apiserver, where that group bypasses every authorizer); every authenticated user may
//! read discovery, OpenAPI, `/version` and the health checks (kube's `system:discovery`,
//! `system:basic-user` and `system:public-info-viewer` roles); anonymous users only the last
//! two. Everything else is refused with kube's Forbidden text plus the reason, so that nobody
//! mistakes the missing RBAC for a policy.

use http::Method;

use crate::route::Route;
use crate::server::RequestUser;
use crate::status::ApiError;

/// The group whose members pass every authorization check.
pub const MASTERS_GROUP: &str = "system:masters";
const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// Whether `user` may make `method` on `route`; the Forbidden error when not.
pub fn authorize(
    user: &RequestUser,
    method: &Method,
    path: &str,
    route: &Route<'_>,
) -> Result<(), ApiError> {
    if user.groups.iter().any(|g| g == MASTERS_GROUP) {
        return Ok(());
    }
    let authenticated = user.groups.iter().any(|g| g == AUTHENTICATED_GROUP);
    let allowed = match route {
        Route::Version | Route::Health(_) => true,
        Route::CoreVersions
        | Route::Groups
        | Route::Group(_)
        | Route::Resources(..)
        | Route::OpenApi(_) => authenticated,
        // kube's system:service-account-issuer-discovery role, bound to all service accounts.
        Route::ServiceAccountIssuer(_) => user
            .groups
            .iter()
            .any(|g| g == crate::authn::serviceaccount::ALL_SERVICE_ACCOUNTS_GROUP),
        Route::Resource(_) | Route::Unknown => false,
    };
    if allowed {
        return Ok(());
    }
    const WHY: &str = "RBAC authorization is not built yet: only members of system:masters \
                       may use resources";
    let message = match route {
        Route::Resource(target) => {
            let verb = verb(method, target.name.is_some());
            let resource = match &target.subresource {
                Some(sub) => format!("{}/{sub}", target.kind.plural),
                None => target.kind.plural.to_string(),
            };
            let scope = match &target.namespace {
                Some(namespace) => format!(" in the namespace \"{namespace}\""),
                None if target.kind.namespaced => String::new(),
                None => " at the cluster scope".to_string(),
            };
            let name = match &target.name {
                Some(name) => format!("{resource} \"{name}\" is forbidden"),
                None => format!("{resource} is forbidden"),
            };
            format!(
                "{name}: User \"{}\" cannot {verb} resource \"{resource}\" in API group \"{}\"{scope}: {WHY}",
                user.name, target.kind.group
            )
        }
        _ => format!(
            "forbidden: User \"{}\" cannot {} path \"{path}\"",
            user.name,
            method.as_str().to_lowercase()
        ),
    };
    Err(ApiError::new(403, "Forbidden", message))
}

/// The Kubernetes verb of a request (watch and deletecollection are told apart later, by
/// the handler; for the message, list and delete are close enough).
fn verb(method: &Method, named: bool) -> &'static str {
    match (method, named) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, _) => "delete",
        _ => "access",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::KindTable;
    use crate::route;

    fn user(name: &str, groups: &[&str]) -> RequestUser {
        RequestUser {
            name: name.into(),
            uid: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn masters_pass_others_read_discovery_anonymous_only_health() {
        let kinds = KindTable::default();
        let pods = route::parse(&kinds, "/api/v1/namespaces/default/pods");
        let discovery = route::parse(&kinds, "/apis");
        let health = route::parse(&kinds, "/readyz");
        let admin = user("kubernetes-admin", &[MASTERS_GROUP, AUTHENTICATED_GROUP]);
        let alice = user("alice", &[AUTHENTICATED_GROUP]);
        let anonymous = user("system:anonymous", &["system:unauthenticated"]);
        assert!(
            authorize(
                &admin,
                &Method::GET,
                "/api/v1/namespaces/default/pods",
                &pods
            )
            .is_ok()
        );
        assert!(authorize(&alice, &Method::GET, "/apis", &discovery).is_ok());
        assert!(authorize(&anonymous, &Method::GET, "/apis", &discovery).is_err());
        assert!(authorize(&anonymous, &Method::GET, "/readyz", &health).is_ok());
        let error = authorize(
            &alice,
            &Method::GET,
            "/api/v1/namespaces/default/pods",
            &pods,
        )
        .unwrap_err();
        assert_eq!(error.code, 403);
        assert!(
            error.message.starts_with(
                "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
            ),
            "{}",
            error.message
        );
    }
}

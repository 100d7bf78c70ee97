//! Impersonation (`Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid` headers, what
//! `kubectl --as` sends): the requesting user must be allowed the `impersonate` verb on each
//! (users, groups, serviceaccounts, uids); the request then runs as the user named, as
//! kube-apiserver's impersonation filter does. `Impersonate-Extra-*` is refused, not dropped.

use http::HeaderMap;

use super::Authorizer;
use super::attributes::Attributes;
use crate::server::RequestUser;
use crate::status::ApiError;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The user a request runs as: `None` when it impersonates nobody; the Forbidden error when
/// `user` may not impersonate whom it asks for.
pub fn impersonate(
    authorizer: &Authorizer,
    user: &RequestUser,
    headers: &HeaderMap,
) -> Result<Option<RequestUser>, ApiError> {
    let values = |name: &str| -> Result<Vec<String>, ApiError> {
        headers
            .get_all(name)
            .iter()
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .map_err(|_| ApiError::bad_request(format!("invalid {name} header")))
            })
            .collect()
    };
    let names = values(USER)?;
    let groups = values(GROUP)?;
    let uids = values(UID)?;
    let extra = headers.keys().any(|k| k.as_str().starts_with(EXTRA_PREFIX));
    let Some(name) = names.first() else {
        if !groups.is_empty() || !uids.is_empty() || extra {
            return Err(ApiError::bad_request(
                "requested impersonation of groups, uid or extra without impersonating a user",
            ));
        }
        return Ok(None);
    };
    if extra {
        return Err(ApiError::new(
            501,
            "NotImplemented",
            "Impersonate-Extra headers are not implemented yet",
        ));
    }
    let mut acting = Attributes {
        verb: "impersonate".into(),
        resource_request: true,
        ..Attributes::default()
    };
    let mut impersonated_groups = groups.clone();
    match service_account(name) {
        Some((namespace, account)) => {
            acting.resource = "serviceaccounts".into();
            acting.namespace = namespace.to_string();
            acting.name = account.to_string();
            if groups.is_empty() {
                impersonated_groups = vec![
                    "system:serviceaccounts".to_string(),
                    format!("system:serviceaccounts:{namespace}"),
                ];
            }
        }
        None => {
            acting.resource = "users".into();
            acting.name = name.clone();
        }
    }
    authorizer.check(user, &acting)?;
    for group in &groups {
        let attributes = Attributes {
            resource: "groups".into(),
            namespace: String::new(),
            name: group.clone(),
            ..acting.clone()
        };
        authorizer.check(user, &attributes)?;
    }
    for uid in &uids {
        let attributes = Attributes {
            api_group: "authentication.k8s.io".into(),
            resource: "uids".into(),
            namespace: String::new(),
            name: uid.clone(),
            ..acting.clone()
        };
        authorizer.check(user, &attributes)?;
    }
    let anonymous = name == crate::authn::ANONYMOUS_USER;
    let implied = if anonymous {
        crate::authn::UNAUTHENTICATED_GROUP
    } else {
        crate::authn::AUTHENTICATED_GROUP
    };
    let has_either = impersonated_groups.iter().any(|g| {
        g == crate::authn::UNAUTHENTICATED_GROUP
            || (!anonymous && g == crate::authn::AUTHENTICATED_GROUP)
    });
    if !has_either {
        impersonated_groups.push(implied.to_string());
    }
    Ok(Some(RequestUser {
        name: name.clone(),
        uid: uids.first().cloned(),
        groups: impersonated_groups,
    }))
}

fn service_account(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix(SERVICE_ACCOUNT_PREFIX)?.split_once(':')
}

//! authentication.k8s.io/v1: TokenReview (who does this bearer token authenticate as?, asked
//! by webhooks and aggregated servers) and SelfSubjectReview (who am I?, `kubectl auth
//! whoami`). TokenReview runs the API server's own token authenticators: the token file and
//! ServiceAccount JWTs (those checked against the store: their account and bound object must
//! still exist).

use capstan_store::Store;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::{strings, text};
use crate::authn::serviceaccount::{
    self, BoundKind, DEFAULT_ISSUER, LookupError, ServiceAccountLookup,
};
use crate::authn::{Method, UserInfo};
use crate::rest::Call;
use crate::status::{ApiError, ApiResult};

/// TokenReview: authenticates `spec.token` for `spec.audiences` (the API server's own audience
/// when none are named).
pub async fn token_review(call: &Call<'_>, object: &Value) -> ApiResult<Value> {
    let token = text(object, "/spec/token");
    if token.is_empty() {
        return Err(ApiError::bad_request("token is required for TokenReview"));
    }
    let Some(authenticator) = &call.server.config.token_authenticator else {
        return Ok(json!({
            "authenticated": false,
            "error": "token authentication is not configured on this server",
        }));
    };
    let requested = strings(object, "/spec/audiences");
    let audiences = if requested.is_empty() {
        vec![DEFAULT_ISSUER.to_string()]
    } else {
        requested.clone()
    };
    let header = format!("Bearer {token}");
    let refused = |error: String| json!({"authenticated": false, "user": {}, "error": error});
    let mut found = match authenticator.authenticate(None, Some(header.as_bytes())) {
        Ok(found) => found,
        Err(error) => return Ok(refused(error.to_string())),
    };
    match &found.method {
        Method::StaticToken => {}
        Method::ServiceAccount(claims) => {
            // ServiceAccount tokens are for the API server's audience only.
            if !audiences.iter().any(|a| a == DEFAULT_ISSUER) {
                return Ok(refused(format!(
                    "token audiences [{DEFAULT_ISSUER:?}] is invalid for the target audiences {requested:?}"
                )));
            }
            let lookup = StoreLookup(&*call.server.store);
            if let Err(error) = serviceaccount::check_still_valid(claims, &lookup).await {
                return Ok(refused(error.to_string()));
            }
        }
        Method::BootstrapToken(token) => {
            let lookup = crate::tokens::lookup::StoreLookup(call.server);
            match lookup.bootstrap_user(token).await {
                Ok(user) => found.user = user,
                Err(error) => return Ok(refused(error.to_string())),
            }
        }
        // A bearer token is always checked, so these do not come back.
        Method::ClientCertificate | Method::Anonymous => {
            return Ok(refused("not a bearer token".to_string()));
        }
    }
    let audiences = match &found.method {
        Method::ServiceAccount(_) => vec![DEFAULT_ISSUER.to_string()],
        _ => audiences,
    };
    Ok(json!({
        "authenticated": true,
        "user": user_info(&found.user),
        "audiences": audiences,
    }))
}

/// SelfSubjectReview: the requesting user as the API server sees it.
pub fn self_subject(call: &Call<'_>) -> Value {
    let user = UserInfo {
        name: call.user.name.clone(),
        uid: call.user.uid.clone().unwrap_or_default(),
        groups: call.user.groups.clone(),
        extra: Default::default(),
    };
    json!({"userInfo": user_info(&user)})
}

fn user_info(user: &UserInfo) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    info
}

/// The service-account lookup over the API server's store.
struct StoreLookup<'a>(&'a dyn Store);

impl StoreLookup<'_> {
    async fn uid(&self, key: String) -> Result<Option<String>, LookupError> {
        let Some(kv) = self
            .0
            .get(&key)
            .await
            .map_err(|e| LookupError(e.to_string()))?
        else {
            return Ok(None);
        };
        let object: Value =
            serde_json::from_slice(&kv.value).map_err(|e| LookupError(e.to_string()))?;
        if object
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|d| !d.is_null())
        {
            return Ok(None);
        }
        Ok(object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string))
    }
}

impl ServiceAccountLookup for StoreLookup<'_> {
    fn service_account_uid<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, LookupError>> {
        Box::pin(self.uid(format!("/registry/serviceaccounts/{namespace}/{name}")))
    }

    fn bound_object_uid<'a>(
        &'a self,
        kind: BoundKind,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, LookupError>> {
        let key = match kind {
            BoundKind::Pod => format!("/registry/pods/{namespace}/{name}"),
            BoundKind::Secret => format!("/registry/secrets/{namespace}/{name}"),
            BoundKind::Node => format!("/registry/nodes/{name}"),
        };
        Box::pin(self.uid(key))
    }
}

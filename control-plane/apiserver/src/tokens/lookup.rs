//! What storage says about the objects a service-account token names, for
//! [`check_still_valid`](crate::authn::serviceaccount::check_still_valid): their UIDs, and
//! nothing for objects gone or deleted more than a minute ago (kube lets a pod's token live
//! through its grace period's first minute, so the kubelet can still report on it).

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;

use crate::authn::bootstrap::{self, BootstrapToken};
use crate::authn::serviceaccount::{BoundKind, LookupError, ServiceAccountLookup};
use crate::authn::{AuthError, UserInfo};
use crate::rest;
use crate::server::ApiServer;

/// How long after its deletionTimestamp an object still validates tokens.
const DELETION_GRACE_SECONDS: i64 = 60;

/// The lookup over one API server's storage.
pub struct StoreLookup<'a>(pub &'a ApiServer);

impl StoreLookup<'_> {
    async fn uid(
        &self,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<String>, LookupError> {
        let server = self.0;
        let Some(kind) = server.kinds.find("", "v1", plural) else {
            return Ok(None);
        };
        let object = match rest::get_object(server, kind, namespace, name).await {
            Ok((object, _)) => object,
            Err(e) if e.reason == "NotFound" => return Ok(None),
            Err(e) => return Err(LookupError(e.message)),
        };
        let deleted_long_ago = object
            .pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| {
                t.with_timezone(&Utc) + chrono::Duration::seconds(DELETION_GRACE_SECONDS)
                    < Utc::now()
            });
        if deleted_long_ago {
            return Ok(None);
        }
        Ok(object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string))
    }
}

impl StoreLookup<'_> {
    /// The user a bootstrap token authenticates as, judged against its Secret in kube-system.
    pub async fn bootstrap_user(&self, token: &BootstrapToken) -> Result<UserInfo, AuthError> {
        let server = self.0;
        let secret = match server.kinds.find("", "v1", "secrets") {
            None => None,
            Some(kind) => {
                match rest::get_object(
                    server,
                    kind,
                    Some(bootstrap::NAMESPACE),
                    &token.secret_name(),
                )
                .await
                {
                    Ok((object, _)) => Some(object),
                    Err(e) if e.reason == "NotFound" => None,
                    Err(e) => return Err(AuthError::Lookup(e.message)),
                }
            }
        };
        token.user(secret.as_ref(), Utc::now())
    }
}

impl ServiceAccountLookup for StoreLookup<'_> {
    fn service_account_uid<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, LookupError>> {
        Box::pin(self.uid("serviceaccounts", Some(namespace), name))
    }

    fn bound_object_uid<'a>(
        &'a self,
        kind: BoundKind,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, LookupError>> {
        Box::pin(async move {
            match kind {
                BoundKind::Pod => self.uid("pods", Some(namespace), name).await,
                BoundKind::Secret => self.uid("secrets", Some(namespace), name).await,
                BoundKind::Node => self.uid("nodes", None, name).await,
            }
        })
    }
}

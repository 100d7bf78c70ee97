//! NamespaceLifecycle: objects are created only in namespaces that exist and are not
//! terminating, and the namespaces the cluster needs (`default`, `kube-system`, `kube-public`)
//! cannot be deleted.

use futures::future::BoxFuture;
use serde_json::Value;

use super::{Attributes, Operation, Plugin};
use crate::rest;
use crate::status::{ApiError, ApiResult, Cause};

/// The namespaces kube-apiserver refuses to delete.
pub const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// The NamespaceLifecycle plugin.
pub struct NamespaceLifecycle;

impl Plugin for NamespaceLifecycle {
    fn name(&self) -> &'static str {
        "NamespaceLifecycle"
    }

    fn mutate<'a>(
        &'a self,
        attributes: &'a Attributes<'a>,
        _object: Option<&'a mut Value>,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(check_namespace(attributes))
    }

    // Deletes pass only the validating phase here, so the immortal namespaces are guarded in it.
    fn validate<'a>(
        &'a self,
        attributes: &'a Attributes<'a>,
        _object: Option<&'a Value>,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            if attributes.operation == Operation::Delete
                && attributes.is("", "namespaces")
                && IMMORTAL_NAMESPACES.contains(&attributes.name)
            {
                return Err(ApiError::forbidden(
                    "",
                    "namespaces",
                    attributes.name,
                    "this namespace may not be deleted",
                ));
            }
            Ok(())
        })
    }
}

/// Writes into a namespace need it to exist; creates need it not terminating.
async fn check_namespace(attributes: &Attributes<'_>) -> ApiResult<()> {
    let kind = attributes.kind;
    let Some(namespace) = attributes.namespace.filter(|_| kind.namespaced) else {
        return Ok(());
    };
    if attributes.operation == Operation::Delete {
        return Ok(());
    }
    let server = attributes.server;
    let Some(namespaces) = server.kinds.find("", "v1", "namespaces") else {
        return Ok(());
    };
    let (ns, _) = rest::get_object(server, namespaces, None, namespace).await?;
    let terminating = ns.pointer("/metadata/deletionTimestamp").is_some()
        || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating");
    if attributes.operation == Operation::Create && terminating {
        let mut error = ApiError::forbidden(
            kind.group,
            kind.plural,
            attributes.name,
            &format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            ),
        );
        error.details.causes.push(Cause {
            reason: "NamespaceTerminating".into(),
            message: format!("namespace {namespace} is being terminated"),
            field: "metadata.namespace".into(),
        });
        return Err(error);
    }
    Ok(())
}

//! The `default` ServiceAccount of every namespace. This is the serviceaccount controller's job
//! in kube (kube-controller-manager's `serviceaccount-controller`); until that controller
//! exists, the API server makes the account itself: for every namespace at start, and for each
//! new namespace right after it is stored, so a pod created just after its namespace finds it.
//! Remove this module when the controller is built.

use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::rest;
use crate::server::{ApiServer, RequestUser};
use crate::status::ApiResult;

/// The name of the account pods run as when they name none.
pub const DEFAULT_NAME: &str = "default";

/// Makes `default` in `namespace` unless it is there. A namespace being deleted is left alone.
/// (Boxed: creating a namespace calls it, and it creates an object.)
pub fn ensure<'a>(server: &'a ApiServer, namespace: &'a str) -> BoxFuture<'a, ApiResult<()>> {
    Box::pin(ensure_now(server, namespace))
}

async fn ensure_now(server: &ApiServer, namespace: &str) -> ApiResult<()> {
    let Some(accounts) = server.kinds.find("", "v1", "serviceaccounts") else {
        return Ok(());
    };
    let object = json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": DEFAULT_NAME, "namespace": namespace},
    });
    let admin = RequestUser::admin();
    match rest::create_object(server, accounts, Some(namespace), object, &admin, false).await {
        Ok(_) => {
            tracing::info!(%namespace, "created the default service account");
            Ok(())
        }
        // Already there, or the namespace is terminating or gone: nothing to make.
        Err(e) if matches!(e.reason, "AlreadyExists" | "Forbidden" | "NotFound") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes `default` in every namespace that lacks it (at start).
pub async fn ensure_all(server: &ApiServer) -> ApiResult<()> {
    let Some(namespaces) = server.kinds.find("", "v1", "namespaces") else {
        return Ok(());
    };
    let listed = server
        .store
        .list(&namespaces.prefix(), capstan_store::ListOptions::default())
        .await
        .map_err(|e| rest::store_error(e, namespaces, ""))?;
    for kv in &listed.items {
        let object = rest::decode(kv)?;
        if object.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        if let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) {
            ensure(server, name).await?;
        }
    }
    Ok(())
}

//! `serviceaccount`: a `default` ServiceAccount in every namespace that is not terminating,
//! made again when it is deleted.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::context::Context;

/// The account every namespace gets.
pub const DEFAULT: &str = "default";

/// The controller's start function.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context.client))
}

async fn run(client: kube::Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    let only_default = watcher::Config::default().fields(&format!("metadata.name={DEFAULT}"));
    Controller::new(namespaces, watcher::Config::default())
        .watches(accounts, only_default, |account| {
            account
                .metadata
                .namespace
                .as_deref()
                .map(ObjectRef::<Namespace>::new)
        })
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| async {})
        .await;
}

async fn reconcile(
    namespace: Arc<Namespace>,
    client: Arc<kube::Client>,
) -> Result<Action, kube::Error> {
    if namespace.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(name) = namespace.metadata.name.as_deref() else {
        return Ok(Action::await_change());
    };
    let accounts: Api<ServiceAccount> = Api::namespaced((*client).clone(), name);
    if accounts.get_opt(DEFAULT).await?.is_some() {
        return Ok(Action::await_change());
    }
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => tracing::info!(namespace = %name, "created the default service account"),
        // Made meanwhile, or the namespace began terminating: nothing to do.
        Err(kube::Error::Api(status)) if matches!(status.code, 409 | 403 | 404) => {}
        Err(error) => return Err(error),
    }
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Namespace>, error: &kube::Error, _: Arc<kube::Client>) -> Action {
    tracing::warn!(%error, "serviceaccount controller: retrying");
    Action::requeue(Duration::from_secs(1))
}

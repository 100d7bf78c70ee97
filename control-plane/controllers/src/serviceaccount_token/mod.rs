//! Service-account token Secrets: `serviceaccount-token` deletes the Secrets of type
//! `kubernetes.io/service-account-token` whose ServiceAccount (by the name and uid
//! annotations) is gone, and `legacy-serviceaccount-token-cleaner` ([`cleaner`]) marks and then
//! deletes auto-generated legacy tokens that went unused for the clean-up period.

pub mod cleaner;
pub mod refs;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::context::Context;

/// The Secret type of service-account tokens.
pub const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// The annotation naming the token's ServiceAccount.
pub const NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// The annotation with the token's ServiceAccount's uid.
pub const UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

/// Starts `serviceaccount-token`.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context.client))
}

async fn run(client: kube::Client) {
    let secrets: Api<Secret> = Api::all(client.clone());
    let accounts: Api<ServiceAccount> = Api::all(client.clone());
    let controller = Controller::new(secrets, watcher::Config::default());
    let store = controller.store();
    // A ServiceAccount change (its deletion above all) looks again at the tokens naming it.
    controller
        .watches(accounts, watcher::Config::default(), move |account| {
            let namespace = account.metadata.namespace.clone();
            let name = account.metadata.name.clone();
            store
                .state()
                .into_iter()
                .filter(|s| s.metadata.namespace == namespace && account_name(s) == name)
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| async {})
        .await;
}

/// The ServiceAccount a token names.
pub fn account_name(secret: &Secret) -> Option<String> {
    if secret.type_.as_deref() != Some(TOKEN_TYPE) {
        return None;
    }
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(NAME_ANNOTATION)
        .filter(|n| !n.is_empty())
        .cloned()
}

/// Whether `account` is the one the token names (the uid annotation, when set, must match).
pub fn is_owner(secret: &Secret, account: &ServiceAccount) -> bool {
    let wanted_uid = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(UID_ANNOTATION))
        .filter(|u| !u.is_empty());
    wanted_uid.is_none_or(|uid| account.metadata.uid.as_ref() == Some(uid))
}

async fn reconcile(secret: Arc<Secret>, client: Arc<kube::Client>) -> Result<Action, kube::Error> {
    let Some(name) = account_name(&secret) else {
        return Ok(Action::await_change());
    };
    if secret.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = secret.metadata.namespace.clone().unwrap_or_default();
    let accounts: Api<ServiceAccount> = Api::namespaced((*client).clone(), &namespace);
    let account = accounts.get_opt(&name).await?;
    if account.is_some_and(|a| is_owner(&secret, &a)) {
        return Ok(Action::await_change());
    }
    let secrets: Api<Secret> = Api::namespaced((*client).clone(), &namespace);
    let secret_name = secret.metadata.name.clone().unwrap_or_default();
    // Only this Secret: one made again under the same name is judged on its own.
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: secret.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match secrets.delete(&secret_name, &params).await {
        Ok(_) => {
            tracing::info!(%namespace, secret = %secret_name, serviceaccount = %name, "deleted the token of a missing service account");
        }
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
        Err(error) => return Err(error),
    }
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Secret>, error: &kube::Error, _: Arc<kube::Client>) -> Action {
    tracing::warn!(%error, "serviceaccount-token controller: retrying");
    Action::requeue(Duration::from_secs(1))
}

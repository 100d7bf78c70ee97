//! `namespace`: a namespace being deleted is emptied of every namespaced object (found through
//! discovery), its conditions say what is left and why, and once it is empty its `kubernetes`
//! finalizer is removed through `namespaces/finalize`, upon which the API server deletes it.

pub mod conditions;
pub mod deleter;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use crate::context::Context;

/// The finalizer the namespace controller owns in `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";

/// Why a sync failed (retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// The API refused or failed.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// Content could not be deleted or discovered.
    #[error("{0}")]
    Content(String),
}

struct State {
    client: kube::Client,
    failures: Mutex<HashMap<String, u32>>,
}

/// The controller's start function.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context))
}

async fn run(context: Context) {
    let api: Api<Namespace> = Api::all(context.client.clone());
    let state = Arc::new(State {
        client: context.client.clone(),
        failures: Mutex::new(HashMap::new()),
    });
    Controller::new(api, watcher::Config::default())
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(namespace: Arc<Namespace>, state: Arc<State>) -> Result<Action, NamespaceError> {
    let name = namespace.metadata.name.clone().unwrap_or_default();
    if namespace.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let api: Api<Namespace> = Api::all(state.client.clone());
    // The cache may lag: act on the namespace as it is now.
    let Some(mut namespace) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let Some(deleted_at) = namespace.metadata.deletion_timestamp.clone() else {
        return Ok(Action::await_change());
    };
    let finalized = !namespace
        .spec
        .iter()
        .flat_map(|s| s.finalizers.iter().flatten())
        .any(|f| f == FINALIZER);
    if finalized {
        return Ok(Action::await_change());
    }
    let (estimate, findings) = deleter::delete_content(&state.client, &name, deleted_at.0).await;
    let status = namespace.status.get_or_insert_with(Default::default);
    if findings.apply(status) {
        status.phase = Some("Terminating".into());
        if let Err(error) = api
            .replace_status(&name, &PostParams::default(), &namespace)
            .await
        {
            tracing::warn!(namespace = %name, %error, "could not update the namespace's conditions");
        }
    }
    let mut errors = findings.content_errors.clone();
    errors.extend(findings.discovery.clone());
    if !errors.is_empty() {
        return Err(NamespaceError::Content(errors.join(", ")));
    }
    reset(&state, &name);
    if estimate > 0 {
        tracing::debug!(namespace = %name, estimate, "namespace content remains");
        // Upstream looks again after half the estimate, plus a second.
        let wait = estimate.unsigned_abs() / 2 + 1;
        return Ok(Action::requeue(Duration::from_secs(wait)));
    }
    finalize(&api, &name).await?;
    tracing::info!(namespace = %name, "namespace emptied and finalized");
    Ok(Action::await_change())
}

/// Removes `kubernetes` from the namespace's spec.finalizers through `namespaces/finalize`.
async fn finalize(api: &Api<Namespace>, name: &str) -> Result<(), NamespaceError> {
    let Some(mut namespace) = api.get_opt(name).await? else {
        return Ok(());
    };
    if let Some(spec) = namespace.spec.as_mut() {
        if let Some(finalizers) = spec.finalizers.as_mut() {
            finalizers.retain(|f| f != FINALIZER);
        }
    }
    match api
        .replace_subresource("finalize", name, &PostParams::default(), &namespace)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

fn reset(state: &State, name: &str) {
    state
        .failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(name);
}

/// Exponential back-off per namespace, from 100 ms to 5 minutes (client-go's default for the
/// namespace controller's rate limiter tops out there too).
fn error_policy(namespace: Arc<Namespace>, error: &NamespaceError, state: Arc<State>) -> Action {
    let name = namespace.metadata.name.clone().unwrap_or_default();
    let mut failures = state
        .failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let count = failures.entry(name.clone()).or_insert(0);
    *count = count.saturating_add(1);
    let delay = Duration::from_millis(100)
        .saturating_mul(2u32.saturating_pow(count.saturating_sub(1).min(12)))
        .min(Duration::from_secs(300));
    tracing::info!(namespace = %name, %error, ?delay, "namespace deletion incomplete; retrying");
    Action::requeue(delay)
}

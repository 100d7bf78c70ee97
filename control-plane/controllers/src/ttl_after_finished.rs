//! The TTL-after-finished controller (`ttl-after-finished`): a Job that has finished
//! (Complete or Failed) and sets `ttlSecondsAfterFinished` is deleted that many seconds after
//! the finishing condition's lastTransitionTime. It is requeued at the expiry time, re-read
//! from the API before the delete (its TTL may have changed), and deleted with the Foreground
//! propagation and a UID precondition, as upstream's controller does: the garbage collector
//! removes its pods, then the Job.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use crate::context::Context;

/// Errors of one pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("API: {0}")]
    Kube(#[from] kube::Error),
}

/// Starts the controller (the registry's `ttl-after-finished`).
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let client = context.client.clone();
        Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default())
            .run(reconcile, error_policy, Arc::new(client))
            .for_each(|_| async {})
            .await;
    })
}

/// When a finished Job with a TTL expires: `None` for Jobs that need no clean-up.
pub fn expiry(job: &Job) -> Option<jiff::Timestamp> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = job
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    let at = finished.last_transition_time.as_ref()?.0;
    Some(at + jiff::SignedDuration::from_secs(i64::from(ttl)))
}

fn left(at: jiff::Timestamp) -> Duration {
    Duration::try_from(at.duration_since(jiff::Timestamp::now())).unwrap_or(Duration::ZERO)
}

async fn reconcile(job: Arc<Job>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let Some(at) = expiry(&job) else {
        return Ok(Action::await_change());
    };
    let wait = left(at);
    if wait > Duration::ZERO {
        return Ok(Action::requeue(wait));
    }
    let namespace = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced((*client).clone(), &namespace);
    // The cached Job may be stale (its TTL changed): decide on the one the API has now.
    let Some(fresh) = jobs.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let Some(at) = expiry(&fresh) else {
        return Ok(Action::await_change());
    };
    let wait = left(at);
    if wait > Duration::ZERO {
        return Ok(Action::requeue(wait));
    }
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions {
            uid: fresh.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    tracing::debug!(job = %name, namespace = %namespace, "cleaning up finished Job");
    match jobs.delete(&name, &params).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
            Ok(Action::await_change())
        }
        Err(error) => Err(error.into()),
    }
}

fn error_policy(job: Arc<Job>, error: &Error, _client: Arc<kube::Client>) -> Action {
    tracing::warn!(
        job = job.metadata.name.as_deref().unwrap_or(""),
        %error,
        "ttl-after-finished"
    );
    Action::requeue(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_counts_from_the_finishing_condition() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j"},
            "spec": {"ttlSecondsAfterFinished": 30, "template": {}},
            "status": {"conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T00:00:05Z"},
            ]},
        }))
        .unwrap_or_default();
        assert_eq!(
            expiry(&job).map(|t| t.to_string()),
            Some("2026-01-01T00:00:35Z".to_string())
        );
        let mut running = job.clone();
        running.status = None;
        assert_eq!(expiry(&running), None);
    }
}

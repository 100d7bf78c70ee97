//! "taint-eviction-controller": deletes the pods of a node with NoExecute taints they do not
//! tolerate, at once, or once the shortest tolerationSeconds of their matching tolerations
//! has passed since the controller first saw them under those taints (as upstream: a restart
//! starts the wait again). Each deletion is preceded by the pod's `DisruptionTarget`
//! condition and a `TaintManagerEviction` event; a wait ended by the taints going away
//! records the cancellation.

pub mod tolerations;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;

use crate::context::Context;
use crate::node_lifecycle::events::{Kind, Recorder, pod_reference};
use tolerations::Stay;

/// Errors of one reconcile, retried with a short delay.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
}

/// Starts the controller.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context))
}

/// What reconciles share.
struct State {
    client: kube::Client,
    recorder: Recorder,
    /// The nodes as last seen by the node watch, by name. The same watch triggers the
    /// node's pods, so a reconcile never sees an older node than the event that caused it.
    nodes: Mutex<HashMap<String, Arc<Node>>>,
    /// When each waiting pod (by UID) was first seen under its node's NoExecute taints.
    waiting: Mutex<HashMap<String, Instant>>,
}

async fn run(context: Context) {
    let client = context.client.clone();
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(pods, watcher::Config::default().fields("spec.nodeName!="));
    let pod_store: Store<Pod> = controller.store();
    let state = Arc::new(State {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), "taint-eviction-controller"),
        nodes: Mutex::new(HashMap::new()),
        waiting: Mutex::new(HashMap::new()),
    });
    let seen = Arc::clone(&state);
    controller
        .watches(
            Api::<Node>::all(client),
            watcher::Config::default(),
            move |node: Node| {
                let name = node.metadata.name.clone().unwrap_or_default();
                if let Ok(mut nodes) = seen.nodes.lock() {
                    nodes.insert(name.clone(), Arc::new(node));
                }
                pods_on(&pod_store, &name)
            },
        )
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .await;
}

fn pods_on(pods: &Store<Pod>, node: &str) -> Vec<ObjectRef<Pod>> {
    pods.state()
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

fn error_policy(_pod: Arc<Pod>, error: &Error, _state: Arc<State>) -> Action {
    tracing::debug!(%error, "taint eviction retried");
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile(pod: Arc<Pod>, state: Arc<State>) -> Result<Action, Error> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let forget = || {
        if let Ok(mut waiting) = state.waiting.lock() {
            waiting.remove(&uid)
        } else {
            None
        }
    };
    if pod.metadata.deletion_timestamp.is_some() {
        forget();
        return Ok(Action::await_change());
    }
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let node = state
        .nodes
        .lock()
        .ok()
        .and_then(|n| n.get(&node_name).cloned());
    let taints: Vec<_> = node
        .as_ref()
        .and_then(|n| n.spec.as_ref()?.taints.as_ref())
        .map(|t| t.iter().filter(|t| t.effect == "NoExecute").collect())
        .unwrap_or_default();
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let wait = match tolerations::stay(&taints, &tolerations) {
        Stay::Forever => {
            if forget().is_some() {
                let message = format!("Cancelling deletion of Pod {}", key(&pod));
                state
                    .recorder
                    .record(
                        &pod_reference(&pod),
                        Kind::Normal,
                        "TaintManagerEviction",
                        &message,
                    )
                    .await;
            }
            return Ok(Action::await_change());
        }
        Stay::None => Duration::ZERO,
        Stay::For(wait) => wait,
    };
    let now = Instant::now();
    let since = match state.waiting.lock() {
        Ok(mut waiting) => *waiting.entry(uid.clone()).or_insert(now),
        Err(_) => now,
    };
    let due = since + wait;
    if now < due {
        return Ok(Action::requeue(due - now));
    }
    evict(&state, &pod).await?;
    forget();
    Ok(Action::await_change())
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The DisruptionTarget condition, the event, then the deletion with the pod's own grace.
async fn evict(state: &State, pod: &Pod) -> Result<(), Error> {
    let (Some(name), Some(namespace)) = (&pod.metadata.name, &pod.metadata.namespace) else {
        return Ok(());
    };
    let pods: Api<Pod> = Api::namespaced(state.client.clone(), namespace);
    // A strategic merge by condition type: only DisruptionTarget is written, so it cannot
    // undo what the node controller writes at the same moment (Ready=False).
    let condition = PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByTaintManager".into()),
        message: Some("Taint manager: deleting due to NoExecute taint".into()),
        last_transition_time: Some(Time(jiff::Timestamp::now())),
        ..PodCondition::default()
    };
    let patch = json!({"status": {"conditions": [condition]}});
    match pods
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(error) => return Err(error.into()),
    }
    let message = format!("Marking for deletion Pod {}", key(pod));
    state
        .recorder
        .record(
            &pod_reference(pod),
            Kind::Normal,
            "TaintManagerEviction",
            &message,
        )
        .await;
    tracing::info!(pod = %key(pod), "evicting pod from a NoExecute-tainted node");
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

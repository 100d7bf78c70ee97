//! `root-ca-certificate-publisher`: the ConfigMap `kube-root-ca.crt` with the cluster CA under
//! `ca.crt` in every namespace that is not terminating, restored when changed or deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::context::Context;

/// The ConfigMap's name.
pub const NAME: &str = "kube-root-ca.crt";
/// The key holding the PEM.
pub const KEY: &str = "ca.crt";
/// Upstream's description annotation.
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";
const DESCRIPTION_KEY: &str = "kubernetes.io/description";

struct State {
    client: kube::Client,
    pem: String,
}

/// The controller's start function; without a CA it has nothing to publish.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    let pem = context.options.root_ca_pem.clone();
    Box::pin(async move {
        match pem {
            Some(pem) => run(context.client, pem).await,
            None => {
                tracing::info!("no root CA to publish");
                futures::future::pending::<()>().await
            }
        }
    })
}

async fn run(client: kube::Client, pem: String) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let maps: Api<ConfigMap> = Api::all(client.clone());
    let only_ours = watcher::Config::default().fields(&format!("metadata.name={NAME}"));
    Controller::new(namespaces, watcher::Config::default())
        .watches(maps, only_ours, |map| {
            map.metadata
                .namespace
                .as_deref()
                .map(ObjectRef::<Namespace>::new)
        })
        .run(reconcile, error_policy, Arc::new(State { client, pem }))
        .for_each(|_| async {})
        .await;
}

fn wanted(pem: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(KEY.to_string(), pem.to_string())])
}

async fn reconcile(namespace: Arc<Namespace>, state: Arc<State>) -> Result<Action, kube::Error> {
    if namespace.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(name) = namespace.metadata.name.as_deref() else {
        return Ok(Action::await_change());
    };
    let maps: Api<ConfigMap> = Api::namespaced(state.client.clone(), name);
    let data = wanted(&state.pem);
    let annotations = BTreeMap::from([(DESCRIPTION_KEY.to_string(), DESCRIPTION.to_string())]);
    let result = match maps.get_opt(NAME).await? {
        None => {
            let map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(NAME.into()),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                },
                data: Some(data),
                ..ConfigMap::default()
            };
            maps.create(&PostParams::default(), &map).await.map(|_| ())
        }
        Some(mut map) => {
            let described = map
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.get(DESCRIPTION_KEY).is_some_and(|d| !d.is_empty()));
            if map.data.as_ref() == Some(&data) && described {
                return Ok(Action::await_change());
            }
            map.data = Some(data);
            map.binary_data = None;
            map.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(DESCRIPTION_KEY.into(), DESCRIPTION.into());
            maps.replace(NAME, &PostParams::default(), &map)
                .await
                .map(|_| ())
        }
    };
    match result {
        Ok(()) => tracing::info!(namespace = %name, "published the root CA"),
        // Made meanwhile, or the namespace began terminating: nothing to do.
        Err(kube::Error::Api(status)) if matches!(status.code, 409 | 403 | 404) => {}
        Err(error) => return Err(error),
    }
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Namespace>, error: &kube::Error, _: Arc<State>) -> Action {
    tracing::warn!(%error, "root-ca-certificate-publisher: retrying");
    Action::requeue(Duration::from_secs(1))
}

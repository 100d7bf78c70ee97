//! The `endpoints` controller: the legacy v1 Endpoints of each Service with a selector,
//! named after it, written only when its subsets, labels or capacity annotation change, and
//! deleted with the Service.

pub mod subsets;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{EndpointSubset, Endpoints, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::context::Context;
use crate::endpointslice::{HEADLESS_LABEL, TRIGGER_TIME_ANNOTATION, trigger_time};
use crate::informer::{informer, touched};
use crate::placement::{Placement, object_key};
use crate::podutil;
use crate::queue::{self, Backoff, WorkQueue};

/// The annotation marking Endpoints cut to [`subsets::MAX_CAPACITY`] addresses.
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";

/// Failed syncs' back-off.
const BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(50),
    max: Duration::from_secs(100),
};

/// Starts the controller.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context))
}

struct Shared {
    client: kube::Client,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
    placement: Placement,
}

async fn run(context: Context) {
    let client = context.client.clone();
    let config = watcher::Config::default;
    let (services, service_events) = informer(Api::<Service>::all(client.clone()), config());
    let (pods, pod_events) = informer(Api::<Pod>::all(client.clone()), config());
    let (endpoints, endpoints_events) = informer(Api::<Endpoints>::all(client.clone()), config());
    let shared = Arc::new(Shared {
        client,
        services,
        pods,
        endpoints,
        placement: Placement::default(),
    });
    let queue: WorkQueue<String> = WorkQueue::with_backoff(BACKOFF);
    let for_pods = Arc::clone(&shared);
    let triggers = stream::select_all(vec![
        service_events
            .filter_map(|e| async move { touched(e) })
            .map(|s: Service| vec![object_key(&s.metadata)])
            .boxed(),
        pod_events
            .filter_map(|e| async move { touched(e) })
            .map(move |p: Pod| for_pods.placement.services_of(&for_pods.services, &p))
            .boxed(),
        // A changed or deleted Endpoints is put back; one left by a deleted Service goes.
        endpoints_events
            .filter_map(|e| async move { touched(e) })
            .map(|e: Endpoints| vec![object_key(&e.metadata)])
            .boxed(),
    ]);
    let feed = {
        let queue = &queue;
        triggers.for_each(move |keys| {
            for key in keys {
                queue.add(key);
            }
            futures::future::ready(())
        })
    };
    let work = async {
        let ready = futures::future::join3(
            shared.services.wait_until_ready(),
            shared.pods.wait_until_ready(),
            shared.endpoints.wait_until_ready(),
        )
        .await;
        if ready.0.is_err() || ready.1.is_err() || ready.2.is_err() {
            return;
        }
        loop {
            let key = queue.next().await;
            match shared.sync(&key).await {
                Ok(()) => queue.forget(&key),
                Err(error) => {
                    tracing::warn!(service = %key, %error, "endpoints sync failed");
                    queue.add_rate_limited(key.clone());
                }
            }
            queue.done(&key);
        }
    };
    tokio::select! {
        () = feed => {}
        () = work => {}
    }
}

impl Shared {
    async fn sync(&self, key: &str) -> Result<(), kube::Error> {
        let (namespace, name) = queue::split(key);
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), namespace);
        let current = self.endpoints.get(&ObjectRef::new(name).within(namespace));
        let Some(service) = self.services.get(&ObjectRef::new(name).within(namespace)) else {
            self.placement.unplace(key);
            if current.is_none() {
                return Ok(());
            }
            return match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                Err(error) => Err(error),
            };
        };
        // Services without a selector have user-managed Endpoints.
        let Some(selector) = podutil::service_selector(&service) else {
            return Ok(());
        };
        let all_pods = self.pods.state();
        let pods: Vec<&Pod> = all_pods
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter(|p| podutil::map_selects(selector, p.metadata.labels.as_ref()))
            .map(|p| p.as_ref())
            .collect();
        self.placement.place(key, &pods);
        let mut subsets = subsets::subsets(&service, &pods);
        let truncated = subsets::truncate(&mut subsets);
        let headless = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
        let mut labels = service.metadata.labels.clone().unwrap_or_default();
        if headless {
            labels.insert(HEADLESS_LABEL.into(), String::new());
        } else {
            labels.remove(HEADLESS_LABEL);
        }
        if let Some(current) = &current {
            let same_subsets =
                normalized(current.subsets.clone()) == normalized(Some(subsets.clone()));
            let same_labels = current.metadata.labels.clone().unwrap_or_default() == labels;
            let marked = current
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(OVER_CAPACITY_ANNOTATION))
                .is_some_and(|v| v == "truncated");
            if same_subsets && same_labels && marked == truncated {
                return Ok(());
            }
        }
        let mut annotations: BTreeMap<String, String> = current
            .as_ref()
            .and_then(|c| c.metadata.annotations.clone())
            .unwrap_or_default();
        match trigger_time(&service, &pods) {
            Some(time) => annotations.insert(TRIGGER_TIME_ANNOTATION.into(), time),
            None => annotations.remove(TRIGGER_TIME_ANNOTATION),
        };
        if truncated {
            annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
        } else {
            annotations.remove(OVER_CAPACITY_ANNOTATION);
        }
        let meta = current
            .as_ref()
            .map(|c| c.metadata.clone())
            .unwrap_or_else(|| ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            });
        let object = Endpoints {
            metadata: ObjectMeta {
                labels: (!labels.is_empty()).then_some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..meta
            },
            subsets: (!subsets.is_empty()).then_some(subsets),
        };
        if current.is_some() {
            api.replace(name, &PostParams::default(), &object).await?;
        } else {
            match api.create(&PostParams::default(), &object).await {
                Ok(_) => {}
                // The cache had not seen it yet: the watch event brings the next sync.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// Subsets compared without the targetRefs' resourceVersions and empty lists.
fn normalized(subsets: Option<Vec<EndpointSubset>>) -> Vec<EndpointSubset> {
    let mut subsets = subsets.unwrap_or_default();
    for subset in &mut subsets {
        for list in [&mut subset.addresses, &mut subset.not_ready_addresses] {
            if list.as_ref().is_some_and(Vec::is_empty) {
                *list = None;
            }
            for address in list.iter_mut().flatten() {
                if let Some(target) = address.target_ref.as_mut() {
                    target.resource_version = None;
                }
            }
        }
        if subset.ports.as_ref().is_some_and(Vec::is_empty) {
            subset.ports = None;
        }
    }
    subsets
}

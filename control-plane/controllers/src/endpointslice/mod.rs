//! The `endpointslice` controller: for each Service with a selector, EndpointSlices
//! (`discovery.k8s.io/v1`) of the pods it selects, as kube-controller-manager's: one set per
//! address type, grouped by the ports each pod resolves, at most `--max-endpoints-per-slice`
//! endpoints in one, and only the slices that change are written.

pub mod desired;
pub mod plan;
pub mod tracker;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::context::Context;
use crate::informer::{informer, touched};
use crate::placement::{Placement, object_key};
use crate::podutil;
use crate::queue::{self, Backoff, WorkQueue};

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming a slice's managing controller.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's `managed-by` value.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// The label a headless Service's slices carry.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The annotation with the time of the change a write reflects.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Why a sync failed (it is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// An API call failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// Some pods were left out because their nodes are unknown.
    #[error("{0}")]
    MissingNodes(String),
}

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
    max: usize,
    services: Store<Service>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    slices: Store<EndpointSlice>,
    tracker: Mutex<tracker::Tracker>,
    placement: Placement,
}

async fn run(context: Context) {
    let client = context.client.clone();
    let (services, service_events) = informer(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    );
    let (pods, pod_events) = informer(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let (nodes, node_events) =
        informer(Api::<Node>::all(client.clone()), watcher::Config::default());
    let managed = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let (slices, slice_events) = informer(Api::<EndpointSlice>::all(client.clone()), managed);
    let shared = Arc::new(Shared {
        client,
        max: context.options.max_endpoints_per_slice.max(1),
        services,
        pods,
        nodes,
        slices,
        tracker: Mutex::new(tracker::Tracker::default()),
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
        slice_events
            .filter_map(|e| async move { touched(e) })
            .map(|s: EndpointSlice| owner_key(&s).into_iter().collect())
            .boxed(),
        // Nodes are read for zones only: their watch just fills the cache.
        node_events.map(|_| Vec::new()).boxed(),
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
        let ready = futures::future::join4(
            shared.services.wait_until_ready(),
            shared.pods.wait_until_ready(),
            shared.nodes.wait_until_ready(),
            shared.slices.wait_until_ready(),
        )
        .await;
        if ready.0.is_err() || ready.1.is_err() || ready.2.is_err() || ready.3.is_err() {
            return;
        }
        loop {
            let key = queue.next().await;
            match shared.sync(&key).await {
                Ok(None) => queue.forget(&key),
                Ok(Some(after)) => {
                    queue.forget(&key);
                    queue.add_after(key.clone(), after);
                }
                Err(error) => {
                    tracing::warn!(service = %key, %error, "endpointslice sync failed");
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

/// The Service a slice belongs to, by its `kubernetes.io/service-name` label.
fn owner_key(slice: &EndpointSlice) -> Option<String> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(queue::key(slice.metadata.namespace.as_deref()?, name))
}

impl Shared {
    /// Brings the slices of one Service to its pods; `Some(delay)` to look again later.
    async fn sync(&self, key: &str) -> Result<Option<Duration>, SyncError> {
        let (namespace, name) = queue::split(key);
        let slices_api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), namespace);
        let cached: Vec<Arc<EndpointSlice>> = self
            .slices
            .state()
            .into_iter()
            .filter(|s| owner_key(s).as_deref() == Some(key))
            .collect();
        let Some(service) = self.services.get(&ObjectRef::new(name).within(namespace)) else {
            // The garbage collector removes them through their ownerReference too; deleting
            // here keeps a cluster without it clean.
            for slice in &cached {
                delete_slice(&slices_api, slice).await?;
            }
            self.placement.unplace(key);
            if let Ok(mut tracker) = self.tracker.lock() {
                tracker.forget(key);
            }
            return Ok(None);
        };
        // Services without a selector get their slices from elsewhere (mirroring, users).
        let Some(selector) = podutil::service_selector(&service) else {
            return Ok(None);
        };
        let views: Vec<&EndpointSlice> = cached.iter().map(|s| s.as_ref()).collect();
        let caught_up = self
            .tracker
            .lock()
            .map(|mut t| t.caught_up(key, &views))
            .unwrap_or(true);
        if !caught_up {
            return Ok(Some(Duration::from_millis(200)));
        }
        let all_pods = self.pods.state();
        let pods: Vec<&Pod> = all_pods
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter(|p| podutil::map_selects(selector, p.metadata.labels.as_ref()))
            .map(|p| p.as_ref())
            .collect();
        self.placement.place(key, &pods);

        let address_types = desired::address_types(&service);
        let node = |name: &str| self.nodes.get(&ObjectRef::new(name));
        let mut groups = Vec::new();
        let mut missing = Vec::new();
        for address_type in &address_types {
            let (typed, skipped) = desired::groups(&service, &pods, &node, address_type);
            groups.extend(typed);
            if missing.is_empty() {
                missing = skipped;
            }
        }
        let labels = slice_labels(&service);
        let planned = {
            let new_slice = |address_type: &str, ports: &[EndpointPort]| {
                new_slice(&service, &labels, address_type, ports)
            };
            let uid = service.metadata.uid.clone();
            let owns = |slice: &EndpointSlice| {
                slice
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
            };
            let owner = plan::Owner {
                address_types: &address_types,
                labels: &labels,
                new_slice: &new_slice,
                owns: &owns,
                max: self.max,
            };
            let existing = cached.iter().map(|s| s.as_ref().clone()).collect();
            plan::plan(&owner, groups, existing)
        };
        let trigger = trigger_time(&service, &pods);
        self.write(key, &slices_api, &service, planned, trigger.as_deref())
            .await?;
        if !missing.is_empty() {
            return Err(SyncError::MissingNodes(missing.join("; ")));
        }
        Ok(None)
    }

    async fn write(
        &self,
        key: &str,
        api: &Api<EndpointSlice>,
        service: &Service,
        planned: plan::Plan,
        trigger: Option<&str>,
    ) -> Result<(), SyncError> {
        // A Service being deleted gets no new slices: the garbage collector would race them.
        if service.metadata.deletion_timestamp.is_none() {
            for mut slice in planned.create {
                stamp(&mut slice, trigger);
                let made = api.create(&PostParams::default(), &slice).await?;
                tracing::debug!(service = %key, slice = ?made.metadata.name, "created EndpointSlice");
                if let Ok(mut tracker) = self.tracker.lock() {
                    tracker.wrote(key, &made);
                }
            }
        }
        for mut slice in planned.update {
            stamp(&mut slice, trigger);
            let name = slice.metadata.name.clone().unwrap_or_default();
            let made = api.replace(&name, &PostParams::default(), &slice).await?;
            if let Ok(mut tracker) = self.tracker.lock() {
                tracker.wrote(key, &made);
            }
        }
        for slice in planned.delete {
            delete_slice(api, &slice).await?;
            if let Ok(mut tracker) = self.tracker.lock() {
                tracker.deleted(key, &slice);
            }
        }
        Ok(())
    }
}

async fn delete_slice(api: &Api<EndpointSlice>, slice: &EndpointSlice) -> Result<(), kube::Error> {
    let name = slice.metadata.name.clone().unwrap_or_default();
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// The labels of a Service's slices: the Service's own (less the reserved ones), its name,
/// the manager, and the headless marker.
pub fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = service
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                SERVICE_NAME_LABEL | MANAGED_BY_LABEL | HEADLESS_LABEL
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let headless = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    if headless {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

fn new_slice(
    service: &Service,
    labels: &BTreeMap<String, String>,
    address_type: &str,
    ports: &[EndpointPort],
) -> EndpointSlice {
    let name = service.metadata.name.clone().unwrap_or_default();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: service.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Service".into(),
                name,
                uid: service.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports.to_vec()),
    }
}

fn stamp(slice: &mut EndpointSlice, trigger: Option<&str>) {
    let annotations = slice.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match trigger {
        Some(time) => {
            annotations.insert(TRIGGER_TIME_ANNOTATION.into(), time.into());
        }
        None => {
            annotations.remove(TRIGGER_TIME_ANNOTATION);
        }
    }
    if annotations.is_empty() {
        slice.metadata.annotations = None;
    }
}

/// The time of the latest change the write reflects: the Service's creation or a pod's
/// readiness change (upstream's TriggerTimeTracker, without its per-sync bookkeeping).
pub fn trigger_time(service: &Service, pods: &[&Pod]) -> Option<String> {
    let mut latest = service.metadata.creation_timestamp.as_ref().map(|t| t.0);
    for pod in pods {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0);
        if ready > latest {
            latest = ready;
        }
    }
    latest.map(|t| t.to_string())
}

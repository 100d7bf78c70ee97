//! The `endpointslice-mirroring-controller`: for each Service without a selector, the
//! Endpoints users write are mirrored into EndpointSlices (managed by
//! `endpointslicemirroring-controller.k8s.io`, owned by the Endpoints, named
//! `<service>-<random>`), kept in step with it and deleted when it goes, when the Service goes
//! or gains a selector, or when the Endpoints is labelled
//! `endpointslice.kubernetes.io/skip-mirror=true` (as the API server labels `default/kubernetes`)
//! or carries a leader-election record.

pub mod desired;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Endpoints, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

use crate::context::Context;
use crate::endpointslice::tracker::Tracker;
use crate::endpointslice::{MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
use crate::informer::{informer, touched};
use crate::node_lifecycle::events::{Kind, Recorder};
use crate::placement::object_key;
use crate::podutil;
use crate::queue::{self, WorkQueue};

/// This controller's `managed-by` value.
pub const MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";
/// An Endpoints with this label set to `true` is not mirrored.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// The annotation of Endpoints used as leader-election locks, which are not mirrored.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// Starts the controller.
pub fn start(context: Context) -> BoxFuture<'static, ()> {
    Box::pin(run(context))
}

struct Shared {
    client: kube::Client,
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    slices: Store<EndpointSlice>,
    max_per_subset: usize,
    tracker: Mutex<Tracker>,
    recorder: Recorder,
    /// What the last sync of each key skipped, so each change is reported once.
    reported: Mutex<HashMap<String, desired::Skipped>>,
}

async fn run(context: Context) {
    let client = context.client.clone();
    let config = watcher::Config::default;
    let (services, service_events) = informer(Api::<Service>::all(client.clone()), config());
    let (endpoints, endpoints_events) = informer(Api::<Endpoints>::all(client.clone()), config());
    let ours = config().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let (slices, slice_events) = informer(Api::<EndpointSlice>::all(client.clone()), ours);
    let shared = Arc::new(Shared {
        recorder: Recorder::new(client.clone(), "endpointslice-mirroring-controller"),
        client,
        services,
        endpoints,
        slices,
        max_per_subset: context.options.mirroring_max_endpoints_per_subset.max(1),
        tracker: Mutex::new(Tracker::default()),
        reported: Mutex::new(HashMap::new()),
    });
    let queue: Arc<WorkQueue<String>> = Arc::new(WorkQueue::new());
    let triggers = stream::select_all(vec![
        service_events
            .filter_map(|e| async move { touched(e) })
            .map(|s: Service| object_key(&s.metadata))
            .boxed(),
        endpoints_events
            .filter_map(|e| async move { touched(e) })
            .map(|e: Endpoints| object_key(&e.metadata))
            .boxed(),
        // A mirrored slice changed or deleted by someone else is put back.
        slice_events
            .filter_map(|e| async move { touched(e) })
            .filter_map(|s: EndpointSlice| async move { owner_key(&s) })
            .boxed(),
    ]);
    let feed = {
        let queue = Arc::clone(&queue);
        triggers.for_each(move |key| {
            queue.add(key);
            futures::future::ready(())
        })
    };
    let work = async {
        let ready = futures::future::join3(
            shared.services.wait_until_ready(),
            shared.endpoints.wait_until_ready(),
            shared.slices.wait_until_ready(),
        )
        .await;
        if ready.0.is_err() || ready.1.is_err() || ready.2.is_err() {
            return;
        }
        queue
            .work(|key| {
                let shared = shared.clone();
                async move { shared.sync(&key).await }
            })
            .await;
    };
    tokio::select! {
        () = feed => {}
        () = work => {}
    }
}

fn owner_key(slice: &EndpointSlice) -> Option<String> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(queue::key(slice.metadata.namespace.as_deref()?, name))
}

/// Whether `endpoints` is to be mirrored at all.
fn should_mirror(endpoints: &Endpoints) -> bool {
    let skip = endpoints
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SKIP_MIRROR_LABEL))
        .is_some_and(|v| v == "true");
    let leader = endpoints
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
    !skip && !leader
}

fn slice_key(slice: &EndpointSlice) -> String {
    desired::key(
        &slice.address_type,
        slice.ports.as_deref().unwrap_or_default(),
    )
}

impl Shared {
    /// Mirrors one Endpoints; `Some(delay)` to look again when the cache has caught up.
    async fn sync(&self, key: &str) -> Result<Option<Duration>, kube::Error> {
        let (namespace, name) = queue::split(key);
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), namespace);
        let existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .state()
            .into_iter()
            .filter(|s| owner_key(s).as_deref() == Some(key))
            .collect();
        let endpoints = self
            .endpoints
            .get(&ObjectRef::new(name).within(namespace))
            .filter(|e| should_mirror(e));
        let service = self
            .services
            .get(&ObjectRef::new(name).within(namespace))
            .filter(|s| podutil::service_selector(s).is_none());
        let (Some(endpoints), Some(_)) = (endpoints, service) else {
            for slice in &existing {
                self.delete(&api, key, slice).await?;
            }
            if let Ok(mut tracker) = self.tracker.lock() {
                tracker.forget(key);
            }
            if let Ok(mut reported) = self.reported.lock() {
                reported.remove(key);
            }
            return Ok(None);
        };
        let views: Vec<&EndpointSlice> = existing.iter().map(|s| s.as_ref()).collect();
        let caught_up = self
            .tracker
            .lock()
            .map(|mut t| t.caught_up(key, &views))
            .unwrap_or(true);
        if !caught_up {
            return Ok(Some(Duration::from_millis(200)));
        }
        let (groups, skipped) = desired::groups(&endpoints, self.max_per_subset);
        self.report(key, &endpoints, skipped).await;
        let labels = desired::labels(&endpoints, name);
        let annotations = desired::annotations(&endpoints);
        let mut by_key: BTreeMap<String, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        for slice in existing {
            by_key.entry(slice_key(&slice)).or_default().push(slice);
        }
        for (group_key, group) in groups {
            let mut current = by_key.remove(&group_key).unwrap_or_default();
            current.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            let chunks: Vec<&[k8s_openapi::api::discovery::v1::Endpoint]> =
                group.endpoints.chunks(self.max_per_subset).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                let mut wanted = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{name}-")),
                        namespace: Some(namespace.into()),
                        labels: Some(labels.clone()),
                        annotations: (!annotations.is_empty()).then(|| annotations.clone()),
                        owner_references: Some(vec![owner(&endpoints)]),
                        ..ObjectMeta::default()
                    },
                    address_type: group.address_type.clone(),
                    endpoints: chunk.to_vec(),
                    ports: Some(group.ports.clone()),
                };
                match current.get(i) {
                    Some(slice) if !differs(slice, &wanted) => {}
                    Some(slice) => {
                        wanted.metadata.name = slice.metadata.name.clone();
                        wanted.metadata.generate_name = slice.metadata.generate_name.clone();
                        wanted.metadata.resource_version = slice.metadata.resource_version.clone();
                        wanted.metadata.owner_references = slice.metadata.owner_references.clone();
                        let slice_name = wanted.metadata.name.clone().unwrap_or_default();
                        let made = api
                            .replace(&slice_name, &PostParams::default(), &wanted)
                            .await?;
                        self.wrote(key, &made);
                    }
                    None => {
                        let made = api.create(&PostParams::default(), &wanted).await?;
                        self.wrote(key, &made);
                    }
                }
            }
            for slice in current.iter().skip(chunks.len()) {
                self.delete(&api, key, slice).await?;
            }
        }
        for slice in by_key.values().flatten() {
            self.delete(&api, key, slice).await?;
        }
        Ok(None)
    }

    fn wrote(&self, key: &str, slice: &EndpointSlice) {
        if let Ok(mut tracker) = self.tracker.lock() {
            tracker.wrote(key, slice);
        }
    }

    async fn delete(
        &self,
        api: &Api<EndpointSlice>,
        key: &str,
        slice: &EndpointSlice,
    ) -> Result<(), kube::Error> {
        let name = slice.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error),
        }
        if let Ok(mut tracker) = self.tracker.lock() {
            tracker.deleted(key, slice);
        }
        Ok(())
    }

    /// Warns on the Endpoints about addresses left out, as upstream's events say it, once per
    /// change of what was skipped.
    async fn report(&self, key: &str, endpoints: &Endpoints, skipped: desired::Skipped) {
        let changed = self
            .reported
            .lock()
            .map(|mut reported| reported.insert(key.to_string(), skipped) != Some(skipped))
            .unwrap_or(false);
        if !changed {
            return;
        }
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Endpoints".into()),
            namespace: endpoints.metadata.namespace.clone(),
            name: endpoints.metadata.name.clone(),
            uid: endpoints.metadata.uid.clone(),
            resource_version: endpoints.metadata.resource_version.clone(),
            ..ObjectReference::default()
        };
        if skipped.invalid > 0 {
            let message = format!(
                "Skipped {} invalid IP addresses when mirroring to EndpointSlices",
                skipped.invalid
            );
            self.recorder
                .record(&reference, Kind::Warning, "InvalidIPAddress", &message)
                .await;
        }
        if skipped.over_limit > 0 {
            let message = format!(
                "A max of {} addresses can be mirrored to EndpointSlices per Endpoints subset. {} addresses were skipped",
                self.max_per_subset,
                skipped.over_limit + skipped.invalid
            );
            self.recorder
                .record(
                    &reference,
                    Kind::Warning,
                    "TooManyAddressesToMirror",
                    &message,
                )
                .await;
        }
    }
}

/// The controller reference of a mirrored slice to its Endpoints.
fn owner(endpoints: &Endpoints) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Endpoints".into(),
        name: endpoints.metadata.name.clone().unwrap_or_default(),
        uid: endpoints.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `current` differs from `wanted` in what this controller sets.
fn differs(current: &EndpointSlice, wanted: &EndpointSlice) -> bool {
    let map = |m: &Option<BTreeMap<String, String>>| m.clone().unwrap_or_default();
    let conditions = |slice: &EndpointSlice| -> Vec<_> {
        slice
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses.clone(),
                    e.conditions.as_ref().and_then(|c| c.ready),
                    e.target_ref
                        .as_ref()
                        .map(|t| (t.kind.clone(), t.name.clone(), t.uid.clone())),
                    e.node_name.clone(),
                    e.hostname.clone(),
                )
            })
            .collect()
    };
    conditions(current) != conditions(wanted)
        || current.ports != wanted.ports
        || map(&current.metadata.labels) != map(&wanted.metadata.labels)
        || map(&current.metadata.annotations) != map(&wanted.metadata.annotations)
}

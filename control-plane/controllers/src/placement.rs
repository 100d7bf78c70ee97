//! Which Services a pod event concerns: those whose selector matches the pod now, and those
//! it was last placed in (a pod whose labels changed must leave its old Services).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::reflector::Store;

use crate::podutil;
use crate::queue;

/// Pods' last Services, by pod key.
#[derive(Debug, Default)]
pub struct Placement {
    placed: Mutex<HashMap<String, BTreeSet<String>>>,
}

/// `namespace/name` of an object.
pub fn object_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    queue::key(
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or(""),
    )
}

impl Placement {
    /// The keys of the Services a change to `pod` concerns.
    pub fn services_of(&self, services: &Store<Service>, pod: &Pod) -> Vec<String> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
        let mut keys: BTreeSet<String> = services
            .state()
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
            .filter(|s| {
                podutil::service_selector(s)
                    .is_some_and(|sel| podutil::map_selects(sel, pod.metadata.labels.as_ref()))
            })
            .map(|s| object_key(&s.metadata))
            .collect();
        if let Ok(placed) = self.placed.lock()
            && let Some(before) = placed.get(&object_key(&pod.metadata))
        {
            keys.extend(before.iter().cloned());
        }
        keys.into_iter().collect()
    }

    /// Records that the Service `key` now holds exactly `pods`.
    pub fn place(&self, key: &str, pods: &[&Pod]) {
        let Ok(mut placed) = self.placed.lock() else {
            return;
        };
        for services in placed.values_mut() {
            services.remove(key);
        }
        placed.retain(|_, services| !services.is_empty());
        for pod in pods {
            placed
                .entry(object_key(&pod.metadata))
                .or_default()
                .insert(key.to_string());
        }
    }

    /// Forgets a Service that is gone.
    pub fn unplace(&self, key: &str) {
        self.place(key, &[]);
    }
}

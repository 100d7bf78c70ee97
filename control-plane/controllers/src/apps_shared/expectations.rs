//! Create/delete expectations (client-go's ControllerExpectations, by object identity): after
//! a sync writes pods, the next syncs of that owner wait until the watch cache shows those
//! writes, so that a stale cache never makes the controller create or delete twice.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::queue::Key;

/// How long an expectation is waited for before the cache is trusted anyway (upstream: 5 min;
/// shorter here since a lost watch event is recovered by the relist anyway).
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A pod the cache should show: created (present with this uid) or deleted (absent, or
/// terminating, or replaced by another uid).
#[derive(Debug, Clone)]
struct Expected {
    namespace: String,
    name: String,
    uid: String,
    created: bool,
}

/// The expectations of every owner.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<Key, (Instant, Vec<Expected>)>>,
}

impl Expectations {
    /// Records that `pod` was created for `owner`.
    pub fn created(&self, owner: &Key, pod: &Pod) {
        self.push(owner, pod, true);
    }

    /// Records that `pod` was deleted for `owner`.
    pub fn deleted(&self, owner: &Key, pod: &Pod) {
        self.push(owner, pod, false);
    }

    fn push(&self, owner: &Key, pod: &Pod, created: bool) {
        let expected = Expected {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            created,
        };
        if let Ok(mut pending) = self.pending.lock() {
            let entry = pending
                .entry(owner.clone())
                .or_insert_with(|| (Instant::now(), Vec::new()));
            entry.0 = Instant::now();
            entry.1.push(expected);
        }
    }

    /// Whether `pods` shows every write made for `owner` (or they are too old to wait for).
    pub fn satisfied(&self, owner: &Key, pods: &Store<Pod>) -> bool {
        let Ok(mut pending) = self.pending.lock() else {
            return true;
        };
        let Some((since, expected)) = pending.get_mut(owner) else {
            return true;
        };
        expected.retain(|e| {
            let cached = pods.get(&ObjectRef::new(&e.name).within(&e.namespace));
            let same = cached
                .as_ref()
                .filter(|pod| pod.metadata.uid.as_deref() == Some(e.uid.as_str()));
            if e.created {
                cached.is_none()
            } else {
                same.is_some_and(|pod| pod.metadata.deletion_timestamp.is_none())
            }
        });
        if expected.is_empty() || since.elapsed() > EXPECTATION_TIMEOUT {
            pending.remove(owner);
            return true;
        }
        false
    }

    /// Forgets `owner` (it was deleted).
    pub fn forget(&self, owner: &Key) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(owner);
        }
    }
}

//! What this controller wrote and the watch cache has not shown yet (upstream's
//! EndpointSliceTracker): a sync over a stale cache would create duplicate slices, so it
//! waits for the cache instead.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;

/// How long a write may stay unseen before the cache is trusted anyway.
const PATIENCE: Duration = Duration::from_secs(5);

/// The writes awaited, per owner key.
#[derive(Debug, Default)]
pub struct Tracker {
    awaited: HashMap<String, (Instant, Vec<Awaited>)>,
}

#[derive(Debug)]
struct Awaited {
    name: String,
    /// The resourceVersion written; `None` for a deletion.
    revision: Option<u64>,
}

impl Tracker {
    /// Records a created or updated slice.
    pub fn wrote(&mut self, owner: &str, slice: &EndpointSlice) {
        self.push(owner, slice, revision(slice));
    }

    /// Records a deleted slice.
    pub fn deleted(&mut self, owner: &str, slice: &EndpointSlice) {
        self.push(owner, slice, None);
    }

    fn push(&mut self, owner: &str, slice: &EndpointSlice, revision: Option<u64>) {
        let entry = self
            .awaited
            .entry(owner.to_string())
            .or_insert_with(|| (Instant::now(), Vec::new()));
        entry.0 = Instant::now();
        let name = slice.metadata.name.clone().unwrap_or_default();
        entry.1.retain(|a| a.name != name);
        entry.1.push(Awaited { name, revision });
    }

    /// Whether the cached `slices` of `owner` show every awaited write; forgets them if so.
    pub fn caught_up(&mut self, owner: &str, slices: &[&EndpointSlice]) -> bool {
        let Some((since, awaited)) = self.awaited.get(owner) else {
            return true;
        };
        let seen = awaited.iter().all(|a| {
            let cached = slices
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(a.name.as_str()));
            match (a.revision, cached) {
                (None, cached) => cached.is_none(),
                (Some(_), None) => false,
                (Some(wanted), Some(cached)) => revision(cached).is_some_and(|r| r >= wanted),
            }
        });
        if seen || since.elapsed() > PATIENCE {
            self.awaited.remove(owner);
            return true;
        }
        false
    }

    /// Forgets an owner that is gone.
    pub fn forget(&mut self, owner: &str) {
        self.awaited.remove(owner);
    }
}

fn revision(slice: &EndpointSlice) -> Option<u64> {
    slice.metadata.resource_version.as_deref()?.parse().ok()
}

//! One watch per served resource, feeding the graph builder; the set follows discovery (a
//! resource that appears gets a monitor, one that goes loses it).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::AbortHandle;

use crate::discovery::Served;

/// What a monitor reports.
#[derive(Debug)]
pub enum Change {
    /// An object was seen (added or changed).
    Upsert(String, Box<DynamicObject>),
    /// An object was deleted.
    Delete(String, Box<DynamicObject>),
    /// A (re)list finished: these UIDs are all monitor `.0` holds.
    Listed(String, HashSet<String>),
    /// The monitor stopped (its resource is no longer served).
    Stopped(String),
}

/// Resources the collector leaves alone, as upstream: events are never owners or dependents.
pub fn ignored(served: &Served) -> bool {
    served.resource.plural == "events"
        && matches!(served.resource.group.as_str(), "" | "events.k8s.io")
}

/// Whether the collector watches `served`.
pub fn monitored(served: &Served) -> bool {
    ["list", "watch", "delete"]
        .iter()
        .all(|verb| served.supports(verb))
        && !ignored(served)
}

/// The running monitors, by resource key.
#[derive(Debug, Default)]
pub struct Monitors {
    running: HashMap<String, AbortHandle>,
}

impl Monitors {
    /// Starts monitors for newly served resources and stops those of resources gone; the keys
    /// of the monitors started.
    pub fn sync(
        &mut self,
        client: &kube::Client,
        served: &[Arc<Served>],
        changes: &UnboundedSender<Change>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> Vec<String> {
        let wanted: HashMap<String, &Arc<Served>> = served
            .iter()
            .filter(|s| monitored(s))
            .map(|s| (s.key(), s))
            .collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|key| !wanted.contains_key(*key))
            .cloned()
            .collect();
        for key in gone {
            if let Some(handle) = self.running.remove(&key) {
                handle.abort();
            }
            tracing::info!(resource = %key, "garbage collector stops monitoring");
            let _ = changes.send(Change::Stopped(key));
        }
        let mut started = Vec::new();
        for (key, served) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let handle = tasks.spawn(monitor(client.clone(), Arc::clone(served), changes.clone()));
            self.running.insert(key.clone(), handle);
            started.push(key);
        }
        started
    }
}

async fn monitor(client: kube::Client, served: Arc<Served>, changes: UnboundedSender<Change>) {
    let key = served.key();
    let api: Api<DynamicObject> = Api::all_with(client, &served.resource);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut seen = HashSet::new();
    while let Some(event) = events.next().await {
        let change = match event {
            Ok(Event::Init) => {
                seen.clear();
                continue;
            }
            Ok(Event::InitApply(object)) => {
                if let Some(uid) = object.metadata.uid.clone() {
                    seen.insert(uid);
                }
                Change::Upsert(key.clone(), Box::new(object))
            }
            Ok(Event::InitDone) => Change::Listed(key.clone(), std::mem::take(&mut seen)),
            Ok(Event::Apply(object)) => Change::Upsert(key.clone(), Box::new(object)),
            Ok(Event::Delete(object)) => Change::Delete(key.clone(), Box::new(object)),
            Err(error) => {
                tracing::debug!(resource = %key, %error, "garbage collector watch failed; retrying");
                continue;
            }
        };
        if changes.send(change).is_err() {
            return;
        }
    }
}

//! The watch cache: one [`Cacher`] per storage prefix (so per kind, built-in or custom), made
//! on the first watch or `resourceVersion=0` list of the kind, so N watchers of a kind cost one
//! store watch and recent resourceVersions replay from memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_store::Store;
use tokio::task::JoinHandle;

pub mod cacher;
pub mod event;
pub mod window;

pub use cacher::{Cacher, Refused, Subscription};
pub use event::CachedEvent;
pub use window::Miss;

/// How long a request waits for a new cache's first list before it goes to the store itself.
pub const READY_WAIT: Duration = Duration::from_secs(5);

/// A running cache and its task.
type Running = (Arc<Cacher>, JoinHandle<()>);

/// The caches of a server, by storage prefix.
pub struct Caches {
    window: usize,
    caches: Mutex<HashMap<String, Running>>,
}

impl Caches {
    /// No caches yet; each will keep `window` recent events.
    pub fn new(window: usize) -> Caches {
        Caches {
            window,
            caches: Mutex::new(HashMap::new()),
        }
    }

    /// The cache of `prefix` (a kind's storage prefix), made and started on first use.
    pub fn get(&self, store: &Arc<dyn Store>, prefix: &str) -> Arc<Cacher> {
        let mut caches = self
            .caches
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (cacher, _) = caches.entry(prefix.to_string()).or_insert_with(|| {
            tracing::debug!(%prefix, "starting a watch cache");
            Cacher::start(Arc::clone(store), prefix.to_string(), self.window)
        });
        Arc::clone(cacher)
    }

    /// The cache of `prefix`, once it has listed; `None` when it did not in [`READY_WAIT`].
    pub async fn ready(&self, store: &Arc<dyn Store>, prefix: &str) -> Option<Arc<Cacher>> {
        let cacher = self.get(store, prefix);
        cacher.wait_ready(READY_WAIT).await.then_some(cacher)
    }
}

impl Drop for Caches {
    fn drop(&mut self) {
        let caches = self
            .caches
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (_, task) in caches.values() {
            task.abort();
        }
    }
}

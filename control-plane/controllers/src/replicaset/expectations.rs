//! Controller expectations (upstream's UIDTrackingControllerExpectations): after a controller
//! creates or deletes pods it waits to see them in its watch cache before acting again, so a
//! burst of events does not create or delete twice. Expectations expire after five minutes.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::queue::Key;

/// Upstream's ExpectationsTimeout.
const TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expectation {
    add: i64,
    del: i64,
    deleting: HashSet<String>,
    set_at: Instant,
}

/// Pending creations and deletions by controller key.
#[derive(Debug, Default)]
pub struct Expectations {
    by_key: Mutex<HashMap<Key, Expectation>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Expectation>> {
        self.by_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the controller may act: nothing pending, or the expectation expired.
    pub fn satisfied(&self, key: &Key) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(e) => (e.add <= 0 && e.del <= 0) || e.set_at.elapsed() > TIMEOUT,
        }
    }

    /// Expects `count` pod creations.
    pub fn expect_creations(&self, key: &Key, count: usize) {
        self.lock().insert(
            key.clone(),
            Expectation {
                add: count as i64,
                del: 0,
                deleting: HashSet::new(),
                set_at: Instant::now(),
            },
        );
    }

    /// Expects the deletion of each of `pods` (namespace/name keys).
    pub fn expect_deletions(&self, key: &Key, pods: Vec<String>) {
        self.lock().insert(
            key.clone(),
            Expectation {
                add: 0,
                del: pods.len() as i64,
                deleting: pods.into_iter().collect(),
                set_at: Instant::now(),
            },
        );
    }

    /// A pod creation seen (or given up on).
    pub fn creation_observed(&self, key: &Key) {
        if let Some(e) = self.lock().get_mut(key) {
            e.add -= 1;
        }
    }

    /// A pod's deletion seen (or given up on); each expected pod counts once.
    pub fn deletion_observed(&self, key: &Key, pod: &str) {
        if let Some(e) = self.lock().get_mut(key)
            && e.deleting.remove(pod)
        {
            e.del -= 1;
        }
    }

    /// Forgets a deleted controller.
    pub fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_and_deletions_are_counted_once() {
        let expectations = Expectations::default();
        let key = Key::new("ns", "rs");
        assert!(expectations.satisfied(&key));
        expectations.expect_creations(&key, 2);
        expectations.creation_observed(&key);
        assert!(!expectations.satisfied(&key));
        expectations.creation_observed(&key);
        assert!(expectations.satisfied(&key));
        expectations.expect_deletions(&key, vec!["ns/a".into()]);
        expectations.deletion_observed(&key, "ns/b");
        assert!(!expectations.satisfied(&key));
        expectations.deletion_observed(&key, "ns/a");
        expectations.deletion_observed(&key, "ns/a");
        assert!(expectations.satisfied(&key));
    }
}

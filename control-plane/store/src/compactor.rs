//! Keeps a store's history bounded, as an API server does: it compacts to whichever of "the
//! revision seen `retention` ago" and "`max_revisions` below the latest" keeps less.
//!
//! For etcd shared by several API servers each runs its own compactor. That is safe without a
//! lock: compaction only moves forward, a compaction to a revision already compacted is refused
//! with `Compacted` (taken here as done), and the time rule only ever compacts to revisions
//! every server has seen go by `retention` ago.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Revision, Store, StoreError};

/// How much history to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Keep at least the revisions of this long ago (kube-apiserver: 5 minutes)...
    pub retention: Duration,
    /// ...but no more than this many revisions.
    pub max_revisions: i64,
    /// How often to look.
    pub interval: Duration,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            retention: Duration::from_secs(5 * 60),
            max_revisions: 10_000,
            interval: Duration::from_secs(30),
        }
    }
}

/// The decision part, apart from the loop: revisions seen over time, and what to compact to.
#[derive(Debug)]
pub struct Planner {
    policy: CompactionPolicy,
    /// (when, revision) samples, oldest first, none older than needed.
    seen: VecDeque<(Instant, Revision)>,
    compacted: Revision,
}

impl Planner {
    /// A planner that has seen nothing yet.
    pub fn new(policy: CompactionPolicy) -> Self {
        Planner {
            policy,
            seen: VecDeque::new(),
            compacted: 0,
        }
    }

    /// Records `revision` as the latest at `now`; returns the revision to compact to, if it is
    /// beyond the last one compacted.
    pub fn observe(&mut self, now: Instant, revision: Revision) -> Option<Revision> {
        self.seen.push_back((now, revision));
        // The newest sample at least `retention` old is the time rule's target; older ones are
        // no longer needed.
        let mut by_time = 0;
        while let Some(&(at, seen)) = self.seen.front() {
            if now.duration_since(at) < self.policy.retention {
                break;
            }
            by_time = seen;
            if self
                .seen
                .get(1)
                .is_some_and(|&(next, _)| now.duration_since(next) >= self.policy.retention)
            {
                self.seen.pop_front();
            } else {
                break;
            }
        }
        let by_count = revision - self.policy.max_revisions;
        let target = by_time.max(by_count);
        (target > self.compacted).then_some(target)
    }

    /// Notes that the store is compacted to `revision`.
    pub fn compacted(&mut self, revision: Revision) {
        self.compacted = self.compacted.max(revision);
    }
}

/// Starts the compactor on `store`; it runs until the handle is aborted.
pub fn spawn(store: Arc<dyn Store>, policy: CompactionPolicy) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(policy.interval);
        let mut planner = Planner::new(policy);
        loop {
            ticks.tick().await;
            let revision = match store.revision().await {
                Ok(revision) => revision,
                Err(e) => {
                    tracing::warn!(error = %e, "compactor: cannot read the store's revision");
                    continue;
                }
            };
            let Some(target) = planner.observe(Instant::now(), revision) else {
                continue;
            };
            match store.compact(target).await {
                Ok(()) => {
                    tracing::info!(revision = target, "compacted the store's history");
                    planner.compacted(target);
                }
                // Another API server got there first.
                Err(StoreError::Compacted { compacted, .. }) => planner.compacted(compacted),
                Err(e) => tracing::warn!(error = %e, revision = target, "compaction failed"),
            }
        }
    })
}

#[cfg(test)]
mod tests;

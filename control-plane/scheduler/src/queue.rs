//! The scheduling queue: pods waiting to be tried, highest priority first then earliest
//! queued; pods that failed wait among the unschedulable until a cluster event might help
//! them, then go back after their back-off (1 s doubling to 10 s, as upstream).

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::snapshot::{PodInfo, PodKey};

/// The first back-off.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Unschedulable pods are retried at the latest after this long (upstream's flush).
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Active,
    Backoff,
    Unschedulable,
}

#[derive(Debug)]
struct Queued {
    pod: Arc<PodInfo>,
    attempts: u32,
    /// When it last failed.
    failed_at: Option<Instant>,
    place: Where,
    /// Bumped on every move, so that stale heap entries are skipped.
    sequence: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    priority: i32,
    sequence: u64,
    key: PodKey,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.sequence.cmp(&self.sequence))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What can make unschedulable pods worth another try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A node was added.
    NodeAdd,
    /// A node changed in a way the filters read.
    NodeUpdate,
    /// An assigned pod went away (freeing resources, ports, spreading).
    AssignedPodDelete,
    /// A pod was assigned (pod affinity may now be met).
    AssignedPodAdd,
    /// A PersistentVolumeClaim was added, changed or deleted.
    ClaimChange,
    /// A PersistentVolume was added, changed or deleted.
    VolumeChange,
    /// A StorageClass was added, changed or deleted.
    StorageClassChange,
}

/// The queue.
#[derive(Debug, Default)]
pub struct Queue {
    pods: HashMap<PodKey, Queued>,
    active: BinaryHeap<Entry>,
    backoff: BTreeSet<(Instant, u64, PodKey)>,
    /// The keys of the unschedulable pods, so that events need not scan the whole queue.
    unschedulable: HashSet<PodKey>,
    sequence: u64,
}

/// The back-off after `attempts` failed tries.
pub fn backoff_for(attempts: u32) -> Duration {
    let mut duration = INITIAL_BACKOFF;
    for _ in 1..attempts {
        duration *= 2;
        if duration >= MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    duration
}

impl Queue {
    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence
    }

    fn push_active(&mut self, key: &str) {
        self.unschedulable.remove(key);
        let sequence = self.next_sequence();
        if let Some(q) = self.pods.get_mut(key) {
            q.place = Where::Active;
            q.sequence = sequence;
            self.active.push(Entry {
                priority: q.pod.priority,
                sequence,
                key: key.to_string(),
            });
        }
    }

    fn push_backoff(&mut self, key: &str, until: Instant) {
        self.unschedulable.remove(key);
        let sequence = self.next_sequence();
        if let Some(q) = self.pods.get_mut(key) {
            q.place = Where::Backoff;
            q.sequence = sequence;
            self.backoff.insert((until, sequence, key.to_string()));
        }
    }

    /// Adds a new pending pod, or records a newer version of a queued one; an update that
    /// changes what the filters read moves an unschedulable pod on.
    pub fn add_or_update(&mut self, pod: Arc<PodInfo>) {
        let key = pod.key.clone();
        match self.pods.get_mut(&key) {
            None => {
                self.pods.insert(
                    key.clone(),
                    Queued {
                        pod,
                        attempts: 0,
                        failed_at: None,
                        place: Where::Active,
                        sequence: 0,
                    },
                );
                self.push_active(&key);
            }
            Some(q) => {
                let relevant = q.pod.pod.spec != pod.pod.spec
                    || q.pod.labels != pod.labels
                    || q.pod.pod.metadata.annotations != pod.pod.metadata.annotations;
                let priority_changed = q.pod.priority != pod.priority;
                q.pod = pod;
                let place = q.place;
                if (relevant && place == Where::Unschedulable)
                    || (priority_changed && place == Where::Active)
                {
                    self.move_one(&key, Instant::now());
                }
            }
        }
    }

    /// Forgets a pod (deleted, or bound by someone else).
    pub fn remove(&mut self, key: &str) {
        // Stale heap entries are skipped when popped.
        self.pods.remove(key);
        self.unschedulable.remove(key);
    }

    /// Whether `key` is queued.
    pub fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// The next pod to try and its failed attempts so far, after moving the pods whose
    /// back-off is over.
    pub fn pop(&mut self, now: Instant) -> Option<(Arc<PodInfo>, u32)> {
        self.flush_backoff(now);
        while let Some(entry) = self.active.pop() {
            let Some(q) = self.pods.get_mut(&entry.key) else {
                continue;
            };
            if q.place != Where::Active || q.sequence != entry.sequence {
                continue;
            }
            // In flight: it leaves the queue; failure puts it back.
            let q = self.pods.remove(&entry.key)?;
            return Some((q.pod, q.attempts));
        }
        None
    }

    /// Moves pods whose back-off expired into the active queue; retries pods unschedulable
    /// for longer than [`MAX_UNSCHEDULABLE`].
    pub fn flush_backoff(&mut self, now: Instant) {
        while let Some((until, sequence, key)) = self.backoff.first().cloned() {
            if until > now {
                break;
            }
            self.backoff.pop_first();
            if self
                .pods
                .get(&key)
                .is_some_and(|q| q.place == Where::Backoff && q.sequence == sequence)
            {
                self.push_active(&key);
            }
        }
    }

    /// When the next back-off ends, if any pod waits on one.
    pub fn next_backoff(&self) -> Option<Instant> {
        self.backoff.first().map(|(until, _, _)| *until)
    }

    /// Whether a pod can be popped now.
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// Puts back a pod that failed: unschedulable (waiting for an event) or, for errors,
    /// straight into back-off.
    pub fn requeue(&mut self, pod: Arc<PodInfo>, attempts: u32, unschedulable: bool) {
        let key = pod.key.clone();
        let now = Instant::now();
        self.pods.insert(
            key.clone(),
            Queued {
                pod,
                attempts,
                failed_at: Some(now),
                place: Where::Unschedulable,
                sequence: 0,
            },
        );
        if unschedulable {
            self.unschedulable.insert(key);
        } else {
            self.push_backoff(&key, now + backoff_for(attempts));
        }
    }

    /// Moves an unschedulable pod to back-off, or to active when its back-off is over.
    fn move_one(&mut self, key: &str, now: Instant) {
        let Some(q) = self.pods.get(key) else {
            return;
        };
        let until = q
            .failed_at
            .map(|at| at + backoff_for(q.attempts))
            .unwrap_or(now);
        if until > now {
            self.push_backoff(key, until);
        } else {
            self.push_active(key);
        }
    }

    /// A cluster event: the unschedulable pods it may help go to back-off or active.
    pub fn on_event(&mut self, event: ClusterEvent) {
        let now = Instant::now();
        let keys: Vec<PodKey> = self
            .unschedulable
            .iter()
            .filter_map(|k| self.pods.get(k).map(|q| (k, q)))
            .filter(|(_, q)| match event {
                ClusterEvent::AssignedPodAdd => {
                    !q.pod.required_affinity.is_empty()
                        || q.pod
                            .pod
                            .spec
                            .as_ref()
                            .is_some_and(|s| s.topology_spread_constraints.is_some())
                }
                // Only the volume plugins read storage objects.
                ClusterEvent::ClaimChange
                | ClusterEvent::VolumeChange
                | ClusterEvent::StorageClassChange => !q.pod.claims.is_empty(),
                _ => true,
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.move_one(&key, now);
        }
    }

    /// Retries pods that have been unschedulable for too long without an event.
    pub fn flush_unschedulable(&mut self, now: Instant) {
        let keys: Vec<PodKey> = self
            .unschedulable
            .iter()
            .filter_map(|k| self.pods.get(k).map(|q| (k, q)))
            .filter(|(_, q)| {
                q.failed_at
                    .is_some_and(|at| now.duration_since(at) > MAX_UNSCHEDULABLE)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.move_one(&key, now);
        }
    }

    /// The queued pods nominated to a node by an earlier preemption.
    pub fn nominated(&self) -> impl Iterator<Item = &Arc<PodInfo>> {
        self.pods.values().map(|q| &q.pod).filter(|p| {
            p.pod
                .status
                .as_ref()
                .and_then(|s| s.nominated_node_name.as_deref())
                .is_some_and(|n| !n.is_empty())
        })
    }

    /// The keys of the queued pods.
    pub fn keys(&self) -> impl Iterator<Item = &PodKey> {
        self.pods.keys()
    }

    /// How many pods are queued.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether no pod is queued.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, priority: i32) -> Arc<PodInfo> {
        let pod: k8s_openapi::api::core::v1::Pod = match serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "d"},
            "spec": {"priority": priority, "containers": [{"name": "c"}]},
        })) {
            Ok(pod) => pod,
            Err(error) => panic!("{error}"),
        };
        Arc::new(PodInfo::new(Arc::new(pod)))
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        assert_eq!(backoff_for(1), Duration::from_secs(1));
        assert_eq!(backoff_for(2), Duration::from_secs(2));
        assert_eq!(backoff_for(4), Duration::from_secs(8));
        assert_eq!(backoff_for(5), Duration::from_secs(10));
        assert_eq!(backoff_for(30), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn priority_then_order_and_events_move_unschedulable() {
        let mut queue = Queue::default();
        queue.add_or_update(pod("a", 0));
        queue.add_or_update(pod("b", 10));
        queue.add_or_update(pod("c", 0));
        let now = Instant::now();
        let order: Vec<String> = std::iter::from_fn(|| queue.pop(now))
            .map(|(p, _)| p.key.clone())
            .collect();
        assert_eq!(order, ["d/b", "d/a", "d/c"]);

        queue.requeue(pod("a", 0), 1, true);
        assert!(queue.pop(Instant::now()).is_none());
        tokio::time::advance(Duration::from_secs(5)).await;
        // No event: it stays.
        assert!(queue.pop(Instant::now()).is_none());
        queue.on_event(ClusterEvent::NodeAdd);
        assert_eq!(
            queue
                .pop(Instant::now())
                .map(|(p, _)| p.key.clone())
                .as_deref(),
            Some("d/a")
        );

        // An event within the back-off waits for it.
        queue.requeue(pod("a", 0), 2, true);
        queue.on_event(ClusterEvent::NodeAdd);
        assert!(queue.pop(Instant::now()).is_none());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(queue.pop(Instant::now()).is_some());
    }
}

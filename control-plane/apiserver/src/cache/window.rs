//! The watch cache's window: the most recent events of one kind, oldest first, bounded by
//! count, so a watch from a recent resourceVersion replays from memory. What fell out of it is
//! answered as upstream's cacher does: `410 Expired`.

use std::collections::VecDeque;
use std::sync::Arc;

use capstan_store::Revision;

use super::event::CachedEvent;

/// Why a watch cannot start from the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Events after the revision asked for were dropped to keep the window bounded; `floor` is
    /// the oldest revision the window can still start after.
    Expired {
        /// The revision every held event is above.
        floor: Revision,
    },
    /// The revision is older than the cache's list: the cache never saw what came after it
    /// (it was made later), the store may still have it.
    BeforeList,
}

/// The recent events of one kind.
#[derive(Debug)]
pub struct Window {
    events: VecDeque<Arc<CachedEvent>>,
    capacity: usize,
    /// Every event above this revision is held.
    floor: Revision,
    /// Whether events were dropped since the last list.
    evicted: bool,
}

impl Window {
    /// An empty window after a list at `listed_at`, holding at most `capacity` events.
    pub fn new(capacity: usize, listed_at: Revision) -> Window {
        Window {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            floor: listed_at,
            evicted: false,
        }
    }

    /// Starts again after a fresh list at `listed_at`.
    pub fn reset(&mut self, listed_at: Revision) {
        self.events.clear();
        self.floor = listed_at;
        self.evicted = false;
    }

    /// Adds the newest event, dropping the oldest when full.
    pub fn push(&mut self, event: Arc<CachedEvent>) {
        if self.events.len() == self.capacity {
            if let Some(oldest) = self.events.pop_front() {
                self.floor = oldest.revision;
                self.evicted = true;
            }
        }
        self.events.push_back(event);
    }

    /// The events after `revision`, oldest first.
    pub fn since(&self, revision: Revision) -> Result<Vec<Arc<CachedEvent>>, Miss> {
        if revision < self.floor {
            return Err(if self.evicted {
                Miss::Expired { floor: self.floor }
            } else {
                Miss::BeforeList
            });
        }
        let start = self.events.partition_point(|e| e.revision <= revision);
        Ok(self.events.iter().skip(start).cloned().collect())
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(revision: Revision) -> Arc<CachedEvent> {
        Arc::new(CachedEvent::new(
            revision,
            format!("k{revision}"),
            None,
            None,
        ))
    }

    fn revisions(events: &[Arc<CachedEvent>]) -> Vec<Revision> {
        events.iter().map(|e| e.revision).collect()
    }

    fn miss(result: Result<Vec<Arc<CachedEvent>>, Miss>) -> Option<Miss> {
        result.err()
    }

    #[test]
    fn replays_what_it_holds_and_expires_what_it_dropped() {
        let mut window = Window::new(3, 10);
        assert_eq!(miss(window.since(9)), Some(Miss::BeforeList));
        for r in [11, 13, 14] {
            window.push(event(r));
        }
        assert_eq!(
            window.since(10).map(|e| revisions(&e)),
            Ok(vec![11, 13, 14])
        );
        assert_eq!(window.since(12).map(|e| revisions(&e)), Ok(vec![13, 14]));
        assert_eq!(window.since(20).map(|e| revisions(&e)), Ok(vec![]));
        window.push(event(15));
        assert_eq!(window.len(), 3);
        assert_eq!(miss(window.since(10)), Some(Miss::Expired { floor: 11 }));
        assert_eq!(
            window.since(11).map(|e| revisions(&e)),
            Ok(vec![13, 14, 15])
        );
        window.reset(30);
        assert!(window.is_empty());
        assert_eq!(miss(window.since(29)), Some(Miss::BeforeList));
    }
}

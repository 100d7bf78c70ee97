//! Crash-loop back-off with the kubelet's numbers: a container's first restart is immediate,
//! each later one waits 10 s, doubling to 5 min; a container that ran for 10 min starts over.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// First back-off.
pub const INITIAL: Duration = Duration::from_secs(10);
/// Longest back-off.
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: SystemTime,
}

/// Back-off state per container name.
#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<String, Entry>,
}

impl Backoff {
    /// If the container that exited at `finished` must still wait at `now`, until when.
    pub fn wait_until(
        &self,
        key: &str,
        finished: SystemTime,
        now: SystemTime,
    ) -> Option<SystemTime> {
        let entry = self.entries.get(key)?;
        if self.expired(entry, finished) {
            return None;
        }
        let until = finished + entry.backoff;
        (now < until).then_some(until)
    }

    /// Records a restart of the container that exited at `finished`: the next wait doubles.
    pub fn record_restart(&mut self, key: &str, finished: SystemTime) {
        let next = match self.entries.get(key) {
            Some(entry) if !self.expired(entry, finished) => (entry.backoff * 2).min(MAX),
            _ => INITIAL,
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                backoff: next,
                last_update: finished,
            },
        );
    }

    /// The current back-off of `key`, if any.
    pub fn current(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.backoff)
    }

    /// A container that ran longer than twice the maximum since the last restart starts over.
    fn expired(&self, entry: &Entry, event: SystemTime) -> bool {
        event
            .duration_since(entry.last_update)
            .is_ok_and(|elapsed| elapsed > MAX * 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_restart_is_immediate_then_doubles_to_the_cap() {
        let mut b = Backoff::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(b.wait_until("c", t0, t0), None, "first restart at once");
        b.record_restart("c", t0);
        let mut finished = t0 + Duration::from_secs(1);
        let mut expected = INITIAL;
        for _ in 0..8 {
            let until = b.wait_until("c", finished, finished).expect("in back-off");
            assert_eq!(until.duration_since(finished).unwrap(), expected);
            b.record_restart("c", finished);
            finished = until + Duration::from_secs(1);
            expected = (expected * 2).min(MAX);
        }
        assert_eq!(b.current("c"), Some(MAX));
    }

    #[test]
    fn ten_minutes_of_running_resets() {
        let mut b = Backoff::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        b.record_restart("c", t0);
        b.record_restart("c", t0 + Duration::from_secs(20));
        let late = t0 + Duration::from_secs(20 + 601);
        assert_eq!(b.wait_until("c", late, late), None);
        b.record_restart("c", late);
        assert_eq!(b.current("c"), Some(INITIAL));
    }
}

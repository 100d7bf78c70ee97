//! The rate at which nodes get fresh NoExecute taints (and so have their pods evicted):
//! upstream's `--node-eviction-rate` token bucket (0.1 nodes per second, burst 1), here one
//! bucket for the whole cluster instead of one per zone, with no secondary rate for large
//! disrupted zones and no halt when a whole zone is down.

use std::time::{Duration, Instant};

/// `--node-eviction-rate`: nodes per second.
pub const NODE_EVICTION_RATE: f64 = 0.1;

/// A token bucket with a burst of one.
#[derive(Debug)]
pub struct Limiter {
    interval: Duration,
    next: Option<Instant>,
}

impl Limiter {
    /// A bucket refilling at `per_second`.
    pub fn new(per_second: f64) -> Limiter {
        Limiter {
            interval: Duration::from_secs_f64(1.0 / per_second.max(f64::MIN_POSITIVE)),
            next: None,
        }
    }

    /// Whether a token is there at `now` (without taking it).
    pub fn ready(&self, now: Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }

    /// Takes the token at `now`.
    pub fn take(&mut self, now: Instant) {
        self.next = Some(now + self.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_at_once_then_one_per_interval() {
        let mut limiter = Limiter::new(0.5);
        let start = Instant::now();
        assert!(limiter.ready(start));
        limiter.take(start);
        assert!(!limiter.ready(start + Duration::from_secs(1)));
        assert!(limiter.ready(start + Duration::from_secs(2)));
    }
}

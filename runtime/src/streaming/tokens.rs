//! Single-use tokens for streaming URLs: the Exec/Attach/PortForward RPC registers what to
//! stream and gets a token; the first request carrying it takes it, and unused tokens expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a URL stays valid, as the kubelet's streaming server (1 minute).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);

/// Pending requests by token.
#[derive(Debug)]
pub struct Tokens<T> {
    ttl: Duration,
    pending: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T> Tokens<T> {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Tokens {
            ttl,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Registers `value`; returns its token (unguessable: 128 random bits).
    pub fn insert(&self, value: T) -> String {
        let token = crate::pods::record::new_id()[..32].to_string();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        pending.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        pending.insert(token.clone(), (now, value));
        token
    }

    /// Takes the value of `token`, once, if it has not expired.
    pub fn take(&self, token: &str) -> Option<T> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (at, value) = pending.remove(token)?;
        (at.elapsed() < self.ttl).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_expire() {
        let tokens = Tokens::new(Duration::from_millis(50));
        let a = tokens.insert(1);
        let b = tokens.insert(2);
        assert_ne!(a, b);
        assert_eq!(tokens.take(&a), Some(1));
        assert_eq!(tokens.take(&a), None, "used once");
        assert_eq!(tokens.take("nope"), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(tokens.take(&b), None, "expired");
    }
}

//! Unique names for test resources, so parallel tests and leftover runs never collide.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Returns `prefix-<pid>-<n>-<nanos>` shortened to at most `max_len` bytes (netns and link names
/// are limited to 15 bytes, so callers pass their own limit).
pub fn unique(prefix: &str, max_len: usize) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Hex keeps the suffix short; pid and counter make it unique within a host, nanos across
    // reused pids.
    let suffix = format!("{:x}{:x}{:x}", std::process::id(), n, nanos % 0xffff);
    let keep = max_len.saturating_sub(suffix.len() + 1).min(prefix.len());
    let mut name = format!("{}-{}", &prefix[..keep], suffix);
    name.truncate(max_len);
    name
}

#[cfg(test)]
mod tests {
    use super::unique;

    #[test]
    fn names_are_unique_and_bounded() {
        let a = unique("capstan-test", 15);
        let b = unique("capstan-test", 15);
        assert_ne!(a, b);
        assert!(a.len() <= 15, "{a} is longer than 15 bytes");
        assert!(a.starts_with("cap"), "{a} lost its prefix");
    }
}

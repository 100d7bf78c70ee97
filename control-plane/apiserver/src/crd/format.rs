//! String formats and patterns of schemas: what `format: email` and friends accept, as
//! upstream's validator, and `pattern` regular expressions compiled once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};

use base64::Engine;

/// Patterns compiled once: they come from definitions, not from requests.
pub fn pattern(pattern: &str) -> Option<regex::Regex> {
    /// Past this many patterns the cache starts over, so a definition churning its patterns
    /// cannot grow it without end.
    const MAX_PATTERNS: usize = 1024;
    static CACHE: OnceLock<Mutex<HashMap<String, regex::Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = cache.get(pattern) {
        return Some(found.clone());
    }
    let re = regex::Regex::new(pattern).ok()?;
    if cache.len() >= MAX_PATTERNS {
        cache.clear();
    }
    cache.insert(pattern.to_string(), re.clone());
    Some(re)
}

/// Whether `text` is of string format `format`; unknown formats accept anything, as upstream.
pub fn matches(format: &str, text: &str) -> bool {
    let all = |s: &str, f: fn(char) -> bool| !s.is_empty() && s.chars().all(f);
    match format {
        "date-time" | "datetime" => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
        "ipv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => text.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => text.parse::<ipnet::IpNet>().is_ok(),
        "byte" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .is_ok(),
        "uuid" | "uuid3" | "uuid4" | "uuid5" => {
            let parts: Vec<&str> = text.split('-').collect();
            parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
                && parts.iter().all(|p| all(p, |c| c.is_ascii_hexdigit()))
        }
        "hostname" => crate::validation::is_dns_subdomain(&text.to_ascii_lowercase()),
        "email" => match text.split_once('@') {
            Some((user, domain)) => {
                !user.is_empty()
                    && !user.contains(char::is_whitespace)
                    && domain.contains('.')
                    && crate::validation::is_dns_subdomain(&domain.to_ascii_lowercase())
            }
            None => false,
        },
        "mac" => {
            let parts: Vec<&str> = text.split([':', '-']).collect();
            matches!(parts.len(), 6 | 8 | 20)
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && all(p, |c| c.is_ascii_hexdigit()))
        }
        "uri" => text.split_once(':').is_some_and(|(scheme, _)| {
            all(scheme, |c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }),
        "ip" => text.parse::<IpAddr>().is_ok(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert!(matches("date-time", "2024-01-02T03:04:05Z"));
        assert!(!matches("date-time", "yesterday"));
        assert!(matches("uuid", "123e4567-e89b-12d3-a456-426614174000"));
        assert!(matches("cidr", "10.0.0.0/8") && !matches("ipv4", "10.0.0"));
        assert!(matches("whatever", "x"));
        assert!(pattern("^[a-z]+$").is_some_and(|re| re.is_match("abc")));
        assert!(pattern("(").is_none());
    }
}

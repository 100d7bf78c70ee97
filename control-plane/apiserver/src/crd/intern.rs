//! Interning of the strings custom kinds are made of. [`Kind`](crate::kinds::Kind) holds
//! `&'static str`s so that the built-in rows cost nothing; a CustomResourceDefinition's names
//! are leaked once per distinct value here, so deleting and recreating a CRD (or every API
//! server on a store learning of it) does not grow memory.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

fn strings() -> &'static Mutex<HashSet<&'static str>> {
    static STRINGS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    STRINGS.get_or_init(|| Mutex::new(HashSet::new()))
}

fn lists() -> &'static Mutex<HashSet<&'static [&'static str]>> {
    static LISTS: OnceLock<Mutex<HashSet<&'static [&'static str]>>> = OnceLock::new();
    LISTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// The one `'static` copy of `text`.
pub fn string(text: &str) -> &'static str {
    // A poisoned set is still a valid set: a panic elsewhere cannot leave it half-inserted.
    let mut set = strings().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(text) {
        return found;
    }
    let leaked: &'static str = Box::leak(text.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// The one `'static` copy of a list of strings (short names, categories).
pub fn list(items: &[String]) -> &'static [&'static str] {
    if items.is_empty() {
        return &[];
    }
    let interned: Vec<&'static str> = items.iter().map(|s| string(s)).collect();
    let mut set = lists().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(interned.as_slice()) {
        return found;
    }
    let leaked: &'static [&'static str] = Box::leak(interned.into_boxed_slice());
    set.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_is_the_same_pointer() {
        let a = string(&format!("widgets{}", 1));
        let b = string("widgets1");
        assert!(std::ptr::eq(a, b));
        let l1 = list(&["w".to_string(), "wd".to_string()]);
        let l2 = list(&["w".to_string(), "wd".to_string()]);
        assert!(std::ptr::eq(l1, l2));
        assert_eq!(l1, &["w", "wd"]);
    }
}

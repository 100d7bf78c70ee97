//! Which NoExecute taints a pod tolerates, and for how long (upstream's
//! GetMatchingTolerations and getMinTolerationTime).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Taint, Toleration};

/// How long a pod may stay on a node with the given NoExecute taints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stay {
    /// A taint is not tolerated: evict now.
    None,
    /// Every taint is tolerated for at least this long.
    For(Duration),
    /// Every taint is tolerated for good.
    Forever,
}

/// Whether `toleration` tolerates `taint` (empty effect: any effect; empty key with Exists:
/// any key; Exists ignores the value; Equal, the default, compares it).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    let exists = toleration.operator.as_deref() == Some("Exists");
    if key.is_empty() {
        return exists;
    }
    if key != taint.key {
        return false;
    }
    exists || toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
}

/// How long a pod with `tolerations` may stay given `taints` (the NoExecute ones): each taint
/// is matched by the first toleration tolerating it, and the shortest tolerationSeconds of
/// those wins (negative counts as zero; none set means forever).
pub fn stay(taints: &[&Taint], tolerations: &[Toleration]) -> Stay {
    if taints.is_empty() {
        return Stay::Forever;
    }
    let mut shortest: Option<i64> = None;
    for taint in taints {
        let Some(toleration) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Stay::None;
        };
        if let Some(seconds) = toleration.toleration_seconds {
            let seconds = seconds.max(0);
            shortest = Some(shortest.map_or(seconds, |s| s.min(seconds)));
        }
    }
    match shortest {
        None => Stay::Forever,
        Some(seconds) => Stay::For(Duration::from_secs(seconds.unsigned_abs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            ..Taint::default()
        }
    }

    fn toleration(key: &str, operator: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some(operator.into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    #[test]
    fn untolerated_taint_evicts_now() {
        let t = taint("node.kubernetes.io/unreachable");
        assert_eq!(stay(&[&t], &[]), Stay::None);
        let other = toleration("other", "Exists", Some(5));
        assert_eq!(stay(&[&t], &[other]), Stay::None);
    }

    #[test]
    fn shortest_matching_seconds_win() {
        let a = taint("a");
        let b = taint("b");
        let tolerations = [
            toleration("a", "Exists", Some(30)),
            toleration("b", "Exists", Some(2)),
            toleration("", "Exists", None),
        ];
        assert_eq!(
            stay(&[&a, &b], &tolerations),
            Stay::For(Duration::from_secs(2))
        );
        assert_eq!(stay(&[&a], &tolerations[2..]), Stay::Forever);
        let negative = [toleration("a", "Exists", Some(-5))];
        assert_eq!(stay(&[&a], &negative), Stay::For(Duration::ZERO));
    }

    #[test]
    fn equal_compares_values() {
        let mut t = taint("k");
        t.value = Some("v".into());
        let mut equal = toleration("k", "Equal", None);
        assert!(!tolerates(&equal, &t));
        equal.value = Some("v".into());
        assert!(tolerates(&equal, &t));
    }
}

//! A namespace's Pod Security policy, from its `pod-security.kubernetes.io/*` labels, as the
//! upstream admission reads them (`PolicyToEvaluate`): a level and a version for each of
//! enforce, audit and warn, privileged and latest when unset.

use std::collections::BTreeMap;
use std::fmt;

use crate::status::Cause;

/// The newest policy version this server knows: what `latest` means (kube 1.33).
pub const LATEST_MINOR: u32 = 33;

const PREFIX: &str = "pod-security.kubernetes.io/";

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Anything goes.
    Privileged,
    /// Known privilege escalations refused.
    Baseline,
    /// Hardening best practice.
    Restricted,
}

impl Level {
    fn parse(text: &str) -> Option<Level> {
        match text {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// A policy version: `latest` or `v1.<minor>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The newest.
    Latest,
    /// `v1.<minor>`.
    Minor(u32),
}

impl Version {
    fn parse(text: &str) -> Option<Version> {
        if text == "latest" {
            return Some(Version::Latest);
        }
        let minor = text.strip_prefix("v1.")?;
        let canonical = minor == "0" || (!minor.starts_with('0') && !minor.is_empty());
        if !canonical || !minor.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        minor.parse().ok().map(Version::Minor)
    }

    /// The minor version whose checks apply: newer than this server's are its latest.
    pub fn effective_minor(self) -> u32 {
        match self {
            Version::Latest => LATEST_MINOR,
            Version::Minor(minor) => minor.min(LATEST_MINOR),
        }
    }
}

/// A level at a version, printed `restricted:latest` as upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelVersion {
    /// The level.
    pub level: Level,
    /// The version.
    pub version: Version,
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Version::Latest => write!(f, "{}:latest", self.level.as_str()),
            Version::Minor(minor) => write!(f, "{}:v1.{minor}", self.level.as_str()),
        }
    }
}

/// The three modes of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Violations are refused.
    pub enforce: LevelVersion,
    /// Violations are recorded in the audit log (which this server does not keep).
    pub audit: LevelVersion,
    /// Violations are warned about.
    pub warn: LevelVersion,
}

const PRIVILEGED: LevelVersion = LevelVersion {
    level: Level::Privileged,
    version: Version::Latest,
};

impl Policy {
    /// Whether nothing is checked.
    pub fn fully_privileged(&self) -> bool {
        [self.enforce, self.audit, self.warn]
            .iter()
            .all(|lv| lv.level == Level::Privileged)
    }
}

/// The policy of a namespace with `labels`, and the causes of labels that are invalid (which
/// fall back: enforce to restricted, audit and warn to privileged, versions to latest).
pub fn from_labels(labels: &BTreeMap<String, String>) -> (Policy, Vec<Cause>) {
    let mut policy = Policy {
        enforce: PRIVILEGED,
        audit: PRIVILEGED,
        warn: PRIVILEGED,
    };
    let mut causes = Vec::new();
    let mut invalid = |label: &str, value: &str, why: &str| {
        causes.push(Cause::invalid(
            &format!("metadata.labels[{label}]"),
            value,
            why,
        ));
    };
    let level_error = "must be one of privileged, baseline, restricted";
    let version_error = r#"must be "latest" or "v1.x""#;
    let mut enforce_set = false;
    let mut warn_level_set = false;
    let mut warn_version_set = false;
    for (mode, fallback) in [
        ("enforce", Level::Restricted),
        ("audit", Level::Privileged),
        ("warn", Level::Privileged),
    ] {
        let slot = match mode {
            "enforce" => &mut policy.enforce,
            "audit" => &mut policy.audit,
            _ => &mut policy.warn,
        };
        let label = format!("{PREFIX}{mode}");
        if let Some(value) = labels.get(&label) {
            match Level::parse(value) {
                Some(level) => {
                    slot.level = level;
                    enforce_set |= mode == "enforce";
                }
                None => {
                    slot.level = fallback;
                    invalid(&label, value, level_error);
                }
            }
            warn_level_set |= mode == "warn";
        }
        let label = format!("{PREFIX}{mode}-version");
        if let Some(value) = labels.get(&label) {
            match Version::parse(value) {
                Some(version) => slot.version = version,
                None => {
                    slot.version = Version::Latest;
                    invalid(&label, value, version_error);
                }
            }
            warn_version_set |= mode == "warn";
        }
    }
    // An enforce level alone also warns at that level, as upstream.
    if !warn_level_set && enforce_set && policy.enforce.level > policy.warn.level {
        policy.warn.level = policy.enforce.level;
        if !warn_version_set {
            policy.warn.version = policy.enforce.version;
        }
    }
    (policy, causes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect()
    }

    #[test]
    fn labels_give_levels_and_versions() {
        let (policy, causes) = from_labels(&labels(&[
            ("enforce", "baseline"),
            ("enforce-version", "v1.25"),
        ]));
        assert!(causes.is_empty());
        assert_eq!(policy.enforce.to_string(), "baseline:v1.25");
        assert_eq!(
            policy.warn.to_string(),
            "baseline:v1.25",
            "warn follows enforce"
        );
        assert_eq!(policy.audit.to_string(), "privileged:latest");
        let (policy, causes) =
            from_labels(&labels(&[("enforce", "strict"), ("warn-version", "1.2")]));
        assert_eq!(policy.enforce.level, Level::Restricted, "fails closed");
        assert_eq!(
            causes[0].message,
            "Invalid value: \"strict\": must be one of privileged, baseline, restricted"
        );
        assert_eq!(
            causes[0].field,
            "metadata.labels[pod-security.kubernetes.io/enforce]"
        );
        assert_eq!(
            causes[1].message,
            "Invalid value: \"1.2\": must be \"latest\" or \"v1.x\""
        );
        assert_eq!(
            Version::parse("v1.99").map(Version::effective_minor),
            Some(33)
        );
        assert_eq!(Version::parse("v1.01"), None);
    }
}

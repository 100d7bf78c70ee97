//! The CNI spec versions this library speaks and how they compare.

use crate::error::{CniError, ErrorCode};

/// Every version our plugins accept in `cniVersion`, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest supported version, used when the caller names none (e.g. VERSION with empty stdin).
pub const LATEST: &str = "1.1.0";

/// Parses "MAJOR.MINOR.PATCH" into a comparable tuple.
pub fn parse(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().unwrap_or("0").parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

/// Checks that `version` is one we support (error code 1 otherwise).
pub fn ensure_supported(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        return Ok(());
    }
    Err(CniError::new(
        ErrorCode::IncompatibleVersion,
        format!(
            "cniVersion {version:?} is not supported; supported versions: {}",
            SUPPORTED_VERSIONS.join(", ")
        ),
    ))
}

/// True when `version` is at least `min` (unparsable versions compare as oldest).
pub fn at_least(version: &str, min: (u32, u32, u32)) -> bool {
    parse(version).is_some_and(|v| v >= min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare() {
        assert!(at_least("1.1.0", (1, 1, 0)));
        assert!(at_least("1.0.0", (0, 4, 0)));
        assert!(!at_least("0.4.0", (1, 0, 0)));
        assert!(!at_least("garbage", (0, 1, 0)));
        assert_eq!(parse("0.3"), Some((0, 3, 0)));
    }

    #[test]
    fn unsupported_version_is_code_1() {
        assert!(ensure_supported("1.0.0").is_ok());
        let err = ensure_supported("0.2.0").unwrap_err();
        assert_eq!(err.code, 1);
        assert!(err.msg.contains("0.2.0"));
    }
}

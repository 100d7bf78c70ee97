//! Go durations ("10s", "1m30s", "20ms", "1.5h", "2h0m0s"), the format of every duration in a
//! KubeletConfiguration (metav1.Duration).

use std::time::Duration;

use thiserror::Error;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    /// Not the Go duration grammar.
    #[error("{0:?} is not a duration (expected e.g. \"10s\", \"1m30s\", \"20ms\", \"1.5h\")")]
    Syntax(String),
    /// A unit other than ns, us, µs, ms, s, m, h.
    #[error("{0:?} has an unknown unit {1:?} (known: ns, us, ms, s, m, h)")]
    Unit(String, String),
    /// Below zero: no configured interval may be.
    #[error("{0:?} is negative")]
    Negative(String),
    /// Beyond what a Duration holds.
    #[error("{0:?} is too large")]
    Overflow(String),
}

/// Parses a Go duration: a sequence of decimal numbers, each with an optional fraction and a
/// unit, or a bare "0". Negative durations are refused: every configured interval is a length
/// of time.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let syntax = || DurationError::Syntax(text.to_string());
    let overflow = || DurationError::Overflow(text.to_string());
    let mut s = text.trim();
    if let Some(rest) = s.strip_prefix('-') {
        if rest
            .trim_start_matches(['0', '.'])
            .chars()
            .all(|c| c.is_ascii_alphabetic())
        {
            s = rest; // "-0s" is zero, as in Go
        } else {
            return Err(DurationError::Negative(text.to_string()));
        }
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(syntax());
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(syntax)?;
        let (number, tail) = rest.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(syntax());
        }
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(syntax()),
            other => return Err(DurationError::Unit(text.to_string(), other.to_string())),
        };
        if whole.len() > 20 {
            return Err(overflow());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| syntax())?
        };
        // Nanoseconds are the finest unit: fraction digits beyond them are dropped, as in Go.
        let mut fraction_nanos: u128 = 0;
        let mut scale = unit_nanos;
        for digit in fraction.bytes() {
            scale /= 10;
            fraction_nanos += u128::from(digit - b'0') * scale;
        }
        total = whole
            .checked_mul(unit_nanos)
            .and_then(|n| n.checked_add(fraction_nanos))
            .and_then(|n| n.checked_add(total))
            .ok_or_else(overflow)?;
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| overflow())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// Formats a duration the way Go prints it ("1m30s", "20ms", "0s"), for messages.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        return if nanos % 1_000_000 == 0 {
            format!("{}ms", nanos / 1_000_000)
        } else if nanos % 1_000 == 0 {
            format!("{}µs", nanos / 1_000)
        } else {
            format!("{nanos}ns")
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let sub = d.subsec_nanos();
    let seconds = if sub == 0 {
        format!("{s}s")
    } else {
        let fraction = format!("{sub:09}");
        format!("{s}.{}s", fraction.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        parse_duration(s).expect(s)
    }

    #[test]
    fn go_durations() {
        assert_eq!(d("10s"), Duration::from_secs(10));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        assert_eq!(d("20ms"), Duration::from_millis(20));
        assert_eq!(d("2h0m0s"), Duration::from_secs(7200));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d(".5s"), Duration::from_millis(500));
        assert_eq!(d("1h2m3s4ms5us6ns"), Duration::new(3723, 4_005_006));
        assert_eq!(d("3µs"), Duration::from_micros(3));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("0s"), Duration::ZERO);
        assert_eq!(d("-0s"), Duration::ZERO);
        assert_eq!(d("+5m"), Duration::from_secs(300));
        assert_eq!(
            d("1.0000000001s"),
            Duration::from_secs(1),
            "beyond ns is dropped"
        );
    }

    #[test]
    fn refused() {
        for bad in ["", "10", "s", "1..5s", "1s2", "ten seconds", "1 s", "."] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
        assert_eq!(
            parse_duration("5d"),
            Err(DurationError::Unit("5d".into(), "d".into()))
        );
        assert_eq!(
            parse_duration("-1s"),
            Err(DurationError::Negative("-1s".into()))
        );
        assert!(matches!(
            parse_duration("99999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h0m0s");
        assert_eq!(format_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}

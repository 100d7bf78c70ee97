//! Kubernetes resource quantities ("100m", "1.5", "1Gi", "500M", "1e3"), parsed exactly.
//!
//! k8s-openapi's `Quantity` is only the string; the configuration needs numbers it can compare
//! and add, so this parser keeps the value exact to the milli-unit with integer arithmetic (no
//! floating point, so "0.1" is 100m and not 100.00000000000001m) and rounds up what is finer,
//! as the API server's `MilliValue` does.

use std::fmt;

use thiserror::Error;

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    /// Not the quantity grammar: `<sign><digits>[.<digits>][<suffix>]`.
    #[error(
        "{0:?} is not a quantity (expected a number with an optional suffix such as m, Ki, Mi, Gi, k, M, G or e3)"
    )]
    Syntax(String),
    /// The suffix is none of the known ones.
    #[error(
        "{0:?} has an unknown suffix {1:?} (known: n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei, e<N>)"
    )]
    Suffix(String, String),
    /// Too large to hold.
    #[error("{0:?} is too large")]
    Overflow(String),
}

/// An exact quantity, in thousandths of the unit (bytes, cores, counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    millis: i128,
}

/// Digits beyond this many would not fit the arithmetic below; no real quantity has them.
const MAX_DIGITS: usize = 30;

impl Quantity {
    /// A quantity of `n` whole units.
    pub fn from_units(n: i64) -> Self {
        Quantity {
            millis: i128::from(n) * 1000,
        }
    }

    /// Parses the Kubernetes quantity grammar: an optionally signed decimal number followed by
    /// a binary suffix (Ki..Ei), a decimal suffix (n, u, m, "", k, M..E) or an exponent (e3, E-2).
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let syntax = || QuantityError::Syntax(text.to_string());
        let overflow = || QuantityError::Overflow(text.to_string());
        let s = text.trim();
        let (negative, s) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let number_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(syntax());
        }
        if whole.len() + fraction.len() > MAX_DIGITS {
            return Err(overflow());
        }
        // The mantissa is every digit; the fraction's length is a negative power of ten.
        let mut mantissa: i128 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa * 10 + i128::from(digit - b'0');
        }
        let (pow10, pow2) = suffix_powers(text, suffix)?;
        // millis = mantissa * 2^pow2 * 10^(pow10 - fraction digits + 3)
        let exponent = i64::from(pow10) - fraction.len() as i64 + 3;
        let mut numerator = mantissa.checked_mul(1i128 << pow2).ok_or_else(overflow)?;
        let millis = if exponent >= 0 {
            let scale = 10i128.checked_pow(u32::try_from(exponent).map_err(|_| overflow())?);
            if numerator == 0 {
                0
            } else {
                numerator
                    .checked_mul(scale.ok_or_else(overflow)?)
                    .ok_or_else(overflow)?
            }
        } else {
            // Finer than a milli-unit: round up, as the API server does.
            match 10i128.checked_pow(u32::try_from(-exponent).map_err(|_| overflow())?) {
                Some(scale) => {
                    let rounded = numerator / scale + i128::from(numerator % scale != 0);
                    numerator = rounded;
                    numerator
                }
                None => i128::from(numerator != 0),
            }
        };
        Ok(Quantity {
            millis: if negative { -millis } else { millis },
        })
    }

    /// The value in thousandths of the unit (millicores for cpu), saturating at i64's range.
    pub fn milli_value(self) -> i64 {
        saturate(self.millis)
    }

    /// The value in whole units (bytes for memory), rounded up, saturating at i64's range.
    pub fn value(self) -> i64 {
        let whole = self.millis.div_euclid(1000) + i128::from(self.millis.rem_euclid(1000) != 0);
        saturate(whole)
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(self) -> bool {
        self.millis < 0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis % 1000 == 0 {
            write!(f, "{}", self.millis / 1000)
        } else {
            write!(f, "{}m", self.millis)
        }
    }
}

fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// The powers of ten and of two a suffix stands for.
fn suffix_powers(text: &str, suffix: &str) -> Result<(i32, u32), QuantityError> {
    let known = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exponent = suffix
                .strip_prefix(['e', 'E'])
                .filter(|e| !e.is_empty())
                .ok_or_else(|| QuantityError::Suffix(text.to_string(), suffix.to_string()))?;
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(QuantityError::Syntax(text.to_string()));
            }
            let value: i32 = exponent
                .parse()
                .map_err(|_| QuantityError::Overflow(text.to_string()))?;
            if value.abs() > 60 {
                return Err(QuantityError::Overflow(text.to_string()));
            }
            (value, 0)
        }
    };
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn milli(s: &str) -> i64 {
        Quantity::parse(s).expect(s).milli_value()
    }
    fn units(s: &str) -> i64 {
        Quantity::parse(s).expect(s).value()
    }

    #[test]
    fn decimal_and_milli() {
        assert_eq!(milli("100m"), 100);
        assert_eq!(milli("1.5"), 1500);
        assert_eq!(milli("0.1"), 100);
        assert_eq!(milli(".5"), 500);
        assert_eq!(milli("2"), 2000);
        assert_eq!(milli("1."), 1000);
        assert_eq!(milli("0"), 0);
        assert_eq!(milli("+3"), 3000);
        assert_eq!(milli("-250m"), -250);
    }

    #[test]
    fn suffixes() {
        assert_eq!(units("1Gi"), 1 << 30);
        assert_eq!(units("1.5Gi"), 3 << 29);
        assert_eq!(units("64Ki"), 65536);
        assert_eq!(units("500M"), 500_000_000);
        assert_eq!(units("10Mi"), 10 << 20);
        assert_eq!(units("1k"), 1000);
        assert_eq!(units("2T"), 2_000_000_000_000);
        assert_eq!(units("1Ei"), 1 << 60);
        assert_eq!(units("8E"), 8_000_000_000_000_000_000);
    }

    #[test]
    fn exponents() {
        assert_eq!(units("1e3"), 1000);
        assert_eq!(units("1E3"), 1000);
        assert_eq!(units("1.5e2"), 150);
        assert_eq!(milli("5e-3"), 5);
        assert_eq!(units("12e+1"), 120);
    }

    #[test]
    fn finer_than_milli_rounds_up() {
        assert_eq!(milli("1u"), 1);
        assert_eq!(milli("100n"), 1);
        assert_eq!(milli("0.0001"), 1);
        assert_eq!(milli("0n"), 0);
        assert_eq!(units("100m"), 1, "whole units round up too");
        assert_eq!(units("1500m"), 2);
    }

    #[test]
    fn large_values_saturate_or_fail() {
        assert_eq!(units("9Ei"), i64::MAX, "beyond i64 saturates");
        assert!(matches!(
            Quantity::parse("1e61"),
            Err(QuantityError::Overflow(_))
        ));
        assert!(matches!(
            Quantity::parse("1234567890123456789012345678901"),
            Err(QuantityError::Overflow(_))
        ));
    }

    #[test]
    fn malformed() {
        for bad in [
            "", "m", "Gi", "1x", "1 Gi", "1e", "1e+", "1ee3", "1..2", "--1", "1Kii", "abc",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should fail");
        }
        assert!(
            Quantity::parse("1x")
                .unwrap_err()
                .to_string()
                .contains("unknown suffix \"x\""),
        );
    }

    #[test]
    fn display() {
        assert_eq!(Quantity::parse("1.5").unwrap().to_string(), "1500m");
        assert_eq!(Quantity::parse("1k").unwrap().to_string(), "1000");
        assert_eq!(Quantity::from_units(3).to_string(), "3");
    }
}

//! Kubernetes resource quantities (`500m`, `1Gi`, `1e3`): parsed exactly, compared, added, and
//! printed in kube's canonical form (`1000m` prints `1`, `1024Mi` prints `1Gi`), as the
//! messages of LimitRanger and ResourceQuota show them. k8s-openapi's `Quantity` is a string.

use std::cmp::Ordering;
use std::fmt;

/// How a quantity was written, which decides how it prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Powers of 1024: `Ki`, `Mi`, `Gi`...
    BinarySi,
    /// Powers of 1000 and no suffix: `m`, `k`, `M`, `G`...
    DecimalSi,
    /// `e` notation: `1e3`, `5E-3`.
    DecimalExponent,
}

/// A quantity, held exactly in billionths (kube rounds finer values up to `1n`).
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

/// Why a string is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not of kube's quantity syntax.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Syntax,
    /// Too large to hold.
    #[error("quantity is too large")]
    TooLarge,
}

const NANOS: i128 = 1_000_000_000;

impl Quantity {
    /// Zero, printed as decimal.
    pub const ZERO: Quantity = Quantity {
        nanos: 0,
        format: Format::DecimalSi,
    };

    /// Parses kube's syntax: `[+-]digits[.digits]` then a suffix.
    pub fn parse(text: &str) -> Result<Quantity, QuantityError> {
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(QuantityError::Syntax);
        }
        let (format, base, power) = parse_suffix(suffix)?;
        // value = digits / 10^len(fraction) * base^power, in nanos, rounded up.
        let digits: String = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(QuantityError::TooLarge);
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| QuantityError::Syntax)?
        };
        let scale = fraction.len() as i32;
        let mut numerator = mantissa.checked_mul(NANOS).ok_or(QuantityError::TooLarge)?;
        let mut denominator: i128 = 1;
        let mut exponent = power - if base == 10 { scale } else { 0 };
        if base == 1024 {
            for _ in 0..power {
                numerator = numerator.checked_mul(1024).ok_or(QuantityError::TooLarge)?;
            }
            exponent = -scale;
        }
        while exponent > 0 {
            numerator = numerator.checked_mul(10).ok_or(QuantityError::TooLarge)?;
            exponent -= 1;
        }
        while exponent < 0 {
            denominator = denominator.checked_mul(10).ok_or(QuantityError::TooLarge)?;
            exponent += 1;
        }
        let nanos = (numerator + denominator - 1) / denominator;
        if nanos > 10_i128.pow(37) {
            return Err(QuantityError::TooLarge);
        }
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// A whole number of units, printed as decimal.
    pub fn from_units(units: i64) -> Quantity {
        Quantity {
            nanos: i128::from(units) * NANOS,
            format: Format::DecimalSi,
        }
    }

    /// How it prints.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether it is zero.
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// The value in thousandths, rounded up (kube's `MilliValue`).
    pub fn milli_value(&self) -> i128 {
        div_ceil(self.nanos, 1_000_000)
    }

    /// The value in units, rounded up (kube's `Value`).
    pub fn value(&self) -> i128 {
        div_ceil(self.nanos, NANOS)
    }

    /// The value as a float, for ratios.
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANOS as f64
    }

    /// The sum; it prints as `self` does (as `other` when `self` is zero, as kube's `Add`).
    pub fn add(&self, other: &Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_add(other.nanos),
            format: if self.nanos == 0 {
                other.format
            } else {
                self.format
            },
        }
    }

    /// The difference; it prints as `self` does.
    pub fn sub(&self, other: &Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos.saturating_sub(other.nanos),
            format: self.format,
        }
    }

    /// The larger of the two.
    pub fn max(self, other: Quantity) -> Quantity {
        if other > self { other } else { self }
    }
}

fn div_ceil(value: i128, by: i128) -> i128 {
    let quotient = value / by;
    if value % by > 0 {
        quotient + 1
    } else {
        quotient
    }
}

/// The suffix's format, base and power (of 1024 for binary, of 10 otherwise).
fn parse_suffix(suffix: &str) -> Result<(Format, i128, i32), QuantityError> {
    let decimal = |power| Ok((Format::DecimalSi, 10, power));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => Ok((Format::BinarySi, 1024, 1)),
        "Mi" => Ok((Format::BinarySi, 1024, 2)),
        "Gi" => Ok((Format::BinarySi, 1024, 3)),
        "Ti" => Ok((Format::BinarySi, 1024, 4)),
        "Pi" => Ok((Format::BinarySi, 1024, 5)),
        "Ei" => Ok((Format::BinarySi, 1024, 6)),
        _ => {
            let exponent = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or(QuantityError::Syntax)?;
            let digits = exponent.trim_start_matches(['+', '-']);
            if digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || exponent.len() - digits.len() > 1
            {
                return Err(QuantityError::Syntax);
            }
            let power: i32 = exponent.parse().map_err(|_| QuantityError::TooLarge)?;
            if power.abs() > 40 {
                return Err(QuantityError::TooLarge);
            }
            Ok((Format::DecimalExponent, 10, power))
        }
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Quantity, QuantityError> {
        Quantity::parse(text)
    }
}

/// Decimal suffixes by power of 1000, from `n` (10^-9) to `E` (10^18).
const DECIMAL_SUFFIXES: &[(i32, &str)] = &[
    (6, "E"),
    (5, "P"),
    (4, "T"),
    (3, "G"),
    (2, "M"),
    (1, "k"),
    (0, ""),
    (-1, "m"),
    (-2, "u"),
    (-3, "n"),
];

const BINARY_SUFFIXES: &[(u32, &str)] = &[
    (6, "Ei"),
    (5, "Pi"),
    (4, "Ti"),
    (3, "Gi"),
    (2, "Mi"),
    (1, "Ki"),
];

impl fmt::Display for Quantity {
    /// kube's canonical form: the largest suffix of the quantity's format that leaves a whole
    /// mantissa; binary quantities under 1024 or with a fraction print as decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let whole = self.nanos % NANOS == 0;
        if self.format == Format::BinarySi && whole && self.nanos.abs() >= 1024 * NANOS {
            let units = self.nanos / NANOS;
            for (power, suffix) in BINARY_SUFFIXES {
                let unit = 1024_i128.pow(*power);
                if units % unit == 0 {
                    return write!(f, "{}{suffix}", units / unit);
                }
            }
            return write!(f, "{units}");
        }
        for (power, suffix) in DECIMAL_SUFFIXES {
            let unit = 10_i128.pow((3 * (power + 3)) as u32);
            if self.nanos % unit == 0 {
                let mantissa = self.nanos / unit;
                return match self.format {
                    Format::DecimalExponent if *power != 0 => {
                        write!(f, "{mantissa}e{}", 3 * power)
                    }
                    Format::DecimalExponent => write!(f, "{mantissa}"),
                    _ => write!(f, "{mantissa}{suffix}"),
                };
            }
        }
        write!(f, "{}n", self.nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        match Quantity::parse(text) {
            Ok(q) => q,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn suffixes_scale_exactly() {
        assert_eq!(q("500m").milli_value(), 500);
        assert_eq!(q("1").milli_value(), 1000);
        assert_eq!(q("1k").value(), 1000);
        assert_eq!(q("1Ki").value(), 1024);
        assert_eq!(q("1Mi").value(), 1 << 20);
        assert_eq!(q("1M").value(), 1_000_000);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("2Gi").value(), 2 << 30);
        assert_eq!(q("1Ei").value(), 1 << 60);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
        assert_eq!(q("0.1").milli_value(), 100);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("100n").milli_value(), 1, "rounded up");
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E3").value(), 1000);
        assert_eq!(q("5e-3").milli_value(), 5);
        assert_eq!(q("-1").value(), -1);
        assert_eq!(q("+2").value(), 2);
    }

    #[test]
    fn bad_syntax_is_refused() {
        for bad in ["", "abc", "1x", "1.2.3", "Mi", "1e", "1e+-3", "1 Mi", "."] {
            assert_eq!(
                Quantity::parse(bad).err(),
                Some(QuantityError::Syntax),
                "{bad}"
            );
        }
        assert_eq!(Quantity::parse("1e99").err(), Some(QuantityError::TooLarge));
    }

    #[test]
    fn comparison_crosses_formats() {
        assert!(q("1") > q("500m"));
        assert_eq!(q("1000m"), q("1"));
        assert_eq!(q("1Gi"), q("1024Mi"));
        assert!(q("1G") < q("1Gi"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("100m").add(&q("900m")), q("1"));
        assert_eq!(q("2").sub(&q("500m")), q("1500m"));
    }

    #[test]
    fn prints_canonically_as_kube() {
        for (text, canonical) in [
            ("1", "1"),
            ("1000m", "1"),
            ("500m", "500m"),
            ("1500m", "1500m"),
            ("0.5", "500m"),
            ("2000", "2k"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("0.5Gi", "512Mi"),
            ("512", "512"),
            ("100Ki", "100Ki"),
            ("1e3", "1e3"),
            ("1E6", "1e6"),
            ("0", "0"),
            ("0Mi", "0"),
            ("1.5", "1500m"),
            ("-500m", "-500m"),
            ("128974848", "128974848"),
            ("129e6", "129e6"),
            ("123Mi", "123Mi"),
        ] {
            assert_eq!(q(text).to_string(), canonical, "{text}");
        }
        assert_eq!(q("1Mi").add(&q("1Mi")).to_string(), "2Mi");
        assert_eq!(Quantity::ZERO.add(&q("1Gi")).to_string(), "1Gi");
    }
}

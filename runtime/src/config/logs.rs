//! The `[logs]` section: how large a container's live log may grow and how many files of it
//! are kept, as the kubelet's `containerLogMaxSize` / `containerLogMaxFiles` say.

use serde::Deserialize;

use crate::monitor::logs::Rotation;

/// Smallest accepted `max_size`: the node agent's minimum for `containerLogMaxSize`, and room
/// for a few records, so a log is not rotated on every line.
pub const MIN_MAX_SIZE: u64 = 1024;

/// Fewest accepted `max_files`: the live file and one rotated file, as the kubelet requires.
pub const MIN_MAX_FILES: usize = 2;

/// Container log limits; unset values keep the kubelet's defaults (10Mi, 5 files).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// Largest size of the live log file: bytes, or a quantity like `"10Mi"`.
    #[serde(default)]
    pub max_size: Option<ByteSize>,
    /// Files kept per container, the live one included.
    #[serde(default)]
    pub max_files: Option<usize>,
}

impl LogsConfig {
    /// Whether the section sets anything.
    pub fn is_set(&self) -> bool {
        self.max_size.is_some() || self.max_files.is_some()
    }

    /// Checks the limits, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(ByteSize(size)) = self.max_size
            && size < MIN_MAX_SIZE
        {
            return Err(format!(
                "logs.max_size: {size} bytes is below the minimum of {MIN_MAX_SIZE}"
            ));
        }
        if let Some(files) = self.max_files
            && files < MIN_MAX_FILES
        {
            return Err(format!(
                "logs.max_files: {files} must be at least {MIN_MAX_FILES} (the live file and \
                 one rotated file)"
            ));
        }
        Ok(())
    }

    /// The rotation the pod monitors enforce.
    pub fn rotation(&self) -> Rotation {
        let default = Rotation::default();
        Rotation {
            max_size: self.max_size.map_or(default.max_size, |s| s.0),
            max_files: self.max_files.unwrap_or(default.max_files),
        }
    }
}

/// A size in bytes, written in the file as an integer or a Kubernetes-style quantity string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        let bytes = match Raw::deserialize(deserializer)? {
            Raw::Number(n) => u64::try_from(n)
                .map_err(|_| format!("logs.max_size: {n} must not be negative"))
                .map_err(serde::de::Error::custom)?,
            Raw::Text(text) => parse_quantity(&text)
                .map_err(|e| serde::de::Error::custom(format!("logs.max_size: {e}")))?,
        };
        Ok(ByteSize(bytes))
    }
}

/// Parses `"4096"`, `"10Mi"`, `"1.5Gi"`, `"100k"` into bytes (fractions round up, as a
/// Kubernetes quantity's value does).
pub fn parse_quantity(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {suffix:?} (use bytes, k, M, G, T, Ki, Mi, Gi or Ti)"
            ));
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(format!("{text:?} is not a size (e.g. 4096 or \"10Mi\")"));
    }
    let digits = format!("{whole}{fraction}");
    let scaled: u128 = digits
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    let divisor = 10u128
        .checked_pow(u32::try_from(fraction.len()).unwrap_or(u32::MAX))
        .ok_or_else(|| format!("{text:?} has too many decimals"))?;
    let bytes = (scaled * multiplier).div_ceil(divisor);
    u64::try_from(bytes).map_err(|_| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_quantity;

    #[test]
    fn quantities_are_read_in_bytes() {
        assert_eq!(parse_quantity("4096"), Ok(4096));
        assert_eq!(parse_quantity("10Mi"), Ok(10 << 20));
        assert_eq!(parse_quantity("1.5Ki"), Ok(1536));
        assert_eq!(parse_quantity("2k"), Ok(2000));
        assert_eq!(parse_quantity("0.001k"), Ok(1));
        assert_eq!(parse_quantity("0.0001k"), Ok(1), "fractions round up");
        for bad in ["", "Mi", "10mb", "1.2.3", "-5", "99999999999999999999Ti"] {
            assert!(parse_quantity(bad).is_err(), "{bad:?}");
        }
    }
}

//! Small value types of the configuration: reserved resources, eviction thresholds, a CIDR.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::quantity::Quantity;

/// Resources held back from pods (systemReserved, kubeReserved). Absent keys are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reserved {
    /// Millicores (`cpu`).
    pub cpu_millis: i64,
    /// Bytes (`memory`).
    pub memory: i64,
    /// Bytes (`ephemeral-storage`).
    pub ephemeral_storage: i64,
    /// Process IDs (`pid`).
    pub pids: i64,
}

/// One eviction threshold: an absolute amount or a share of capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// Bytes (or inodes, or pids), whatever the signal measures.
    Quantity(i64),
    /// Percent of capacity, above 0 and below 100.
    Percent(f64),
}

impl Threshold {
    /// The threshold as an amount, given the capacity of what the signal measures.
    pub fn amount(&self, capacity: i64) -> i64 {
        match *self {
            Threshold::Quantity(q) => q,
            Threshold::Percent(p) => (capacity as f64 * p / 100.0).round() as i64,
        }
    }

    /// Parses "100Mi" or "10%". `Ok(None)` is "0%" or "100%", which upstream reads as no
    /// threshold at all.
    pub fn parse(text: &str) -> Result<Option<Threshold>, String> {
        let text = text.trim();
        if let Some(percent) = text.strip_suffix('%') {
            let value: f64 = percent
                .parse()
                .map_err(|_| format!("{text:?} is not a percentage"))?;
            if value == 0.0 || value == 100.0 {
                return Ok(None);
            }
            if !(0.0..100.0).contains(&value) {
                return Err(format!("{text:?} must be between 0% and 100%"));
            }
            return Ok(Some(Threshold::Percent(value)));
        }
        let q = Quantity::parse(text).map_err(|e| e.to_string())?;
        if q.is_negative() {
            return Err(format!("{text:?} must not be negative"));
        }
        Ok(Some(Threshold::Quantity(q.value())))
    }
}

/// Hard eviction thresholds by signal; None: the signal does not evict.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EvictionThresholds {
    /// `memory.available`.
    pub memory_available: Option<Threshold>,
    /// `nodefs.available`.
    pub nodefs_available: Option<Threshold>,
    /// `nodefs.inodesFree`.
    pub nodefs_inodes_free: Option<Threshold>,
    /// `imagefs.available`.
    pub imagefs_available: Option<Threshold>,
    /// `imagefs.inodesFree`.
    pub imagefs_inodes_free: Option<Threshold>,
    /// `pid.available`.
    pub pid_available: Option<Threshold>,
}

/// Signals a KubeletConfiguration may name that Capstan does not evict on (yet).
pub const UNSUPPORTED_SIGNALS: &[&str] = &[
    "containerfs.available",
    "containerfs.inodesFree",
    "allocatableMemory.available",
];

impl EvictionThresholds {
    /// The kubelet's Linux defaults: memory.available<100Mi, nodefs.available<10%,
    /// nodefs.inodesFree<5%, imagefs.available<15%, imagefs.inodesFree<5%.
    pub fn kubelet_defaults() -> Self {
        EvictionThresholds {
            memory_available: Some(Threshold::Quantity(100 << 20)),
            nodefs_available: Some(Threshold::Percent(10.0)),
            nodefs_inodes_free: Some(Threshold::Percent(5.0)),
            imagefs_available: Some(Threshold::Percent(15.0)),
            imagefs_inodes_free: Some(Threshold::Percent(5.0)),
            pid_available: None,
        }
    }

    /// The slot for a signal name, None for a name that is not a supported signal.
    pub fn slot(&mut self, signal: &str) -> Option<&mut Option<Threshold>> {
        Some(match signal {
            "memory.available" => &mut self.memory_available,
            "nodefs.available" => &mut self.nodefs_available,
            "nodefs.inodesFree" => &mut self.nodefs_inodes_free,
            "imagefs.available" => &mut self.imagefs_available,
            "imagefs.inodesFree" => &mut self.imagefs_inodes_free,
            "pid.available" => &mut self.pid_available,
            _ => return None,
        })
    }
}

/// An IP network such as podCIDR "10.244.0.0/24".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address as written.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix_len: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a CIDR (expected e.g. \"10.244.0.0/24\")");
        let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix_len: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(format!(
                "{text:?}: prefix length {prefix_len} is above {max}"
            ));
        }
        Ok(Cidr { addr, prefix_len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(
            Threshold::parse("100Mi"),
            Ok(Some(Threshold::Quantity(100 << 20)))
        );
        assert_eq!(Threshold::parse("10%"), Ok(Some(Threshold::Percent(10.0))));
        assert_eq!(Threshold::parse("0%"), Ok(None));
        assert_eq!(Threshold::parse("100%"), Ok(None));
        assert!(Threshold::parse("120%").is_err());
        assert!(Threshold::parse("-1Mi").is_err());
        assert!(Threshold::parse("lots").is_err());
        assert_eq!(Threshold::Percent(10.0).amount(1000), 100);
        assert_eq!(Threshold::Quantity(5).amount(1000), 5);
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.244.0.0/24".parse().unwrap();
        assert_eq!(c.prefix_len, 24);
        assert_eq!(c.to_string(), "10.244.0.0/24");
        assert!("fd00::/64".parse::<Cidr>().is_ok());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!("nonsense/8".parse::<Cidr>().is_err());
    }
}

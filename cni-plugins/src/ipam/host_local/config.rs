//! host-local's `ipam` section: range sets, routes, data directory; validated on load.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use crate::config;
use crate::error::CniError;
use crate::result::{Dns, Route};

/// Where allocations live when `dataDir` is not set (the reference plugin's default, so both
/// implementations share state on one host).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, Deserialize)]
struct Outer {
    name: String,
    ipam: RawIpam,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(default)]
    subnet: Option<IpNet>,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    ranges: Vec<Vec<RawRange>>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    dns: Option<Dns>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    subnet: IpNet,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

/// One validated range: addresses `start..=end` of `subnet`, never the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet (network address, prefix length).
    pub subnet: IpNet,
    /// First allocatable address.
    pub start: IpAddr,
    /// Last allocatable address.
    pub end: IpAddr,
    /// Gateway reported in the result and skipped by allocation.
    pub gateway: Option<IpAddr>,
}

impl Range {
    /// True when `ip` may be handed out from this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.subnet.contains(&ip)
            && to_u128(ip) >= to_u128(self.start)
            && to_u128(ip) <= to_u128(self.end)
    }

    /// Number of addresses in `start..=end` (saturating for huge IPv6 ranges).
    pub fn size(&self) -> u128 {
        (to_u128(self.end) - to_u128(self.start)).saturating_add(1)
    }
}

/// A validated host-local config.
#[derive(Debug, Clone)]
pub struct HostLocalConf {
    /// Network name: the store's directory under `data_dir`.
    pub name: String,
    /// Range sets: one address is allocated from each set.
    pub range_sets: Vec<Vec<Range>>,
    /// Routes for the result.
    pub routes: Vec<Route>,
    /// Directory holding one subdirectory of allocations per network.
    pub data_dir: PathBuf,
    /// DNS for the result.
    pub dns: Option<Dns>,
}

/// An address as a number (IPv4 in the low 32 bits) for range arithmetic.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The inverse of [`to_u128`] in the family of `like`.
pub fn from_u128(n: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(u32::try_from(n).unwrap_or(u32::MAX).into()),
        IpAddr::V6(_) => IpAddr::V6(n.into()),
    }
}

impl HostLocalConf {
    /// Parses and validates the config, naming the field that is wrong.
    pub fn from_value(value: &Value) -> Result<Self, CniError> {
        let outer: Outer = config::parse(value)?;
        if outer.name.is_empty() || outer.name.contains('/') || outer.name.starts_with('.') {
            return Err(CniError::config(format!(
                "network config field `name` {:?} cannot be used as a directory name",
                outer.name
            )));
        }
        let ipam = outer.ipam;
        let mut raw_sets = ipam.ranges;
        if let Some(subnet) = ipam.subnet {
            // The pre-`ranges` form: one range set with one range.
            raw_sets.insert(
                0,
                vec![RawRange {
                    subnet,
                    range_start: ipam.range_start,
                    range_end: ipam.range_end,
                    gateway: ipam.gateway,
                }],
            );
        }
        if raw_sets.is_empty() {
            return Err(CniError::config(
                "network config field `ipam.ranges` is missing or empty (or set `ipam.subnet`)",
            ));
        }
        let mut range_sets = Vec::new();
        for (i, set) in raw_sets.into_iter().enumerate() {
            if set.is_empty() {
                return Err(CniError::config(format!(
                    "network config field `ipam.ranges[{i}]` is an empty range set"
                )));
            }
            let mut ranges = Vec::new();
            for (j, raw) in set.into_iter().enumerate() {
                let field = format!("ipam.ranges[{i}][{j}]");
                ranges.push(validate_range(raw, &field)?);
            }
            let v4 = ranges[0].subnet.addr().is_ipv4();
            if ranges.iter().any(|r| r.subnet.addr().is_ipv4() != v4) {
                return Err(CniError::config(format!(
                    "network config field `ipam.ranges[{i}]` mixes IPv4 and IPv6 ranges"
                )));
            }
            range_sets.push(ranges);
        }
        check_overlaps(&range_sets)?;
        Ok(Self {
            name: outer.name,
            range_sets,
            routes: ipam.routes,
            data_dir: ipam
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            dns: ipam.dns,
        })
    }
}

fn validate_range(raw: RawRange, field: &str) -> Result<Range, CniError> {
    let subnet = raw.subnet.trunc();
    let max = subnet.max_prefix_len();
    if subnet.prefix_len() + 2 > max {
        return Err(CniError::config(format!(
            "network config field `{field}.subnet` {} is too small: it needs at least 2 host bits",
            raw.subnet
        )));
    }
    let network = to_u128(subnet.network());
    let last = to_u128(subnet.broadcast());
    // The network address and the last (broadcast for IPv4) address are never handed out.
    let first_host = from_u128(network + 1, subnet.addr());
    let last_host = from_u128(last - 1, subnet.addr());
    let within = |ip: IpAddr, name: &str| {
        if subnet.contains(&ip) && ip.is_ipv4() == subnet.addr().is_ipv4() {
            Ok(ip)
        } else {
            Err(CniError::config(format!(
                "network config field `{field}.{name}` {ip} is outside subnet {subnet}"
            )))
        }
    };
    let start = match raw.range_start {
        Some(ip) => within(ip, "rangeStart")?,
        None => first_host,
    };
    let end = match raw.range_end {
        Some(ip) => within(ip, "rangeEnd")?,
        None => last_host,
    };
    if to_u128(start) > to_u128(end) {
        return Err(CniError::config(format!(
            "network config field `{field}.rangeStart` {start} is after rangeEnd {end}"
        )));
    }
    let gateway = match raw.gateway {
        Some(gw) => Some(within(gw, "gateway")?),
        None => Some(first_host),
    };
    Ok(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

fn check_overlaps(sets: &[Vec<Range>]) -> Result<(), CniError> {
    let all: Vec<(usize, usize, &Range)> = sets
        .iter()
        .enumerate()
        .flat_map(|(i, set)| set.iter().enumerate().map(move |(j, r)| (i, j, r)))
        .collect();
    for (n, (i, j, a)) in all.iter().enumerate() {
        for (k, l, b) in &all[n + 1..] {
            let same_family = a.start.is_ipv4() == b.start.is_ipv4();
            if same_family
                && to_u128(a.start) <= to_u128(b.end)
                && to_u128(b.start) <= to_u128(a.end)
            {
                return Err(CniError::config(format!(
                    "network config field `ipam.ranges[{k}][{l}]` overlaps `ipam.ranges[{i}][{j}]`"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(ipam: Value) -> Result<HostLocalConf, CniError> {
        HostLocalConf::from_value(&serde_json::json!({
            "cniVersion": "1.1.0", "name": "net", "type": "bridge", "ipam": ipam
        }))
    }

    #[test]
    fn defaults_fill_range_and_gateway() {
        let c = conf(serde_json::json!({"type":"host-local","subnet":"10.1.2.9/24"})).unwrap();
        let r = &c.range_sets[0][0];
        assert_eq!(r.subnet.to_string(), "10.1.2.0/24");
        assert_eq!(r.start.to_string(), "10.1.2.1");
        assert_eq!(r.end.to_string(), "10.1.2.254");
        assert_eq!(r.gateway.unwrap().to_string(), "10.1.2.1");
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn dual_stack_sets() {
        let c = conf(serde_json::json!({"type":"host-local","ranges":[
            [{"subnet":"10.1.0.0/16","rangeStart":"10.1.5.10","rangeEnd":"10.1.5.20","gateway":"10.1.0.1"}],
            [{"subnet":"fd00::/64"}]
        ]}))
        .unwrap();
        assert_eq!(c.range_sets.len(), 2);
        assert_eq!(c.range_sets[0][0].size(), 11);
        assert_eq!(c.range_sets[1][0].start.to_string(), "fd00::1");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (serde_json::json!({"type":"host-local"}), "ipam.ranges"),
            (
                serde_json::json!({"type":"host-local","ranges":[[{"subnet":"10.0.0.0/24","rangeStart":"10.0.1.5"}]]}),
                "ipam.ranges[0][0].rangeStart",
            ),
            (
                serde_json::json!({"type":"host-local","ranges":[[{"subnet":"10.0.0.0/31"}]]}),
                "ipam.ranges[0][0].subnet",
            ),
            (
                serde_json::json!({"type":"host-local","ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.0/25"}]]}),
                "ipam.ranges[1][0]",
            ),
            (
                serde_json::json!({"type":"host-local","ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]]}),
                "ipam.ranges[0]",
            ),
            (
                serde_json::json!({"type":"host-local","ranges":[[{"subnet":"not-a-subnet"}]]}),
                "ipam.ranges[0][0].subnet",
            ),
            (
                serde_json::json!({"type":"host-local","subnet":"10.0.0.0/24","gateway":"10.9.9.9"}),
                "gateway",
            ),
        ];
        for (ipam, field) in cases {
            let err = conf(ipam.clone()).unwrap_err();
            assert_eq!(err.code, 4, "{ipam}");
            assert!(err.msg.contains(field), "{ipam}: {}", err.msg);
        }
    }
}

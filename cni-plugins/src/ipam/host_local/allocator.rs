//! Picking a free address in a range set: round-robin from the last one handed out, skipping
//! gateways and reserved addresses.

use std::net::IpAddr;

use super::config::{Range, from_u128, to_u128};
use super::store::Store;
use crate::error::{CniError, ErrorCode};

/// Reserves the next free address of range set `set_index` for the attachment.
pub fn allocate<'a>(
    store: &Store,
    set: &'a [Range],
    set_index: usize,
    container_id: &str,
    ifname: &str,
) -> Result<(IpAddr, &'a Range), CniError> {
    let Some(first) = set.first() else {
        return Err(CniError::config(format!(
            "network config field `ipam.ranges[{set_index}]` is empty"
        )));
    };
    // Start after the last address handed out so a freed address is not reused at once
    // (a stale peer may still be sending to it).
    let (mut range_index, mut cursor) = store
        .last_reserved(set_index)
        .and_then(|ip| {
            let i = set.iter().position(|r| r.contains(ip))?;
            Some((i, to_u128(ip) + 1))
        })
        .unwrap_or((0, to_u128(first.start)));
    let total: u128 = set.iter().map(Range::size).fold(0, u128::saturating_add);
    let mut tried: u128 = 0;
    while tried < total {
        let range = &set[range_index];
        if cursor > to_u128(range.end) {
            range_index = (range_index + 1) % set.len();
            cursor = to_u128(set[range_index].start);
            continue;
        }
        let ip = from_u128(cursor, range.start);
        cursor += 1;
        tried += 1;
        if Some(ip) == range.gateway || store.is_reserved(ip) {
            continue;
        }
        if store.reserve(ip, container_id, ifname, set_index)? {
            return Ok((ip, range));
        }
    }
    Err(CniError::new(
        ErrorCode::TryAgainLater,
        format!(
            "no free address in range set {set_index} ({}): every address is allocated",
            set.iter()
                .map(|r| format!("{}-{}", r.start, r.end))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// Reserves a specific address requested by the runtime.
pub fn allocate_exact<'a>(
    store: &Store,
    set: &'a [Range],
    set_index: usize,
    ip: IpAddr,
    container_id: &str,
    ifname: &str,
) -> Result<&'a Range, CniError> {
    let range = set
        .iter()
        .find(|r| r.contains(ip))
        .ok_or_else(|| CniError::config(format!("requested IP {ip} is in no configured range")))?;
    if Some(ip) == range.gateway {
        return Err(CniError::config(format!(
            "requested IP {ip} is the range's gateway"
        )));
    }
    if store.reserve(ip, container_id, ifname, set_index)? {
        Ok(range)
    } else {
        Err(CniError::internal(format!(
            "requested IP {ip} is already allocated"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(subnet: &str, start: &str, end: &str) -> Range {
        Range {
            subnet: subnet.parse().unwrap(),
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
            gateway: Some(start.parse().unwrap()),
        }
    }

    #[test]
    fn skips_gateway_and_goes_round_robin_across_ranges() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "n").unwrap();
        let set = [
            range("10.0.0.0/24", "10.0.0.1", "10.0.0.3"),
            range("10.0.1.0/24", "10.0.1.1", "10.0.1.2"),
        ];
        let got: Vec<String> = (0..3)
            .map(|i| {
                allocate(&store, &set, 0, &format!("c{i}"), "eth0")
                    .unwrap()
                    .0
                    .to_string()
            })
            .collect();
        assert_eq!(got, ["10.0.0.2", "10.0.0.3", "10.0.1.2"]);
        let err = allocate(&store, &set, 0, "c9", "eth0").unwrap_err();
        assert_eq!(err.code, 11);
        // A freed address is found again once the cursor wraps.
        store.release("10.0.0.2".parse().unwrap()).unwrap();
        assert_eq!(
            allocate(&store, &set, 0, "c9", "eth0")
                .unwrap()
                .0
                .to_string(),
            "10.0.0.2"
        );
    }

    #[test]
    fn ipv6_allocates() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "n").unwrap();
        let set = [range("fd00::/64", "fd00::1", "fd00::ffff")];
        let (ip, _) = allocate(&store, &set, 1, "c", "eth0").unwrap();
        assert_eq!(ip.to_string(), "fd00::2");
    }

    #[test]
    fn exact_requests() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "n").unwrap();
        let set = [range("10.0.0.0/24", "10.0.0.1", "10.0.0.254")];
        let ip = "10.0.0.77".parse().unwrap();
        allocate_exact(&store, &set, 0, ip, "a", "eth0").unwrap();
        assert!(allocate_exact(&store, &set, 0, ip, "b", "eth0").is_err());
        let outside = "10.9.0.1".parse().unwrap();
        assert_eq!(
            allocate_exact(&store, &set, 0, outside, "b", "eth0")
                .unwrap_err()
                .code,
            4
        );
    }
}

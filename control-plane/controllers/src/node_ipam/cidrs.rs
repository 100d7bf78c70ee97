//! The set of node CIDRs carved out of the cluster CIDR (upstream's cidrset): subnets of
//! `--node-cidr-mask-size` by index, handed out from a rotating candidate so that a released
//! range is not reused at once.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why the set cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    /// The mask is shorter than the cluster CIDR's, or longer than the address.
    #[error("node CIDR mask size {mask} does not fit cluster CIDR {cluster}")]
    Mask {
        /// The cluster CIDR.
        cluster: IpNet,
        /// The node mask size.
        mask: u8,
    },
}

/// Node CIDRs in use and free.
#[derive(Debug)]
pub struct CidrSet {
    cluster: IpNet,
    mask: u8,
    count: u128,
    used: BTreeSet<u128>,
    next: u128,
}

impl CidrSet {
    /// The node subnets of `cluster` with prefix length `mask`.
    pub fn new(cluster: IpNet, mask: u8) -> Result<CidrSet, CidrError> {
        let cluster = cluster.trunc();
        let bits = cluster.max_prefix_len();
        if mask < cluster.prefix_len() || mask > bits || mask - cluster.prefix_len() > 64 {
            return Err(CidrError::Mask { cluster, mask });
        }
        Ok(CidrSet {
            cluster,
            mask,
            count: 1u128 << (mask - cluster.prefix_len()),
            used: BTreeSet::new(),
            next: 0,
        })
    }

    /// The cluster CIDR.
    pub fn cluster(&self) -> IpNet {
        self.cluster
    }

    fn subnet(&self, index: u128) -> IpNet {
        let shift = self.cluster.max_prefix_len() - self.mask;
        let offset = index << shift;
        let address = match self.cluster.network() {
            IpAddr::V4(base) => {
                IpAddr::V4(Ipv4Addr::from(u32::from(base).wrapping_add(offset as u32)))
            }
            IpAddr::V6(base) => IpAddr::V6(Ipv6Addr::from(u128::from(base).wrapping_add(offset))),
        };
        IpNet::new(address, self.mask).unwrap_or(self.cluster)
    }

    fn index(&self, cidr: &IpNet) -> Option<u128> {
        if cidr.prefix_len() != self.mask || !self.cluster.contains(cidr) {
            return None;
        }
        let shift = self.cluster.max_prefix_len() - self.mask;
        let offset = match (cidr.network(), self.cluster.network()) {
            (IpAddr::V4(a), IpAddr::V4(b)) => u128::from(u32::from(a) - u32::from(b)),
            (IpAddr::V6(a), IpAddr::V6(b)) => u128::from(a) - u128::from(b),
            _ => return None,
        };
        Some(offset >> shift)
    }

    /// Marks `cidr` used (a node had it already); false when it is not one of ours.
    pub fn occupy(&mut self, cidr: &IpNet) -> bool {
        match self.index(cidr) {
            Some(index) => {
                self.used.insert(index);
                true
            }
            None => false,
        }
    }

    /// Frees `cidr`.
    pub fn release(&mut self, cidr: &IpNet) {
        if let Some(index) = self.index(cidr) {
            self.used.remove(&index);
        }
    }

    /// The next free node CIDR, now used; `None` when every one is taken.
    pub fn allocate(&mut self) -> Option<IpNet> {
        if self.used.len() as u128 >= self.count {
            return None;
        }
        let mut candidate = self.next;
        loop {
            if !self.used.contains(&candidate) {
                self.used.insert(candidate);
                self.next = (candidate + 1) % self.count;
                return Some(self.subnet(candidate));
            }
            candidate = (candidate + 1) % self.count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse()
            .unwrap_or_else(|_| IpNet::from(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
    }

    #[test]
    fn hands_out_distinct_subnets_until_exhausted() {
        let mut set = CidrSet::new(net("10.244.0.0/22"), 24).unwrap_or_else(|e| panic!("{e}"));
        assert!(set.occupy(&net("10.244.1.0/24")));
        let got: Vec<_> = std::iter::from_fn(|| set.allocate()).collect();
        assert_eq!(
            got,
            [
                net("10.244.0.0/24"),
                net("10.244.2.0/24"),
                net("10.244.3.0/24")
            ]
        );
        set.release(&net("10.244.2.0/24"));
        assert_eq!(set.allocate(), Some(net("10.244.2.0/24")));
        assert_eq!(set.allocate(), None);
        assert!(!set.occupy(&net("10.245.0.0/24")));
    }

    #[test]
    fn ipv6_and_bad_masks() {
        let mut set = CidrSet::new(net("fd00::/48"), 64).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.allocate(), Some(net("fd00::/64")));
        assert_eq!(set.allocate(), Some(net("fd00:0:0:1::/64")));
        assert!(CidrSet::new(net("10.0.0.0/16"), 8).is_err());
    }
}

//! The subject alternative names the API server's serving certificate must carry: every name a
//! client may dial it by (loopback, the host's addresses and name, the `kubernetes` Service's
//! cluster IP and DNS names), as kubeadm puts in apiserver.crt.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::PkiError;
use super::der::AltName;

/// The first usable address of the service CIDR: the `kubernetes` Service's ClusterIP
/// (10.96.0.0/12 gives 10.96.0.1), as kube-apiserver allocates it.
pub fn first_service_ip(cidr: &IpNet) -> Result<IpAddr, PkiError> {
    let network = cidr.network();
    let next = match network {
        IpAddr::V4(v4) => u32::from(v4)
            .checked_add(1)
            .map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        IpAddr::V6(v6) => u128::from(v6)
            .checked_add(1)
            .map(|n| IpAddr::V6(Ipv6Addr::from(n))),
    };
    match next {
        Some(ip) if cidr.contains(&ip) => Ok(ip),
        _ => Err(PkiError::Option {
            option: "--service-cluster-ip-range",
            reason: format!("{cidr} has no address after its network address"),
        }),
    }
}

/// The addresses of the host's interfaces, less loopback (always added on its own) and IPv6
/// link-local ones (unusable in a URL without a zone, so no client dials them).
pub fn host_addresses() -> Vec<IpAddr> {
    let addrs = match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs,
        Err(e) => {
            // A certificate without the host's addresses still serves loopback and the
            // service IP; failing the whole start for it would be worse.
            tracing::warn!(error = %e, "getifaddrs failed; the serving certificate gets no host addresses");
            return Vec::new();
        }
    };
    let mut out = BTreeSet::new();
    for ifa in addrs {
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        let link_local_v6 = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
        if ip.is_loopback() || ip.is_unspecified() || link_local_v6 {
            continue;
        }
        out.insert(ip);
    }
    out.into_iter().collect()
}

/// The host's name, lowercased, when it is usable as a DNS SAN.
pub fn host_name() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?.into_string().ok()?;
    let name = name.trim().to_ascii_lowercase();
    is_dns_name(&name).then_some(name)
}

/// Whether `name` is a plausible DNS name (labels of letters, digits and hyphens, and `*.` as
/// a leading wildcard), so garbage never reaches a certificate.
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Parses one `--tls-san`-style extra name: an IP address or a DNS name.
pub fn parse_extra_san(value: &str) -> Result<AltName, PkiError> {
    let value = value.trim();
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(AltName::Ip(ip));
    }
    let lower = value.to_ascii_lowercase();
    if is_dns_name(&lower) {
        return Ok(AltName::Dns(lower));
    }
    Err(PkiError::Option {
        option: "extra SAN",
        reason: format!("{value:?} is neither an IP address nor a DNS name"),
    })
}

/// Everything the serving certificate must name, sorted and without duplicates.
pub fn wanted(
    service_ip: IpAddr,
    cluster_domain: &str,
    host_ips: &[IpAddr],
    host_name: Option<&str>,
    extra: &[AltName],
) -> BTreeSet<AltName> {
    let mut sans = BTreeSet::new();
    sans.insert(AltName::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    sans.insert(AltName::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    sans.insert(AltName::Ip(service_ip));
    sans.extend(host_ips.iter().copied().map(AltName::Ip));
    for dns in [
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        format!("kubernetes.default.svc.{cluster_domain}"),
    ] {
        sans.insert(AltName::Dns(dns));
    }
    if let Some(name) = host_name {
        sans.insert(AltName::Dns(name.to_string()));
    }
    sans.extend(extra.iter().cloned());
    sans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_service_ip_is_network_plus_one() {
        let ip = first_service_ip(&"10.96.0.0/12".parse().unwrap()).unwrap();
        assert_eq!(ip, "10.96.0.1".parse::<IpAddr>().unwrap());
        let ip = first_service_ip(&"fd00:10:96::/108".parse().unwrap()).unwrap();
        assert_eq!(ip, "fd00:10:96::1".parse::<IpAddr>().unwrap());
        // ipnet keeps host bits; the network address is what counts.
        let ip = first_service_ip(&"10.96.3.7/12".parse().unwrap()).unwrap();
        assert_eq!(ip, "10.96.0.1".parse::<IpAddr>().unwrap());
        assert!(first_service_ip(&"10.0.0.5/32".parse().unwrap()).is_err());
    }

    #[test]
    fn extra_sans_are_ips_or_dns_names() {
        assert_eq!(
            parse_extra_san("192.0.2.9").unwrap(),
            AltName::Ip("192.0.2.9".parse().unwrap())
        );
        assert_eq!(
            parse_extra_san("API.Example.com").unwrap(),
            AltName::Dns("api.example.com".into())
        );
        let err = parse_extra_san("not a name").unwrap_err().to_string();
        assert!(err.contains("not a name"), "{err}");
    }

    #[test]
    fn wanted_has_the_kubernetes_names() {
        let sans = wanted(
            "10.96.0.1".parse().unwrap(),
            "corp.local",
            &["192.0.2.1".parse().unwrap()],
            Some("node-a"),
            &[],
        );
        for dns in ["localhost", "kubernetes.default.svc.corp.local", "node-a"] {
            assert!(sans.contains(&AltName::Dns(dns.into())), "{dns}");
        }
        for ip in ["127.0.0.1", "::1", "10.96.0.1", "192.0.2.1"] {
            assert!(sans.contains(&AltName::Ip(ip.parse().unwrap())), "{ip}");
        }
    }

    #[test]
    fn host_addresses_skip_loopback() {
        assert!(host_addresses().iter().all(|ip| !ip.is_loopback()));
    }
}

//! The dummy interface that holds the Service VIPs (`capstan-svc0`): with each ClusterIP on
//! it as a /32 (or /128), the kernel takes packets for the VIP as local and delivers them to the
//! proxy's listener — from the host, and from pods, whose default route leads to the host.
//! Only the addresses this proxy added are removed; the device stays (as kube-proxy leaves
//! `kube-ipvs0`), since other proxies on the host may use it. On a kernel built without the
//! dummy driver the VIPs go on `lo`, whose addresses are local just as well.

use std::collections::BTreeSet;
use std::net::IpAddr;

use capstan_cni::netlink::Netlink;
use ipnet::IpNet;
use rtnetlink::LinkDummy;

/// The device's default name.
pub const DEFAULT_DEVICE: &str = "capstan-svc0";
/// Where the VIPs go on a kernel without the dummy driver.
const LOOPBACK: &str = "lo";

/// The VIP device and the addresses put on it.
pub struct Vips {
    nl: Netlink,
    device: String,
    index: Option<u32>,
    added: BTreeSet<IpAddr>,
}

impl std::fmt::Debug for Vips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vips")
            .field("device", &self.device)
            .field("added", &self.added)
            .finish_non_exhaustive()
    }
}

fn host_net(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(v4) => IpNet::V4(ipnet::Ipv4Net::new_assert(v4, 32)),
        IpAddr::V6(v6) => IpNet::V6(ipnet::Ipv6Net::new_assert(v6, 128)),
    }
}

impl Vips {
    /// A handle on `device` in this network namespace (made on first use).
    pub fn new(device: &str) -> Result<Self, String> {
        let nl = Netlink::connect().map_err(|e| e.to_string())?;
        Ok(Vips {
            nl,
            device: device.to_string(),
            index: None,
            added: BTreeSet::new(),
        })
    }

    async fn index(&mut self) -> Result<u32, String> {
        use capstan_cni::netlink::{EEXIST, errno};
        if let Some(index) = self.index {
            return Ok(index);
        }
        let existing = self
            .nl
            .link(&self.device)
            .await
            .map_err(|e| e.to_string())?;
        if existing.is_none() {
            match self.nl.add_link(LinkDummy::new(&self.device).build()).await {
                Ok(()) => tracing::info!(device = %self.device, "service VIP device created"),
                // Another proxy on the host made it meanwhile.
                Err(e) if errno(&e) == Some(EEXIST) => {}
                // A kernel without the dummy driver: loopback's addresses are as local.
                Err(e) if errno(&e) == Some(nix::libc::EOPNOTSUPP) => {
                    tracing::info!(device = %self.device, "this kernel has no dummy devices: service IPs go on lo");
                    self.device = LOOPBACK.to_string();
                }
                Err(e) => return Err(format!("create {}: {e}", self.device)),
            }
        }
        let link = self
            .nl
            .link(&self.device)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{} vanished after it was created", self.device))?;
        if self.device != LOOPBACK && link.kind.as_deref() != Some("dummy") {
            return Err(format!(
                "{} exists and is a {} device, not a dummy one",
                self.device,
                link.kind.as_deref().unwrap_or("unknown")
            ));
        }
        if !link.up {
            self.nl
                .set_up(link.index, &self.device)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.index = Some(link.index);
        Ok(link.index)
    }

    /// Puts `ip` on the device.
    pub async fn add(&mut self, ip: IpAddr) -> Result<(), String> {
        if self.added.contains(&ip) {
            return Ok(());
        }
        let index = self.index().await?;
        // An address already there (left by this node's proxy before a crash) counts as
        // added: it is adopted, served, and taken off in the end.
        self.nl
            .add_address(index, host_net(ip))
            .await
            .map_err(|e| e.to_string())?;
        self.added.insert(ip);
        Ok(())
    }

    /// Takes `ip` off the device, if this proxy put it there.
    pub async fn remove(&mut self, ip: IpAddr) -> Result<(), String> {
        if !self.added.remove(&ip) {
            return Ok(());
        }
        let index = self.index().await?;
        self.nl
            .del_address(index, host_net(ip))
            .await
            .map_err(|e| e.to_string())
    }

    /// The addresses this proxy put on the device.
    pub fn added(&self) -> &BTreeSet<IpAddr> {
        &self.added
    }

    /// The device the addresses go on (`lo` where dummy devices are not available).
    pub fn device(&self) -> &str {
        &self.device
    }
}

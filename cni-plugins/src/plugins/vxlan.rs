//! `vxlan`: the overlay for pods on several hosts. Ensures the host's VXLAN device and a
//! bridge for the host's pod subnet, then attaches the pod as `bridge` does (the bridge is
//! the pods' default gateway). Remote hosts are programmed separately through [`crate::peers`].
//!
//! Routing is layer 3: the VXLAN device is not a bridge port. Traffic for a remote pod subnet
//! leaves through the route [`crate::peers`] installs, so a host only ever floods nothing.
//! The overlay carries IPv4.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use rtnetlink::LinkVxlan;
use serde::Deserialize;

use super::attach::{self, AttachSpec};
use super::bridge::{refuse_ip_masq, validate_link_name, validate_mtu};
use crate::config;
use crate::delegate;
use crate::error::CniError;
use crate::netlink::{EEXIST, Link, Netlink, errno, nl_error};
use crate::peers::vtep_mac;
use crate::result::CniResult;
use crate::skel::{Command, Context, Plugin};

/// VXLAN's IANA UDP port.
pub const DEFAULT_PORT: u16 = 4789;
/// Bridge name when the config sets none.
pub const DEFAULT_BRIDGE: &str = "vxbr0";
/// Bytes VXLAN adds to each packet over IPv4 (outer IP, UDP, VXLAN and inner Ethernet).
pub const OVERHEAD: u32 = 50;

/// The vxlan plugin.
pub struct Vxlan;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VxlanConf {
    vni: u32,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    vxlan_device: Option<String>,
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    local_address: Option<Ipv4Addr>,
    #[serde(default)]
    underlay_interface: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    ip_masq: bool,
}

/// A validated vxlan config.
struct Settings {
    vni: u32,
    port: u16,
    device: String,
    bridge: String,
    local_address: Option<Ipv4Addr>,
    underlay_interface: Option<String>,
    mtu: Option<u32>,
    hairpin: bool,
}

fn settings(ctx: &Context) -> Result<Settings, CniError> {
    let conf: VxlanConf = config::parse(&ctx.raw)?;
    refuse_ip_masq(conf.ip_masq)?;
    if !(1..=0x00ff_ffff).contains(&conf.vni) {
        return Err(CniError::config(format!(
            "network config field `vni` {} is outside 1-16777215",
            conf.vni
        )));
    }
    let device = conf
        .vxlan_device
        .unwrap_or_else(|| format!("vxlan.{}", conf.vni));
    validate_link_name(&device, "vxlanDevice")?;
    let bridge = conf.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
    validate_link_name(&bridge, "bridge")?;
    validate_mtu(conf.mtu)?;
    if conf.port == Some(0) {
        return Err(CniError::config(
            "network config field `port` must not be 0",
        ));
    }
    if ctx.conf.ipam.is_none() && matches!(ctx.command, Command::Add | Command::Check) {
        return Err(CniError::config(
            "network config field `ipam` is missing: vxlan needs an IPAM plugin for the host's pod subnet",
        ));
    }
    Ok(Settings {
        vni: conf.vni,
        port: conf.port.unwrap_or(DEFAULT_PORT),
        device,
        bridge,
        local_address: conf.local_address,
        underlay_interface: conf.underlay_interface,
        mtu: conf.mtu,
        hairpin: conf.hairpin_mode,
    })
}

/// Finds the underlay link and the local address VXLAN packets are sent from.
async fn underlay(nl: &Netlink, s: &Settings) -> Result<(Link, Ipv4Addr), CniError> {
    let addresses = nl.addresses(None).await?;
    let first_v4 = |index: u32| {
        addresses.iter().find_map(|(i, net)| match net.addr() {
            IpAddr::V4(v4) if *i == index => Some(v4),
            _ => None,
        })
    };
    let link = if let Some(name) = &s.underlay_interface {
        nl.link(name).await?.ok_or_else(|| {
            CniError::config(format!(
                "network config field `underlayInterface`: no interface {name}"
            ))
        })?
    } else if let Some(local) = s.local_address {
        let index = addresses
            .iter()
            .find(|(_, net)| net.addr() == IpAddr::V4(local))
            .map(|(i, _)| *i)
            .ok_or_else(|| {
                CniError::config(format!(
                    "network config field `localAddress` {local} is on no interface of this host"
                ))
            })?;
        nl.link_by_index(index)
            .await?
            .ok_or_else(|| CniError::internal(format!("link #{index} vanished")))?
    } else {
        let default = nl
            .routes(false)
            .await?
            .into_iter()
            .find(|(dst, _, oif)| dst.prefix_len() == 0 && oif.is_some())
            .and_then(|(_, _, oif)| oif)
            .ok_or_else(|| {
                CniError::config(
                    "no IPv4 default route to pick the underlay from: set `underlayInterface` or `localAddress`",
                )
            })?;
        nl.link_by_index(default)
            .await?
            .ok_or_else(|| CniError::internal(format!("link #{default} vanished")))?
    };
    let local = match s.local_address {
        Some(local) => local,
        None => first_v4(link.index).ok_or_else(|| {
            CniError::config(format!(
                "underlay interface {} has no IPv4 address: set `localAddress`",
                link.name
            ))
        })?,
    };
    Ok((link, local))
}

/// Creates the VXLAN device if missing, or checks that the existing one carries our VNI.
async fn ensure_device(
    nl: &Netlink,
    s: &Settings,
    under: &Link,
    local: Ipv4Addr,
    mtu: u32,
) -> Result<Link, CniError> {
    if nl.link(&s.device).await?.is_none() {
        // Learning is off: peers are programmed explicitly, nothing is flooded to find them.
        let msg = LinkVxlan::new(&s.device, s.vni)
            .port(s.port)
            .local(local)
            .dev(under.index)
            .learning(false)
            .mtu(mtu)
            .address(vtep_mac(local).to_vec())
            .build();
        match nl.add_link(msg).await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(e) => return Err(nl_error(format!("creating VXLAN device {}", s.device))(e)),
        }
    }
    let dev = nl
        .link(&s.device)
        .await?
        .ok_or_else(|| CniError::internal(format!("VXLAN device {} vanished", s.device)))?;
    if dev.kind.as_deref() != Some("vxlan") || dev.vni != Some(s.vni) {
        return Err(CniError::config(format!(
            "network config field `vxlanDevice`: {} exists but is not a VXLAN device with VNI {}",
            s.device, s.vni
        )));
    }
    if !dev.up {
        nl.set_up(dev.index, &dev.name).await?;
    }
    Ok(dev)
}

fn attach_spec(s: &Settings, mtu: Option<u32>) -> AttachSpec {
    AttachSpec {
        bridge: s.bridge.clone(),
        mtu,
        hairpin: s.hairpin,
        promisc: false,
        vlan: None,
        is_gateway: true,
        is_default_gateway: true,
    }
}

impl Plugin for Vxlan {
    async fn add(&self, ctx: &Context) -> Result<CniResult, CniError> {
        let s = settings(ctx)?;
        let nl = Netlink::connect()?;
        let (under, local) = underlay(&nl, &s).await?;
        let mtu = s.mtu.unwrap_or(under.mtu.saturating_sub(OVERHEAD));
        let dev = ensure_device(&nl, &s, &under, local, mtu).await?;
        let result = attach::add(ctx, &attach_spec(&s, Some(mtu))).await?;
        // The device holds the pod subnet's network address: remote hosts route our subnet
        // to it, and it is the source of traffic the host itself sends into the overlay.
        for ip in result.ips.iter().filter(|ip| ip.address.addr().is_ipv4()) {
            let net = ip.address.trunc();
            let own = IpNet::new(net.network(), 32).unwrap_or(net);
            if let Err(e) = nl.add_address(dev.index, own).await {
                let _ = attach::del(ctx).await;
                return Err(e);
            }
        }
        Ok(result)
    }

    async fn del(&self, ctx: &Context) -> Result<(), CniError> {
        let _: VxlanConf = config::parse(&ctx.raw)?;
        attach::del(ctx).await
    }

    async fn check(&self, ctx: &Context) -> Result<(), CniError> {
        let s = settings(ctx)?;
        let nl = Netlink::connect()?;
        match nl.link(&s.device).await? {
            Some(dev) if dev.kind.as_deref() == Some("vxlan") && dev.vni == Some(s.vni) => {
                if !dev.up {
                    return Err(CniError::internal(format!(
                        "CHECK failed: VXLAN device {} is down",
                        s.device
                    )));
                }
            }
            _ => {
                return Err(CniError::internal(format!(
                    "CHECK failed: VXLAN device {} with VNI {} is missing",
                    s.device, s.vni
                )));
            }
        }
        attach::check(ctx, &attach_spec(&s, s.mtu)).await
    }

    async fn status(&self, ctx: &Context) -> Result<(), CniError> {
        settings(ctx)?;
        if ctx.conf.ipam.is_some() {
            delegate::ipam(Command::Status, ctx)?;
        }
        Ok(())
    }

    async fn gc(&self, ctx: &Context) -> Result<(), CniError> {
        if ctx.conf.ipam.is_some() {
            delegate::ipam(Command::Gc, ctx)?;
        }
        Ok(())
    }
}

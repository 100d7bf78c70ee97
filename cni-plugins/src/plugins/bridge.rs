//! `bridge`: a Linux bridge on the host and a veth pair per container, addresses from the
//! IPAM plugin the config names.

use serde::Deserialize;

use super::attach::{self, AttachSpec};
use crate::config;
use crate::delegate;
use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;
use crate::skel::{Command, Context, Plugin};

/// Bridge name when the config sets none (the reference plugin's default).
pub const DEFAULT_BRIDGE: &str = "cni0";

/// The bridge plugin.
pub struct Bridge;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BridgeConf {
    #[serde(default)]
    bridge: Option<String>,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    vlan: Option<u16>,
}

/// Validates the bridge-specific fields and turns them into an attachment spec.
fn spec(ctx: &Context) -> Result<AttachSpec, CniError> {
    let conf: BridgeConf = config::parse(&ctx.raw)?;
    refuse_ip_masq(conf.ip_masq)?;
    let bridge = conf.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
    validate_link_name(&bridge, "bridge")?;
    validate_mtu(conf.mtu)?;
    if let Some(vlan) = conf.vlan {
        if !(1..=4094).contains(&vlan) {
            return Err(CniError::config(format!(
                "network config field `vlan` {vlan} is outside 1-4094"
            )));
        }
    }
    if ctx.conf.ipam.is_none() && matches!(ctx.command, Command::Add | Command::Check) {
        return Err(CniError::config(
            "network config field `ipam` is missing: bridge needs an IPAM plugin",
        ));
    }
    Ok(AttachSpec {
        bridge,
        mtu: conf.mtu,
        hairpin: conf.hairpin_mode,
        promisc: conf.promisc_mode,
        vlan: conf.vlan,
        // A default gateway must exist on the bridge, so it implies isGateway.
        is_gateway: conf.is_gateway || conf.is_default_gateway,
        is_default_gateway: conf.is_default_gateway,
    })
}

/// `ipMasq` needs netfilter, which Capstan does not use: refuse it rather than ignore it.
pub fn refuse_ip_masq(ip_masq: bool) -> Result<(), CniError> {
    if ip_masq {
        return Err(CniError::new(
            ErrorCode::UnsupportedField,
            "network config field `ipMasq` = true is not supported: masquerading needs \
             netfilter (iptables/nftables), which Capstan does not use; set it to false",
        ));
    }
    Ok(())
}

/// Link names must be valid kernel interface names.
pub fn validate_link_name(name: &str, field: &str) -> Result<(), CniError> {
    crate::skel::validate_ifname(name).map_err(|_| {
        CniError::config(format!(
            "network config field `{field}` {name:?} is not a valid interface name \
             (1-15 bytes, no '/', ':' or spaces)"
        ))
    })
}

/// MTUs below IPv4's minimum (68) cannot carry traffic.
pub fn validate_mtu(mtu: Option<u32>) -> Result<(), CniError> {
    match mtu {
        Some(m) if !(68..=65535).contains(&m) => Err(CniError::config(format!(
            "network config field `mtu` {m} is outside 68-65535"
        ))),
        _ => Ok(()),
    }
}

impl Plugin for Bridge {
    async fn add(&self, ctx: &Context) -> Result<CniResult, CniError> {
        attach::add(ctx, &spec(ctx)?).await
    }

    async fn del(&self, ctx: &Context) -> Result<(), CniError> {
        // DEL must work for what an older, differently configured ADD made: only parse errors
        // that make the config unusable stop it.
        let _: BridgeConf = config::parse(&ctx.raw)?;
        attach::del(ctx).await
    }

    async fn check(&self, ctx: &Context) -> Result<(), CniError> {
        attach::check(ctx, &spec(ctx)?).await
    }

    async fn status(&self, ctx: &Context) -> Result<(), CniError> {
        spec(ctx)?;
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

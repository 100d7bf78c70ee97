//! `loopback`: brings `lo` up in the container's namespace.

use rtnetlink::LinkUnspec;

use crate::error::CniError;
use crate::netlink::Netlink;
use crate::netns::NetNs;
use crate::result::{CniResult, Interface, IpConfig};
use crate::skel::{Context, Plugin};

/// The loopback plugin.
pub struct Loopback;

fn netns(ctx: &Context) -> Result<NetNs, CniError> {
    let path = ctx
        .netns
        .as_deref()
        .ok_or_else(|| CniError::env("CNI_NETNS is not set"))?;
    NetNs::open(path)
}

async fn lo(nl: &Netlink) -> Result<crate::netlink::Link, CniError> {
    nl.link("lo")
        .await?
        .ok_or_else(|| CniError::internal("the namespace has no `lo` interface"))
}

impl Plugin for Loopback {
    async fn add(&self, ctx: &Context) -> Result<CniResult, CniError> {
        let ns = netns(ctx)?;
        let nl = Netlink::connect_in(&ns)?;
        let lo = lo(&nl).await?;
        nl.set_up(lo.index, "lo").await?;
        // Chained after another plugin, loopback passes the earlier result through unchanged,
        // as the spec asks of plugins that add nothing the runtime needs to know.
        if let Some(previous) = ctx.raw.get("prevResult") {
            let mut result = CniResult::from_value(previous)?;
            result.cni_version = ctx.conf.cni_version.clone();
            return Ok(result);
        }
        let ips = nl
            .addresses(Some(lo.index))
            .await?
            .into_iter()
            .map(|(_, address)| IpConfig {
                interface: Some(0),
                address,
                gateway: None,
            })
            .collect();
        Ok(CniResult {
            cni_version: ctx.conf.cni_version.clone(),
            interfaces: vec![Interface {
                name: "lo".into(),
                mac: "00:00:00:00:00:00".into(),
                mtu: Some(lo.mtu),
                sandbox: ns.path().display().to_string(),
            }],
            ips,
            ..CniResult::default()
        })
    }

    async fn del(&self, ctx: &Context) -> Result<(), CniError> {
        // The namespace may already be gone: then so is its `lo`, and DEL has nothing to do.
        let Some(path) = ctx.netns.as_deref() else {
            return Ok(());
        };
        let Ok(ns) = NetNs::open(path) else {
            return Ok(());
        };
        let nl = Netlink::connect_in(&ns)?;
        if let Some(lo) = nl.link("lo").await? {
            nl.set_link(
                LinkUnspec::new_with_index(lo.index).down().build(),
                "setting lo down",
            )
            .await?;
        }
        Ok(())
    }

    async fn check(&self, ctx: &Context) -> Result<(), CniError> {
        let ns = netns(ctx)?;
        let nl = Netlink::connect_in(&ns)?;
        if lo(&nl).await?.up {
            Ok(())
        } else {
            Err(CniError::internal(format!(
                "CHECK: `lo` in {} is down",
                ns.path().display()
            )))
        }
    }

    async fn status(&self, _ctx: &Context) -> Result<(), CniError> {
        Ok(())
    }

    async fn gc(&self, _ctx: &Context) -> Result<(), CniError> {
        Ok(())
    }
}

//! `host-local`: hands out addresses from configured ranges, one per range set, and keeps
//! them in a file-locked store on the host.

pub mod allocator;
pub mod config;
pub mod store;

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use self::config::HostLocalConf;
use self::store::Store;
use crate::error::{CniError, ErrorCode};
use crate::result::{CniResult, IpConfig};
use crate::skel::{Context, Plugin};

/// The host-local IPAM plugin.
pub struct HostLocal;

/// Addresses the runtime asked for: CNI_ARGS `IP=a,b`, `runtimeConfig.ips` or `args.cni.ips`.
fn requested_ips(ctx: &Context) -> Result<Vec<IpAddr>, CniError> {
    let mut wanted: Vec<String> = Vec::new();
    for (key, value) in &ctx.args {
        if key == "IP" {
            wanted.extend(value.split(',').map(str::to_string));
        }
    }
    let json_lists = [
        ctx.raw.pointer("/runtimeConfig/ips"),
        ctx.raw.pointer("/args/cni/ips"),
    ];
    for list in json_lists.into_iter().flatten() {
        let items = list.as_array().ok_or_else(|| {
            CniError::config(
                "network config field `runtimeConfig.ips` / `args.cni.ips` is not a list",
            )
        })?;
        for item in items {
            let text = item
                .as_str()
                .ok_or_else(|| CniError::config(format!("requested IP {item} is not a string")))?;
            wanted.push(text.to_string());
        }
    }
    wanted
        .iter()
        .map(|w| {
            // Accept "10.0.0.5" and "10.0.0.5/24" (the prefix comes from the range).
            let addr = w.split('/').next().unwrap_or_default();
            addr.parse::<IpAddr>()
                .map_err(|_| CniError::config(format!("requested IP {w:?} is not an IP address")))
        })
        .collect()
}

fn ip_config(ip: IpAddr, range: &config::Range) -> Result<IpConfig, CniError> {
    let address = IpNet::new(ip, range.subnet.prefix_len())
        .map_err(|e| CniError::internal(format!("bad prefix for {ip}")).with_details(e))?;
    Ok(IpConfig {
        interface: None,
        address,
        gateway: range.gateway,
    })
}

impl Plugin for HostLocal {
    async fn add(&self, ctx: &Context) -> Result<CniResult, CniError> {
        let conf = HostLocalConf::from_value(&ctx.raw)?;
        let requested = requested_ips(ctx)?;
        let store = Store::open(&conf.data_dir, &conf.name)?;
        let held: Vec<IpAddr> = store
            .allocations()?
            .into_iter()
            .filter(|(_, owner)| owner.is(&ctx.container_id, &ctx.ifname))
            .map(|(ip, _)| ip)
            .collect();
        let mut fresh = Vec::new();
        let outcome = (|| {
            let mut ips = Vec::new();
            for (i, set) in conf.range_sets.iter().enumerate() {
                // A repeated ADD for the same attachment gets the addresses it already holds.
                if let Some((ip, range)) = held
                    .iter()
                    .find_map(|ip| set.iter().find(|r| r.contains(*ip)).map(|r| (*ip, r)))
                {
                    ips.push(ip_config(ip, range)?);
                    continue;
                }
                let wanted = requested
                    .iter()
                    .find(|ip| set.iter().any(|r| r.subnet.contains(*ip)));
                let (ip, range) = match wanted {
                    Some(ip) => {
                        let range = allocator::allocate_exact(
                            &store,
                            set,
                            i,
                            *ip,
                            &ctx.container_id,
                            &ctx.ifname,
                        )?;
                        (*ip, range)
                    }
                    None => allocator::allocate(&store, set, i, &ctx.container_id, &ctx.ifname)?,
                };
                fresh.push(ip);
                ips.push(ip_config(ip, range)?);
            }
            for ip in &requested {
                if !ips.iter().any(|c| c.address.addr() == *ip) {
                    return Err(CniError::config(format!(
                        "requested IP {ip} is in no configured range set"
                    )));
                }
            }
            Ok(ips)
        })();
        let ips = match outcome {
            Ok(ips) => ips,
            Err(err) => {
                // Give back what this call took so a failed ADD leaks nothing.
                for ip in fresh {
                    let _ = store.release(ip);
                }
                return Err(err);
            }
        };
        tracing::info!(container = %ctx.container_id, ?ips, "allocated");
        Ok(CniResult {
            cni_version: ctx.conf.cni_version.clone(),
            ips,
            routes: conf.routes,
            dns: conf.dns.unwrap_or_default(),
            ..CniResult::default()
        })
    }

    async fn del(&self, ctx: &Context) -> Result<(), CniError> {
        let conf = HostLocalConf::from_value(&ctx.raw)?;
        if let Some(store) = Store::open_existing(&conf.data_dir, &conf.name)? {
            let freed = store.release_owner(&ctx.container_id, &ctx.ifname)?;
            tracing::info!(container = %ctx.container_id, ?freed, "released");
        }
        Ok(())
    }

    async fn check(&self, ctx: &Context) -> Result<(), CniError> {
        let conf = HostLocalConf::from_value(&ctx.raw)?;
        let missing = || {
            CniError::internal(format!(
                "CHECK: host-local holds no address for container {} interface {}",
                ctx.container_id, ctx.ifname
            ))
        };
        let store = Store::open_existing(&conf.data_dir, &conf.name)?.ok_or_else(missing)?;
        let held: HashSet<IpAddr> = store
            .allocations()?
            .into_iter()
            .filter(|(_, o)| o.is(&ctx.container_id, &ctx.ifname))
            .map(|(ip, _)| ip)
            .collect();
        if held.is_empty() {
            return Err(missing());
        }
        if let Some(prev) = &ctx.conf.prev_result {
            let prev = CniResult::from_value(prev)?;
            for ip in prev.ips.iter().map(|c| c.address.addr()) {
                let ours = conf.range_sets.iter().flatten().any(|r| r.contains(ip));
                if ours && !held.contains(&ip) {
                    return Err(CniError::internal(format!(
                        "CHECK: {ip} from prevResult is not allocated to container {}",
                        ctx.container_id
                    )));
                }
            }
        }
        Ok(())
    }

    async fn status(&self, ctx: &Context) -> Result<(), CniError> {
        let conf = HostLocalConf::from_value(&ctx.raw)?;
        // STATUS only looks: a network that never allocated has every address free.
        let store = Store::open_existing(&conf.data_dir, &conf.name).map_err(|e| {
            CniError::new(ErrorCode::NotAvailable, e.msg.clone()).with_details(e.details)
        })?;
        let allocated: Vec<IpAddr> = match store {
            Some(store) => store.allocations()?.into_iter().map(|(ip, _)| ip).collect(),
            None => Vec::new(),
        };
        for (i, set) in conf.range_sets.iter().enumerate() {
            let capacity: u128 = set
                .iter()
                .map(|r| r.size() - u128::from(r.gateway.is_some_and(|g| r.contains(g))))
                .fold(0, u128::saturating_add);
            let used = allocated
                .iter()
                .filter(|ip| set.iter().any(|r| r.contains(**ip)))
                .count() as u128;
            if used >= capacity {
                return Err(CniError::new(
                    ErrorCode::NotAvailable,
                    format!("range set {i} has no free address ({used} allocated)"),
                ));
            }
        }
        Ok(())
    }

    async fn gc(&self, ctx: &Context) -> Result<(), CniError> {
        let conf = HostLocalConf::from_value(&ctx.raw)?;
        let valid = ctx.conf.valid_attachments.as_ref().ok_or_else(|| {
            CniError::config("GC: network config field `cni.dev/valid-attachments` is missing")
        })?;
        let Some(store) = Store::open_existing(&conf.data_dir, &conf.name)? else {
            return Ok(());
        };
        for (ip, owner) in store.allocations()? {
            let in_use = valid.iter().any(|a| owner.is(&a.container_id, &a.ifname));
            if !in_use {
                tracing::info!(%ip, container = %owner.container_id, "GC: releasing");
                store.release(ip)?;
            }
        }
        Ok(())
    }
}

//! Services' ClusterIPs and nodePorts: allocated at create (or when an update first needs
//! them), unique across every API server on the store, released when the Service goes.
//!
//! A ClusterIP is held by an `IPAddress` object named by the address, as kube-apiserver 1.33
//! does (MultiCIDRServiceAllocator): the store's create-if-absent makes the allocation atomic
//! and it survives restarts. A nodePort is held the same way by a key of its own under
//! [`NODE_PORT_PREFIX`]. A holder whose Service is gone (a crash between the two writes) is
//! reclaimed when its value is asked for again.

use std::net::IpAddr;

use rand::Rng;
use serde_json::{Value, json};

use super::service::{wants_cluster_ip, wants_node_ports};
use crate::rest;
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult, Cause};
use crate::strategy::{self, meta_str};

/// Where nodePort holders live: not a served kind, so no client lists them.
pub const NODE_PORT_PREFIX: &str = "/registry/capstan/servicenodeports/";

/// How old a holder must be before it may be reclaimed: younger ones may belong to a write
/// still in flight, whose Service is not stored yet.
const RECLAIM_AFTER_SECONDS: i64 = 60;

/// Random picks before a range is scanned in order.
const RANDOM_TRIES: usize = 32;
/// The largest range scanned in order when random picks keep hitting taken values.
const SCAN_LIMIT: u128 = 1 << 16;

/// What a write allocated: released again if the write fails.
#[derive(Debug, Default)]
pub struct Allocated {
    ips: Vec<String>,
    ports: Vec<u16>,
}

/// The service's `(namespace, name)`.
fn owner(service: &Value) -> (String, String) {
    (
        meta_str(service, "namespace").unwrap_or("").to_string(),
        meta_str(service, "name").unwrap_or("").to_string(),
    )
}

fn ip_key(server: &ApiServer, ip: &str) -> Option<String> {
    server
        .kinds
        .find("networking.k8s.io", "v1", "ipaddresses")
        .map(|k| k.key(None, ip))
}

fn node_ports(service: &Value) -> Vec<u16> {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
        .filter_map(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .collect()
}

fn cluster_ip(service: &Value) -> Option<String> {
    service
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .map(str::to_string)
}

fn invalid(service: &Value, field: &str, value: &str, detail: &str) -> ApiError {
    let name = meta_str(service, "name").unwrap_or("");
    ApiError::invalid(
        "",
        "Service",
        name,
        vec![Cause::invalid(field, value, detail)],
    )
}

/// Allocates what `service` needs and does not hold yet (`old` is the stored Service on an
/// update), filling in `spec.clusterIP(s)` and each port's `nodePort`.
pub async fn allocate(
    server: &ApiServer,
    service: &mut Value,
    old: Option<&Value>,
) -> ApiResult<Allocated> {
    let mut allocated = Allocated::default();
    match allocate_into(server, service, old, &mut allocated).await {
        Ok(()) => Ok(allocated),
        Err(error) => {
            release(server, allocated).await;
            Err(error)
        }
    }
}

async fn allocate_into(
    server: &ApiServer,
    service: &mut Value,
    old: Option<&Value>,
    allocated: &mut Allocated,
) -> ApiResult<()> {
    let held_ip = old.and_then(cluster_ip);
    if wants_cluster_ip(service) {
        match cluster_ip(service) {
            Some(ip) if Some(&ip) == held_ip.as_ref() => {}
            Some(ip) => {
                claim_ip(server, service, &ip).await?;
                allocated.ips.push(ip);
            }
            None => {
                let ip = random_ip(server, service).await?;
                service["spec"]["clusterIP"] = json!(ip);
                allocated.ips.push(ip);
            }
        }
        super::service::set_families(service);
    }
    if wants_node_ports(service) {
        let held = old.map(node_ports).unwrap_or_default();
        let count = service
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..count {
            let field = format!("spec.ports[{i}].nodePort");
            let wanted = service["spec"]["ports"][i]
                .get("nodePort")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            if wanted != 0 && held.iter().any(|p| u64::from(*p) == wanted) {
                continue;
            }
            let port = if wanted == 0 {
                random_port(server, service).await?
            } else {
                let port = u16::try_from(wanted).unwrap_or(0);
                claim_port(server, service, port, &field).await?;
                port
            };
            allocated.ports.push(port);
            service["spec"]["ports"][i]["nodePort"] = json!(port);
        }
    }
    Ok(())
}

/// Releases what `old` held and `new` does not (after an update, or `new` None after a delete).
pub async fn release_unused(server: &ApiServer, old: &Value, new: Option<&Value>) {
    let keep_ip = new.and_then(cluster_ip);
    let keep_ports = new.map(node_ports).unwrap_or_default();
    let mut unused = Allocated::default();
    if let Some(ip) = cluster_ip(old).filter(|ip| Some(ip) != keep_ip.as_ref()) {
        unused.ips.push(ip);
    }
    unused.ports = node_ports(old)
        .into_iter()
        .filter(|p| !keep_ports.contains(p))
        .collect();
    release(server, unused).await;
}

/// Releases allocations (a failed write's, or a deleted Service's).
pub async fn release(server: &ApiServer, allocated: Allocated) {
    for ip in allocated.ips {
        if let Some(key) = ip_key(server, &ip) {
            delete_key(server, &key).await;
        }
    }
    for port in allocated.ports {
        delete_key(server, &format!("{NODE_PORT_PREFIX}{port}")).await;
    }
}

async fn delete_key(server: &ApiServer, key: &str) {
    match server.store.delete(key, None).await {
        Ok(_) | Err(capstan_store::StoreError::NotFound(_)) => {}
        // Left behind, it is reclaimed when asked for again (its Service is gone).
        Err(error) => tracing::warn!(%key, %error, "could not release a service allocation"),
    }
}

/// The holder object of a ClusterIP, as upstream's IPAddress.
fn ip_holder(service: &Value, ip: &str) -> Value {
    let (namespace, name) = owner(service);
    let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
    let mut holder = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip,
            "labels": {
                "ipaddress.kubernetes.io/ip-family": family,
                "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
            },
        },
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": namespace, "name": name}},
    });
    strategy::metadata_mut(&mut holder).insert("uid".into(), json!(strategy::new_uid()));
    strategy::metadata_mut(&mut holder).insert("creationTimestamp".into(), json!(strategy::now()));
    holder
}

/// Creates `key` with `value` if absent; when present but its Service no longer holds it,
/// takes it over. Whether it is now ours.
async fn take(
    server: &ApiServer,
    key: &str,
    value: &Value,
    held: impl Fn(&Value) -> bool,
) -> ApiResult<bool> {
    let store_error = |e: capstan_store::StoreError| {
        tracing::warn!(%key, error = %e, "service allocation failed");
        ApiError::internal("an error on the server prevented the allocation from succeeding")
    };
    match server.store.create(key, rest::encode(value)).await {
        Ok(_) => return Ok(true),
        Err(capstan_store::StoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(store_error(e)),
    }
    let Some(existing) = server.store.get(key).await.map_err(store_error)? else {
        return Ok(false);
    };
    let holder: Value = serde_json::from_slice(&existing.value).unwrap_or(Value::Null);
    let young = holder
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_none_or(|t| {
            (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()
                < RECLAIM_AFTER_SECONDS
        });
    if young {
        return Ok(false);
    }
    let (namespace, name) = match holder.pointer("/spec/parentRef") {
        Some(parent) => (
            parent
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or(""),
            parent.get("name").and_then(Value::as_str).unwrap_or(""),
        ),
        None => ("", ""),
    };
    let Some(services) = server.kinds.find("", "v1", "services") else {
        return Ok(false);
    };
    let service = server
        .store
        .get(&services.key(Some(namespace), name))
        .await
        .map_err(store_error)?;
    let still_held = match service {
        Some(kv) => serde_json::from_slice::<Value>(&kv.value).is_ok_and(|s| held(&s)),
        None => false,
    };
    if still_held {
        return Ok(false);
    }
    tracing::info!(%key, "reclaiming a service allocation whose service is gone");
    match server
        .store
        .update(key, rest::encode(value), existing.mod_revision)
        .await
    {
        Ok(_) => Ok(true),
        Err(
            capstan_store::StoreError::Conflict { .. } | capstan_store::StoreError::NotFound(_),
        ) => Ok(false),
        Err(e) => Err(store_error(e)),
    }
}

fn range_text(server: &ApiServer) -> String {
    server.config.service_cluster_ip_range.to_string()
}

async fn claim_ip(server: &ApiServer, service: &Value, ip: &str) -> ApiResult<()> {
    let field = "spec.clusterIPs[0]";
    let parsed: Option<IpAddr> = ip.parse().ok();
    let Some(parsed) = parsed else {
        return Err(invalid(
            service,
            field,
            ip,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    };
    if !server.config.service_cluster_ip_range.contains(&parsed) {
        return Err(invalid(
            service,
            field,
            ip,
            &format!(
                "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                range_text(server)
            ),
        ));
    }
    let canonical = parsed.to_string();
    let key =
        ip_key(server, &canonical).ok_or_else(|| ApiError::internal("no ipaddresses kind"))?;
    let ours = take(server, &key, &ip_holder(service, &canonical), |s| {
        cluster_ip(s).as_deref() == Some(canonical.as_str())
    })
    .await?;
    if !ours {
        return Err(invalid(
            service,
            field,
            ip,
            &format!("failed to allocate IP {ip}: provided IP is already allocated"),
        ));
    }
    Ok(())
}

/// The `offset`th address of the range.
fn nth(net: &ipnet::IpNet, offset: u128) -> IpAddr {
    match net {
        ipnet::IpNet::V4(v4) => {
            let base = u32::from(v4.network()) as u128;
            IpAddr::V4(std::net::Ipv4Addr::from((base + offset) as u32))
        }
        ipnet::IpNet::V6(v6) => {
            let base = u128::from(v6.network());
            IpAddr::V6(std::net::Ipv6Addr::from(base.wrapping_add(offset)))
        }
    }
}

/// The usable offsets of the range: not the network address, nor the first address (the
/// `kubernetes` Service's, asked for by name), nor IPv4's broadcast.
fn offsets(net: &ipnet::IpNet) -> (u128, u128) {
    let bits = u32::from(net.max_prefix_len() - net.prefix_len()).min(64);
    let size: u128 = 1u128 << bits;
    let last = match net {
        ipnet::IpNet::V4(_) => size.saturating_sub(2),
        ipnet::IpNet::V6(_) => size.saturating_sub(1),
    };
    (2, last)
}

async fn random_ip(server: &ApiServer, service: &Value) -> ApiResult<String> {
    let net = server.config.service_cluster_ip_range;
    let (first, last) = offsets(&net);
    if last < first {
        return Err(full("serviceIP"));
    }
    let span = last - first + 1;
    let start = rand::rng().random_range(0..span);
    let picks = (0..RANDOM_TRIES as u128)
        .map(|_| rand::rng().random_range(0..span))
        .chain((0..span.min(SCAN_LIMIT)).map(|i| (start + i) % span));
    for pick in picks {
        let ip = nth(&net, first + pick).to_string();
        let Some(key) = ip_key(server, &ip) else {
            break;
        };
        let wanted = ip.clone();
        if take(server, &key, &ip_holder(service, &ip), move |s| {
            cluster_ip(s).as_deref() == Some(wanted.as_str())
        })
        .await?
        {
            return Ok(ip);
        }
    }
    Err(full("serviceIP"))
}

fn full(what: &str) -> ApiError {
    ApiError::internal(format!("failed to allocate a {what}: range is full"))
}

fn port_holder(service: &Value) -> Value {
    let (namespace, name) = owner(service);
    json!({
        "metadata": {"creationTimestamp": strategy::now()},
        "spec": {"parentRef": {"resource": "services", "namespace": namespace, "name": name}},
    })
}

async fn claim_port(server: &ApiServer, service: &Value, port: u16, field: &str) -> ApiResult<()> {
    let range = server.config.service_node_port_range.clone();
    if !range.contains(&port) {
        let name = meta_str(service, "name").unwrap_or("");
        let cause = Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {port}: provided port is not in the valid range. The range of valid ports is {}-{}",
                range.start(),
                range.end()
            ),
            field: field.into(),
        };
        return Err(ApiError::invalid("", "Service", name, vec![cause]));
    }
    let key = format!("{NODE_PORT_PREFIX}{port}");
    if !take(server, &key, &port_holder(service), |s| {
        node_ports(s).contains(&port)
    })
    .await?
    {
        let name = meta_str(service, "name").unwrap_or("");
        let cause = Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {port}: provided port is already allocated"),
            field: field.into(),
        };
        return Err(ApiError::invalid("", "Service", name, vec![cause]));
    }
    Ok(())
}

async fn random_port(server: &ApiServer, service: &Value) -> ApiResult<u16> {
    let range = server.config.service_node_port_range.clone();
    let (low, high) = (*range.start(), *range.end());
    let span = u32::from(high - low) + 1;
    let start = rand::rng().random_range(0..span);
    let picks = (0..RANDOM_TRIES as u32)
        .map(|_| rand::rng().random_range(0..span))
        .chain((0..span).map(|i| (start + i) % span));
    for pick in picks {
        let port = low + pick as u16;
        let key = format!("{NODE_PORT_PREFIX}{port}");
        if take(server, &key, &port_holder(service), |s| {
            node_ports(s).contains(&port)
        })
        .await?
        {
            return Ok(port);
        }
    }
    Err(full("nodePort"))
}

/// Makes the `kubernetes` ServiceCIDR of `--service-cluster-ip-range` when missing, as
/// kube-apiserver 1.33 does: it names the range ClusterIPs come from.
pub async fn ensure_default_cidr(server: &ApiServer) -> ApiResult<()> {
    let Some(kind) = server.kinds.find("networking.k8s.io", "v1", "servicecidrs") else {
        return Ok(());
    };
    let range = server.config.service_cluster_ip_range.to_string();
    let cidr = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "ServiceCIDR",
        "metadata": {"name": "kubernetes", "uid": strategy::new_uid(), "creationTimestamp": strategy::now()},
        "spec": {"cidrs": [range]},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "", "message": "Kubernetes Service CIDR is ready", "lastTransitionTime": strategy::now()}]},
    });
    match server
        .store
        .create(&kind.key(None, "kubernetes"), rest::encode(&cidr))
        .await
    {
        Ok(_) | Err(capstan_store::StoreError::AlreadyExists(_)) => Ok(()),
        Err(error) => Err(rest::store_error(error, kind, "kubernetes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_skip_network_first_and_broadcast() {
        let net: ipnet::IpNet = "10.0.0.0/29".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(offsets(&net), (2, 6));
        assert_eq!(nth(&net, 6).to_string(), "10.0.0.6");
    }
}

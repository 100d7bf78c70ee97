//! The `kubernetes` Service in `default`, which points pods at the API servers, kept as
//! kube-apiserver's bootstrap controller and "lease" endpoint reconciler keep it: the Service
//! (ClusterIP the first address of `--service-cluster-ip-range`, port `https` 443 to the
//! secure port) is made when missing; every [`KubernetesServiceOptions::interval`] this server
//! renews a lease on its advertised address, and the Endpoints and the EndpointSlice are set
//! to the union of live leases, so every API server on the store appears and one that stops
//! renewing drops out after its TTL.

mod leases;
mod loopback;
mod objects;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;

pub use leases::PREFIX as LEASE_PREFIX;
pub use objects::{NAME, NAMESPACE};

use crate::server::ApiServer;
use loopback::call;

/// How this server takes part.
#[derive(Debug, Clone)]
pub struct KubernetesServiceOptions {
    /// `--advertise-address` with the secure port: what the Endpoints list for this server.
    pub advertise: SocketAddr,
    /// The Service's port (443).
    pub service_port: u16,
    /// How often the Service is checked and the lease renewed (upstream: 10 s).
    pub interval: Duration,
    /// How long a lease lasts unrenewed (upstream: 15 s).
    pub lease_ttl: Duration,
}

impl KubernetesServiceOptions {
    /// Upstream's timings for a server advertising `advertise`.
    pub fn new(advertise: SocketAddr) -> KubernetesServiceOptions {
        KubernetesServiceOptions {
            advertise,
            service_port: 443,
            interval: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(15),
        }
    }
}

/// The running reconciler; [`Reconciler::stop`] takes this server out of the Endpoints.
pub struct Reconciler {
    task: tokio::task::JoinHandle<()>,
    state: Arc<State>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("advertise", &self.state.options.advertise)
            .finish()
    }
}

struct State {
    server: Weak<ApiServer>,
    options: KubernetesServiceOptions,
    leases: leases::Leases,
}

/// Starts keeping the `kubernetes` Service for `server` (which it does not keep alive).
pub fn start(server: &Arc<ApiServer>, options: KubernetesServiceOptions) -> Reconciler {
    let state = Arc::new(State {
        server: Arc::downgrade(server),
        leases: leases::Leases::new(Arc::clone(&server.store), options.lease_ttl),
        options,
    });
    let task = tokio::spawn(run(Arc::clone(&state)));
    Reconciler { task, state }
}

impl Reconciler {
    /// Stops reconciling and removes this server's lease and address at once, so that clients
    /// stop being sent here before the TTL would drop it; bounded by twice the interval (the
    /// store may be gone).
    pub async fn stop(self) {
        self.task.abort();
        let state = self.state;
        let interval = state.options.interval;
        let removal = async {
            let ip = state.options.advertise.ip();
            if let Err(error) = state.leases.remove(ip).await {
                tracing::warn!(%error, "could not remove this API server's lease");
                return;
            }
            if let Some(server) = state.server.upgrade() {
                if let Err(error) = sync_endpoints(&server, &state, true).await {
                    tracing::warn!(%error, "could not remove this API server from the kubernetes endpoints");
                }
            }
        };
        if tokio::time::timeout(interval * 2, removal).await.is_err() {
            tracing::warn!("removing this API server from the kubernetes endpoints timed out");
        }
    }
}

async fn run(state: Arc<State>) {
    let mut ticker = tokio::time::interval(state.options.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first pass puts this server's port back: a restart may have changed it.
    let mut reconcile_ports = true;
    loop {
        ticker.tick().await;
        let Some(server) = state.server.upgrade() else {
            return;
        };
        if let Err(error) = ensure_service(&server, &state.options).await {
            tracing::warn!(%error, "unable to sync the kubernetes service");
        }
        if let Err(error) = state.leases.renew(state.options.advertise.ip()).await {
            tracing::warn!(%error, "could not renew this API server's lease");
            continue;
        }
        match sync_endpoints(&server, &state, reconcile_ports).await {
            Ok(()) => reconcile_ports = false,
            Err(error) => tracing::warn!(%error, "unable to sync the kubernetes endpoints"),
        }
    }
}

/// The first address of the range: the `kubernetes` Service's ClusterIP.
pub fn service_ip(range: &ipnet::IpNet) -> IpAddr {
    match range {
        ipnet::IpNet::V4(net) => IpAddr::V4(std::net::Ipv4Addr::from(
            u32::from(net.network()).wrapping_add(1),
        )),
        ipnet::IpNet::V6(net) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(net.network()).wrapping_add(1),
        )),
    }
}

fn path(plural: &str, name: Option<&str>) -> String {
    let base = match plural {
        "endpointslices" => format!("/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/{plural}"),
        _ => format!("/api/v1/namespaces/{NAMESPACE}/{plural}"),
    };
    match name {
        Some(name) => format!("{base}/{name}"),
        None => base,
    }
}

/// Why one pass failed (logged; the next pass retries).
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("{what}: {status} {message}")]
    Api {
        what: &'static str,
        status: StatusCode,
        message: String,
    },
    #[error("the leases: {0}")]
    Leases(#[from] capstan_store::StoreError),
    #[error("no API server addresses are in storage; not erasing the kubernetes endpoints")]
    NoLeases,
}

fn failed(what: &'static str, answer: &loopback::Answer) -> SyncError {
    SyncError::Api {
        what,
        status: answer.status,
        message: answer.message(),
    }
}

async fn ensure_service(
    server: &ApiServer,
    options: &KubernetesServiceOptions,
) -> Result<(), SyncError> {
    let got = call(server, Method::GET, &path("services", Some(NAME)), None).await;
    if got.ok() {
        return Ok(());
    }
    if got.status != StatusCode::NOT_FOUND {
        return Err(failed("get the service", &got));
    }
    let service = objects::service(
        service_ip(&server.config.service_cluster_ip_range),
        options.service_port,
        options.advertise.port(),
    );
    let made = call(
        server,
        Method::POST,
        &path("services", None),
        Some(&service),
    )
    .await;
    match made.status {
        status if status.is_success() => {
            tracing::info!("created the kubernetes service");
            Ok(())
        }
        StatusCode::CONFLICT => Ok(()),
        _ => Err(failed("create the service", &made)),
    }
}

/// Writes the Endpoints and the EndpointSlice for the live leases.
async fn sync_endpoints(
    server: &ApiServer,
    state: &State,
    reconcile_ports: bool,
) -> Result<(), SyncError> {
    let got = call(server, Method::GET, &path("endpoints", Some(NAME)), None).await;
    let current = match got.status {
        status if status.is_success() => Some(got.body),
        StatusCode::NOT_FOUND => None,
        _ => return Err(failed("get the endpoints", &got)),
    };
    let ips = state.leases.live().await?;
    // This server just renewed its own: none means the store is not answering truly.
    if ips.is_empty() {
        return Err(SyncError::NoLeases);
    }
    let ports = objects::endpoint_ports(state.options.advertise.port());
    let endpoints = match objects::endpoints(current.as_ref(), &ips, &ports, reconcile_ports) {
        Some(endpoints) => {
            tracing::info!(addresses = ?ips, "resetting the endpoints of the kubernetes service");
            let written = match current {
                Some(_) => {
                    call(
                        server,
                        Method::PUT,
                        &path("endpoints", Some(NAME)),
                        Some(&endpoints),
                    )
                    .await
                }
                None => {
                    call(
                        server,
                        Method::POST,
                        &path("endpoints", None),
                        Some(&endpoints),
                    )
                    .await
                }
            };
            if !written.ok() && written.status != StatusCode::CONFLICT {
                return Err(failed("write the endpoints", &written));
            }
            endpoints
        }
        None => current.unwrap_or(Value::Null),
    };
    sync_slice(server, &endpoints).await
}

async fn sync_slice(server: &ApiServer, endpoints: &Value) -> Result<(), SyncError> {
    let desired = objects::slice_from(endpoints);
    let got = call(
        server,
        Method::GET,
        &path("endpointslices", Some(NAME)),
        None,
    )
    .await;
    if got.status == StatusCode::NOT_FOUND {
        let made = call(
            server,
            Method::POST,
            &path("endpointslices", None),
            Some(&desired),
        )
        .await;
        return match made.status {
            status if status.is_success() || status == StatusCode::CONFLICT => Ok(()),
            _ => Err(failed("create the endpointslice", &made)),
        };
    }
    if !got.ok() {
        return Err(failed("get the endpointslice", &got));
    }
    let current = got.body;
    // addressType is immutable: a slice of the other family is made again.
    if current.get("addressType") != desired.get("addressType") {
        let deleted = call(
            server,
            Method::DELETE,
            &path("endpointslices", Some(NAME)),
            None,
        )
        .await;
        if !deleted.ok() && deleted.status != StatusCode::NOT_FOUND {
            return Err(failed("delete the endpointslice", &deleted));
        }
        let made = call(
            server,
            Method::POST,
            &path("endpointslices", None),
            Some(&desired),
        )
        .await;
        return match made.ok() {
            true => Ok(()),
            false => Err(failed("create the endpointslice", &made)),
        };
    }
    if !objects::slice_differs(&current, &desired) {
        return Ok(());
    }
    let mut update = desired;
    if let Some(version) = current.pointer("/metadata/resourceVersion") {
        update["metadata"]["resourceVersion"] = version.clone();
    }
    let written = call(
        server,
        Method::PUT,
        &path("endpointslices", Some(NAME)),
        Some(&update),
    )
    .await;
    if written.ok() || written.status == StatusCode::CONFLICT {
        Ok(())
    } else {
        Err(failed("update the endpointslice", &written))
    }
}

/// kube-apiserver's default `--advertise-address`: the bind address unless it is unspecified
/// or loopback, else the host's first non-loopback IPv4 address (upstream picks the default
/// route's interface), else the bind address itself.
pub fn default_advertise_address(bind: IpAddr) -> IpAddr {
    if !bind.is_unspecified() && !bind.is_loopback() {
        return bind;
    }
    host_ipv4().unwrap_or(bind)
}

/// The first non-loopback, non-link-local IPv4 address of an interface that is up.
fn host_ipv4() -> Option<IpAddr> {
    let addresses = nix::ifaddrs::getifaddrs().ok()?;
    addresses
        .filter(|a| {
            a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)
                && !a
                    .flags
                    .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
        })
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .find(|ip| !ip.is_loopback() && !ip.is_link_local() && !ip.is_unspecified())
        .map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_ip_is_the_first_of_the_range() {
        let range: ipnet::IpNet = "10.96.0.0/12".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(service_ip(&range).to_string(), "10.96.0.1");
        let range: ipnet::IpNet = "fd00:10:96::/112"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        assert_eq!(service_ip(&range).to_string(), "fd00:10:96::1");
    }

    #[test]
    fn a_specific_bind_address_is_advertised() {
        let bind: IpAddr = "192.0.2.7".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(default_advertise_address(bind), bind);
        let any: IpAddr = "0.0.0.0".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(default_advertise_address(any), host_ipv4().unwrap_or(any));
    }
}

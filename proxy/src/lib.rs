//! The node's service proxy, without netfilter: each Service's ClusterIPs go on a dummy
//! interface ([`vips`]) so the kernel delivers them locally, and a userspace frontend per
//! VIP:port and node port ([`tcp`]) joins connections to ready endpoints from the
//! EndpointSlices ([`model`]). Services and EndpointSlices are watched; a change to one
//! Service touches only its own frontends and addresses.
//!
//! TCP only for now: UDP and SCTP ports are named in a warning as not implemented, and
//! ClientIP session affinity is not applied yet. The client's source address is lost at the
//! relay, as with any userspace proxy.

pub mod model;
pub mod tcp;
pub mod vips;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};

use model::{Frontend, Protocol, Route};
use tcp::TcpFrontend;

/// How the proxy is set up.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// The dummy interface for the VIPs.
    pub device: String,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            device: vips::DEFAULT_DEVICE.to_string(),
        }
    }
}

/// What changed in the watched objects.
enum Change {
    /// The Service with this key, or one of its slices.
    Service(String),
    /// A watch (re)listed: everything is looked at again.
    All,
}

/// The frontends and addresses in place.
struct Applied {
    vips: vips::Vips,
    /// Per Service key, its frontends.
    services: BTreeMap<String, BTreeSet<Frontend>>,
    running: HashMap<Frontend, TcpFrontend>,
    /// How many frontends use each VIP.
    vip_users: HashMap<IpAddr, usize>,
    /// Frontends already named as not implemented.
    warned: BTreeSet<Frontend>,
}

impl Applied {
    async fn sync(&mut self, key: &str, routes: Vec<Route>) {
        let mut wanted: BTreeMap<Frontend, (String, Vec<SocketAddr>)> = BTreeMap::new();
        for route in routes {
            for frontend in &route.frontends {
                wanted.insert(
                    *frontend,
                    (route.port_name.clone(), route.endpoints.clone()),
                );
            }
        }
        let before = self.services.remove(key).unwrap_or_default();
        for gone in before.iter().filter(|f| !wanted.contains_key(f)) {
            self.running.remove(gone);
            self.release_vip(gone.ip).await;
        }
        for (frontend, (port_name, endpoints)) in &wanted {
            if frontend.protocol != Protocol::Tcp {
                if self.warned.insert(*frontend) {
                    tracing::warn!(service = %key, port = %port_name, protocol = ?frontend.protocol, "service port not proxied: only TCP is implemented");
                }
                continue;
            }
            if let Some(running) = self.running.get(frontend) {
                running.update(endpoints.clone());
                continue;
            }
            if !frontend.ip.is_unspecified() {
                if let Err(error) = self.vips.add(frontend.ip).await {
                    tracing::warn!(service = %key, ip = %frontend.ip, %error, "cannot put the service IP on the VIP device");
                    continue;
                }
                *self.vip_users.entry(frontend.ip).or_default() += 1;
            }
            let owner = format!("{key}:{port_name}");
            tracing::info!(service = %key, ip = %frontend.ip, port = frontend.port, endpoints = endpoints.len(), "service frontend added");
            self.running.insert(
                *frontend,
                TcpFrontend::start(
                    SocketAddr::new(frontend.ip, frontend.port),
                    endpoints.clone(),
                    owner,
                ),
            );
        }
        let kept: BTreeSet<Frontend> = wanted
            .into_keys()
            .filter(|f| self.running.contains_key(f))
            .collect();
        if !kept.is_empty() {
            self.services.insert(key.to_string(), kept);
        } else if !before.is_empty() {
            tracing::info!(service = %key, "service frontends removed");
        }
    }

    /// Closes every frontend and takes every address this proxy added off the device.
    async fn release_all(&mut self) {
        self.running.clear();
        self.services.clear();
        self.vip_users.clear();
        let added: Vec<IpAddr> = self.vips.added().iter().copied().collect();
        for ip in added {
            if let Err(error) = self.vips.remove(ip).await {
                tracing::warn!(%ip, %error, "cannot take the service IP off the VIP device");
            }
        }
        tracing::info!(device = %self.vips.device(), "service proxy stopped; its addresses removed");
    }

    async fn release_vip(&mut self, ip: IpAddr) {
        if ip.is_unspecified() {
            return;
        }
        let Some(users) = self.vip_users.get_mut(&ip) else {
            return;
        };
        *users -= 1;
        if *users == 0 {
            self.vip_users.remove(&ip);
            if let Err(error) = self.vips.remove(ip).await {
                tracing::warn!(%ip, %error, "cannot take the service IP off the VIP device");
            }
        }
    }
}

fn routes_of(services: &Store<Service>, slices: &Store<EndpointSlice>, key: &str) -> Vec<Route> {
    let Some((namespace, name)) = key.split_once('/') else {
        return Vec::new();
    };
    let Some(service) = services.get(&ObjectRef::new(name).within(namespace)) else {
        return Vec::new();
    };
    let all = slices.state();
    let own: Vec<&EndpointSlice> = all
        .iter()
        .filter(|s| model::slice_service_key(s).as_deref() == Some(key))
        .map(|s| s.as_ref())
        .collect();
    model::routes(&service, &own)
}

/// Runs the proxy on the current runtime until `shutdown` completes, then takes its addresses
/// off the VIP device (connections already relayed are left to end on their own).
pub async fn run(
    client: kube::Client,
    options: ProxyOptions,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let vips = match vips::Vips::new(&options.device) {
        Ok(vips) => vips,
        Err(error) => {
            tracing::warn!(%error, "no netlink socket: Services are not proxied");
            return;
        }
    };
    let (service_store, service_writer) = reflector::store::<Service>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let service_changes = reflector::reflector(
        service_writer,
        watcher::watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .filter_map(|event| async move {
        match event {
            Ok(Event::Apply(s) | Event::Delete(s)) => Some(Change::Service(model::service_key(&s))),
            Ok(Event::InitDone) => Some(Change::All),
            Ok(_) => None,
            Err(error) => {
                tracing::debug!(%error, "watching Services failed; retrying");
                None
            }
        }
    });
    let slice_changes = reflector::reflector(
        slice_writer,
        watcher::watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .filter_map(|event| async move {
        match event {
            Ok(Event::Apply(s) | Event::Delete(s)) => {
                model::slice_service_key(&s).map(Change::Service)
            }
            Ok(Event::InitDone) => Some(Change::All),
            Ok(_) => None,
            Err(error) => {
                tracing::debug!(%error, "watching EndpointSlices failed; retrying");
                None
            }
        }
    });
    let mut changes = futures::stream::select(service_changes.boxed(), slice_changes.boxed());
    let mut applied = Applied {
        vips,
        services: BTreeMap::new(),
        running: HashMap::new(),
        vip_users: HashMap::new(),
        warned: BTreeSet::new(),
    };
    tracing::info!(device = %options.device, "service proxy started");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let change = tokio::select! {
            change = changes.next() => change,
            () = &mut shutdown => None,
        };
        let Some(change) = change else {
            applied.release_all().await;
            return;
        };
        let keys: Vec<String> = match change {
            Change::Service(key) => vec![key],
            Change::All => {
                let mut keys: BTreeSet<String> = applied.services.keys().cloned().collect();
                keys.extend(service_store.state().iter().map(|s| model::service_key(s)));
                keys.into_iter().collect()
            }
        };
        for key in keys {
            let routes = routes_of(&service_store, &slice_store, &key);
            applied.sync(&key, routes).await;
        }
    }
}

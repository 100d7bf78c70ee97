//! `capstan control-plane`: the API server over the embedded store or etcd, with the scheduler
//! and the controller manager in the same process (each an API client through the in-process
//! transport, each acting only while it holds its Lease), until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::sync::Arc;

use capstan_apiserver::run::ControlPlaneOptions;
use capstan_apiserver::{ApiServer, InProcess};
use tokio::sync::{oneshot, watch};

use crate::cli::ControlPlaneArgs;

/// Work started beside the control plane once its API server is ready, given the bound
/// address and the server (`capstan server`'s node). Its error stops the control plane.
pub type Companion = Box<dyn FnOnce(SocketAddr, Arc<ApiServer>) -> CompanionWork + Send>;

/// What a [`Companion`] runs.
pub type CompanionWork =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// Runs the control plane in the foreground, with `companion` once it is ready.
pub fn run(args: ControlPlaneArgs, companion: Option<Companion>) -> Result<(), String> {
    let authorization_modes = capstan_apiserver::authz::parse_modes(&args.authorization_mode)?;
    let pki_paths = capstan_apiserver::pki::PkiPaths::new(&args.data_dir);
    let options = ControlPlaneOptions {
        data_dir: args.data_dir,
        bind_address: args.bind_address,
        secure_port: args.secure_port,
        advertise_address: args.advertise_address,
        endpoint_reconciler: capstan_apiserver::run::DEFAULT_ENDPOINT_RECONCILER,
        service_cluster_ip_range: args.service_cluster_ip_range,
        cluster_domain: args.cluster_domain,
        extra_sans: args.tls_sans,
        etcd_servers: args.etcd_servers,
        token_auth_file: args.token_auth_file,
        anonymous_auth: args.anonymous_auth,
        service_account_issuers: args.service_account_issuers,
        api_audiences: args.api_audiences,
        service_account_max_token_expiration: args.service_account_max_token_expiration,
        authorization_modes,
    };
    let identity = capstan_leader::default_identity();
    let mut controller_options = capstan_controllers::ControllerOptions::new(&identity);
    controller_options.controllers = args.controllers;
    controller_options.cluster_cidr = args.cluster_cidr;
    controller_options.node_cidr_mask_size = args.node_cidr_mask_size;
    controller_options.legacy_token_clean_up_period =
        args.legacy_service_account_token_clean_up_period;
    let scheduler_options = capstan_scheduler::SchedulerOptions::new(&identity);
    let (run_scheduler, run_controllers) =
        (!args.disable_scheduler, !args.disable_controller_manager);

    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start the async runtime: {e}"))?;
    let (stop, stopped) = watch::channel(false);
    let mut loops = tokio::task::JoinSet::new();
    let handle = tokio.handle().clone();
    let (failed, companion_failed) = oneshot::channel::<String>();
    let ready = |address, server: Arc<ApiServer>| {
        tracing::info!(%address, "ready");
        if let Some(companion) = companion {
            let work = companion(address, Arc::clone(&server));
            loops.spawn_on(
                async move {
                    if let Err(error) = work.await {
                        let _ = failed.send(error);
                    }
                },
                &handle,
            );
        }
        match std::fs::read_to_string(&pki_paths.ca_cert) {
            Ok(ca_pem) => {
                let client = kube::Client::new(InProcess::admin(Arc::clone(&server)), "default");
                loops.spawn_on(
                    crate::bootstrap_tokens::publish_join_info(
                        client,
                        ca_pem,
                        published_server(address),
                    ),
                    &handle,
                );
            }
            Err(error) => {
                tracing::warn!(path = %pki_paths.ca_cert.display(), %error, "no cluster CA: nodes cannot join with tokens")
            }
        }
        if run_scheduler {
            let client = kube::Client::new(InProcess::scheduler(Arc::clone(&server)), "default");
            loops.spawn_on(
                capstan_scheduler::run(client, scheduler_options, until(stopped.clone())),
                &handle,
            );
        }
        if run_controllers {
            let client = kube::Client::new(
                InProcess::controller_manager(Arc::clone(&server)),
                "default",
            );
            let mut controller_options = controller_options;
            // The credentials exist once the API server is ready: the CA every namespace gets
            // as kube-root-ca.crt, and the CSR signer's pair (kubeadm points
            // --cluster-signing-{cert,key}-file at the cluster CA).
            match std::fs::read_to_string(&pki_paths.ca_cert) {
                Ok(pem) => controller_options.root_ca_pem = Some(pem),
                Err(error) => {
                    tracing::warn!(path = %pki_paths.ca_cert.display(), %error, "no root CA to publish")
                }
            }
            controller_options.signing = signing_pair(&pki_paths);
            loops.spawn_on(
                capstan_controllers::run(client, controller_options, until(stopped.clone())),
                &handle,
            );
        }
    };
    let mut companion_error = None;
    let result = tokio.block_on(async {
        capstan_apiserver::run::run(options, ready, async {
            tokio::select! {
                () = capstan_runtime::server::shutdown_signal() => {}
                Ok(error) = companion_failed => companion_error = Some(error),
            }
            // The loops give their Leases up first, so that another control plane takes over
            // at once instead of after the lease duration.
            let _ = stop.send(true);
        })
        .await
    });
    let _ = stop.send(true);
    tokio.block_on(async {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while loops.join_next().await.is_some() {}
        })
        .await;
    });
    if let Some(error) = companion_error {
        return Err(error);
    }
    result.map_err(|e| e.to_string())
}

/// The API server's URL as cluster-info publishes it: the bound address, or loopback when
/// bound to every address (a joining node uses the address it was given anyway).
pub fn published_server(address: SocketAddr) -> String {
    let ip = match address.ip() {
        ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip => ip,
    };
    format!("https://{}", SocketAddr::new(ip, address.port()))
}

/// Completes when `stopped` turns true.
async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

/// The cluster CA certificate and key for the CSR signer; `None` (signing off, logged) when
/// they cannot be read.
fn signing_pair(
    paths: &capstan_apiserver::pki::PkiPaths,
) -> Option<Arc<capstan_controllers::context::SigningKeyPair>> {
    let read = |path: &std::path::Path| match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cluster CA unreadable: CSR signing off");
            None
        }
    };
    Some(Arc::new(capstan_controllers::context::SigningKeyPair {
        certificate_pem: read(&paths.ca_cert)?,
        key_pem: read(&paths.ca_key)?,
    }))
}

//! `capstan control-plane`: the API server over the embedded store or etcd, until SIGTERM or
//! SIGINT. The scheduler and controllers are not built yet.

use capstan_apiserver::run::ControlPlaneOptions;

use crate::cli::ControlPlaneArgs;

/// Runs the control plane in the foreground.
pub fn run(args: ControlPlaneArgs) -> Result<(), String> {
    let authorization_modes = capstan_apiserver::authz::parse_modes(&args.authorization_mode)?;
    let options = ControlPlaneOptions {
        data_dir: args.data_dir,
        bind_address: args.bind_address,
        secure_port: args.secure_port,
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
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start the async runtime: {e}"))?;
    tokio
        .block_on(capstan_apiserver::run::run(
            options,
            |address| tracing::info!(%address, "ready"),
            capstan_runtime::server::shutdown_signal(),
        ))
        .map_err(|e| e.to_string())
}

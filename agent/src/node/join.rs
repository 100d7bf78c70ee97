//! Node mode: what the agent runs when it joins an API server. It registers the Node (retrying
//! until the API server answers), then keeps its status and Lease up to date, and pushes the
//! pods' statuses. The API pod source is wired with the other sources by the caller.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::Node;
use super::register::Registration;
use crate::config::AgentConfig;
use crate::pods::status_sync::StatusSync;

/// Why the API server cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {file}: {reason}")]
    Kubeconfig {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
}

/// A client for the API server the kubeconfig at `file` names (its current context).
pub async fn client(file: &Path) -> Result<kube::Client, JoinError> {
    let config = load_config(file).await?;
    kube::Client::try_from(config).map_err(|e| kubeconfig_error(file, e))
}

/// The client configuration of the kubeconfig `file`.
pub async fn load_config(file: &Path) -> Result<kube::Config, JoinError> {
    let kubeconfig = Kubeconfig::read_from(file).map_err(|e| kubeconfig_error(file, e))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| kubeconfig_error(file, e))
}

/// [`JoinError::Kubeconfig`] for `file`.
pub fn kubeconfig_error(file: &Path, reason: impl std::fmt::Display) -> JoinError {
    JoinError::Kubeconfig {
        file: file.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Starts the node's API side on the current tokio runtime: registration, then the status loop
/// (advertising the kubelet endpoint on `kubelet_port`) and the Lease; and the pod status sync
/// at once (it has nothing to push before pods come).
pub fn spawn(
    client: kube::Client,
    config: &AgentConfig,
    node: &Node,
    registration: Registration,
    kubelet_port: u16,
) {
    let node_name = config.node_name.clone();
    let config = config.clone();
    let runtime_version = node.runtime_version.clone();
    let registering = client.clone();
    tokio::spawn(async move {
        let mut retry = std::time::Duration::from_millis(200);
        loop {
            match super::register::register(&registering, &registration).await {
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(node = %registration.node_name, %error, "node not registered; retrying in {retry:?}");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(std::time::Duration::from_secs(7));
                }
            }
        }
        let update = config.node_status_update_frequency;
        let report = config.node_status_report_frequency;
        let name = config.node_name.clone();
        tokio::spawn(super::status::run(
            registering.clone(),
            config,
            runtime_version,
            i32::from(kubelet_port),
            update,
            report,
        ));
        tokio::spawn(super::lease::run(registering, name));
    });
    tokio::spawn(super::overlay_peers::run(client.clone(), node_name.clone()));
    tokio::spawn(super::pod_cidr::follow(
        client.clone(),
        node_name.clone(),
        node.workers.context().cri.clone(),
    ));
    if let Some(events) = node.workers.context().events.attach() {
        tokio::spawn(super::events::run(
            client.clone(),
            node_name.clone(),
            events,
        ));
    }
    tokio::spawn(
        super::mirror_pods::MirrorPods::new(
            client.clone(),
            node_name.clone(),
            std::sync::Arc::clone(&node.workers),
            node.desired.clone(),
        )
        .run(),
    );
    let sync = StatusSync::new(
        client,
        std::sync::Arc::clone(&node.workers),
        node.desired.clone(),
    );
    tokio::spawn(sync.run());
}

/// Starts the kubelet endpoint of a joined node, trusting the client certificates of
/// `clientCAFile` or else of the cluster CA in `api_config`; returns its bound address.
pub async fn serve_kubelet_endpoint(
    node: &Node,
    client: kube::Client,
    config: &AgentConfig,
    api_config: &kube::Config,
) -> Result<std::net::SocketAddr, String> {
    use crate::endpoint::kubelet::{self, Debugging, EndpointSettings, auth::Policy};
    let client_cas = match &config.client_ca_file {
        Some(file) => kubelet::read_client_cas(file)?,
        None => api_config
            .root_cert
            .iter()
            .flatten()
            .map(|der| rustls::pki_types::CertificateDer::from(der.clone()))
            .collect(),
    };
    let settings = EndpointSettings {
        address: config.kubelet_address,
        tls_files: config.tls_files.clone(),
        cert_dir: config.root_dir.join("pki"),
        client_cas,
        policy: Policy {
            anonymous: config.anonymous_auth,
            webhook_tokens: config.webhook_authentication,
            always_allow: config.authorization_always_allow,
        },
        addresses: super::host_ips(),
        debugging: Debugging {
            configz: crate::config::configz::configz(config),
            log_dir: std::path::PathBuf::from("/var/log"),
        },
    };
    kubelet::start(
        std::sync::Arc::clone(node.workers.context()),
        client,
        &settings,
    )
    .await
    .map_err(|e| e.to_string())
}

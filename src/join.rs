//! How `capstan node` gets its API credentials: a kubeconfig given as it is, a TLS bootstrap
//! from `--bootstrap-kubeconfig` (the kubelet's way), or `--join HOST:PORT --token T
//! --discovery-token-ca-cert-hash H` (kubeadm's way: discovery writes the bootstrap kubeconfig,
//! then the TLS bootstrap runs).

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use capstan_agent::config::AgentConfig;
use capstan_agent::node::discovery;
use capstan_agent::node::tls_bootstrap::{CURRENT_PAIR, Credentials};

use crate::cli::NodeArgs;

/// How long a node waits for its certificate request to be approved and signed (the
/// kubelet's bootstrap gives up after an hour as well).
const CERTIFICATE_WAIT: Duration = Duration::from_secs(3600);

/// What the node joins with.
#[derive(Debug)]
pub struct NodeCredentials {
    /// Its kubeconfig.
    pub kubeconfig: PathBuf,
    /// Where its client certificate is renewed, when it is (`rotateCertificates`, on for
    /// `--join` as kubeadm configures the kubelet, and a pair in the cert dir to renew).
    pub rotation: Option<Credentials>,
}

/// The kubeconfig the node joins with, after discovery and TLS bootstrap where the flags ask
/// for them; `None` for a standalone node.
pub async fn node_kubeconfig(
    args: &NodeArgs,
    config: &AgentConfig,
) -> Result<Option<NodeCredentials>, String> {
    let mut bootstrap = args.bootstrap_kubeconfig.clone();
    if let Some(endpoint) = &args.join {
        let token = args.token.as_deref().unwrap_or_default();
        let document = discovery::discover(endpoint, token, &args.discovery_token_ca_cert_hash)
            .await
            .map_err(|e| e.to_string())?;
        let file = config.root_dir.join("bootstrap-kubeconfig");
        write_private(&file, &document)?;
        tracing::info!(endpoint = %endpoint, bootstrap_kubeconfig = %file.display(), "cluster CA discovered and pinned");
        bootstrap = Some(file);
    }
    let kubeconfig = match (&args.kubeconfig, &bootstrap) {
        (Some(file), _) => file.clone(),
        (None, Some(_)) => config.root_dir.join("kubeconfig"),
        (None, None) => return Ok(None),
    };
    let credentials = Credentials {
        kubeconfig,
        bootstrap_kubeconfig: bootstrap,
        cert_dir: args
            .cert_dir
            .clone()
            .unwrap_or_else(|| config.root_dir.join("pki")),
        node_name: config.node_name.clone(),
        wait: CERTIFICATE_WAIT,
    };
    let kubeconfig = credentials.ensure().await.map_err(|e| e.to_string())?;
    let rotate = config.rotate_certificates || args.join.is_some();
    let has_pair = credentials.cert_dir.join(CURRENT_PAIR).exists();
    if rotate && !has_pair {
        tracing::warn!(cert_dir = %credentials.cert_dir.display(), "rotateCertificates is on but the cert dir holds no {CURRENT_PAIR}: the kubeconfig's credentials are used as they are");
    }
    Ok(Some(NodeCredentials {
        kubeconfig,
        rotation: (rotate && has_pair).then_some(credentials),
    }))
}

/// Writes a bootstrap kubeconfig (it holds the token) for root alone.
pub fn write_private(file: &std::path::Path, document: &serde_json::Value) -> Result<(), String> {
    use std::io::Write;
    let yaml = serde_yaml_ng::to_string(document).map_err(|e| e.to_string())?;
    let error = |e: std::io::Error| format!("{}: {e}", file.display());
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .and_then(|mut f| f.write_all(yaml.as_bytes()))
        .map_err(error)
}

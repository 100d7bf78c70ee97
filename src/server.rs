//! `capstan server`: the control plane and a node in one process, a whole cluster on one host.
//! The node joins as any other does: the server stores a bootstrap token, the node's TLS
//! bootstrap gets it a client certificate through a CertificateSigningRequest that the
//! controllers approve and sign, and the node registers, takes its podCIDR from the node IPAM
//! controller and renders the bundled CNI config from it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use capstan_agent::node::tls_bootstrap;
use capstan_apiserver::{ApiServer, InProcess};
use serde_json::json;

use crate::cli::{NodeArgs, ServerArgs};

/// The pod network when `--cluster-cidr` is not given (flannel's and kubeadm guides' default).
const DEFAULT_CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The bridge of the bundled CNI config.
const BRIDGE: &str = "capstan0";
/// How long the server's own bootstrap token lives: only for the node's first start.
const NODE_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Runs the control plane and the node until SIGTERM or SIGINT.
pub fn run(args: ServerArgs) -> Result<(), String> {
    let ServerArgs {
        mut control_plane,
        mut node,
    } = args;
    for (flag, given) in [
        ("--join", node.join.is_some()),
        ("--kubeconfig", node.kubeconfig.is_some()),
        (
            "--bootstrap-kubeconfig",
            node.bootstrap_kubeconfig.is_some(),
        ),
    ] {
        if given {
            return Err(format!(
                "{flag}: not for capstan server, whose node joins its own control plane"
            ));
        }
    }
    if control_plane.cluster_cidr.is_none() {
        control_plane.cluster_cidr = DEFAULT_CLUSTER_CIDR.parse().ok();
    }
    if control_plane.disable_controller_manager {
        return Err("--disable-controller-manager: capstan server's node needs the controllers to sign its certificate and give it a pod CIDR".into());
    }
    // A bad node configuration stops the start before the control plane opens its store.
    let mut config = crate::node::load_config(&node)?;
    // As kubeadm configures its kubelets.
    config.rotate_certificates = true;
    if node.runtime.runtime_config.is_none() {
        node.runtime.runtime_config = Some(bundled_cni(&config.root_dir)?);
    }
    let ca_cert = capstan_apiserver::pki::PkiPaths::new(&control_plane.data_dir).ca_cert;
    let companion: crate::control_plane::Companion =
        Box::new(move |address, server| Box::pin(run_node(node, config, address, server, ca_cert)));
    crate::control_plane::run(control_plane, Some(companion))
}

/// Gives the node credentials to bootstrap with, unless its kubeconfig is still good, then
/// runs it.
async fn run_node(
    mut args: NodeArgs,
    config: capstan_agent::config::AgentConfig,
    address: SocketAddr,
    server: Arc<ApiServer>,
    ca_cert: PathBuf,
) -> Result<(), String> {
    let kubeconfig = config.root_dir.join("kubeconfig");
    if let Err(reason) = tls_bootstrap::usable(&kubeconfig) {
        tracing::info!(kubeconfig = %kubeconfig.display(), %reason, "the server's node bootstraps its credentials");
        let client = kube::Client::new(InProcess::admin(server), "default");
        let ca_pem =
            std::fs::read_to_string(&ca_cert).map_err(|e| format!("{}: {e}", ca_cert.display()))?;
        // The control plane publishes the bindings that let the token ask for a certificate
        // as it starts; until they are in, the node's TLS bootstrap retries its request.
        let token = crate::bootstrap_tokens::random_token();
        crate::bootstrap_tokens::store_token(
            client,
            &token,
            NODE_TOKEN_TTL,
            Some("the node of capstan server"),
        )
        .await?;
        let file = config.root_dir.join("bootstrap-kubeconfig");
        write_bootstrap_kubeconfig(
            &file,
            &crate::control_plane::published_server(address),
            ca_pem.as_bytes(),
            &token,
        )?;
        args.bootstrap_kubeconfig = Some(file);
    }
    crate::node::run_async(args, config).await
}

/// A kubeconfig of the bootstrap token, for root alone.
fn write_bootstrap_kubeconfig(
    file: &Path,
    server: &str,
    ca_pem: &[u8],
    token: &str,
) -> Result<(), String> {
    let document = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "capstan", "cluster": {
            "server": server,
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem),
        }}],
        "users": [{"name": "tls-bootstrap-token-user", "user": {"token": token}}],
        "contexts": [{"name": "tls-bootstrap-token-user@capstan", "context": {
            "cluster": "capstan",
            "user": "tls-bootstrap-token-user",
        }}],
        "current-context": "tls-bootstrap-token-user@capstan",
    });
    crate::join::write_private(file, &document)
}

/// The bundled CNI set up under `<root>/cni`: the bridge, host-local and loopback plugins (this
/// binary under their names) and a conflist template the runtime renders once the Node has
/// its podCIDR. Returns the runtime configuration file naming them.
fn bundled_cni(root: &Path) -> Result<PathBuf, String> {
    let dir = root.join("cni");
    let bin = dir.join("bin");
    let conf = dir.join("net.d");
    let error = |path: &Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| format!("{path}: {e}")
    };
    for made in [&bin, &conf] {
        std::fs::create_dir_all(made).map_err(error(made))?;
    }
    let binary = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
    for plugin in ["bridge", "host-local", "loopback"] {
        let link = bin.join(plugin);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&binary, &link).map_err(error(&link))?;
    }
    let template = dir.join("template.conflist");
    let text = format!(
        r#"{{"cniVersion": "1.1.0", "name": "capstan", "plugins": [
  {{"type": "bridge", "bridge": "{BRIDGE}", "isGateway": true,
   "ipam": {{"type": "host-local", "ranges": {{{{.PodCIDRRanges}}}}, "routes": {{{{.Routes}}}}}}}},
  {{"type": "loopback"}}]}}
"#
    );
    std::fs::write(&template, text).map_err(error(&template))?;
    let runtime_config = dir.join("runtime.toml");
    let toml = format!(
        "[cni]\nconf_dir = {conf:?}\nbin_dirs = [{bin:?}]\nconf_template = {template:?}\n",
        conf = conf.display().to_string(),
        bin = bin.display().to_string(),
        template = template.display().to_string(),
    );
    std::fs::write(&runtime_config, toml).map_err(error(&runtime_config))?;
    Ok(runtime_config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_template_is_a_conflist_once_rendered() {
        let dir = tempfile::tempdir().unwrap();
        let config = bundled_cni(dir.path()).unwrap();
        let toml = std::fs::read_to_string(config).unwrap();
        assert!(toml.contains("conf_template"), "{toml}");
        let template = std::fs::read_to_string(dir.path().join("cni/template.conflist")).unwrap();
        let rendered = template
            .replace("{{.PodCIDRRanges}}", r#"[[{"subnet":"10.244.0.0/24"}]]"#)
            .replace("{{.Routes}}", r#"[{"dst":"0.0.0.0/0"}]"#);
        let list: serde_json::Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(list["plugins"][0]["bridge"], BRIDGE);
        assert_eq!(
            list["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.0.0/24"
        );
        for plugin in ["bridge", "host-local", "loopback"] {
            assert!(dir.path().join("cni/bin").join(plugin).exists(), "{plugin}");
        }
    }
}

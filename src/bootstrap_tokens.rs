//! Joining nodes with bootstrap tokens, the control plane's half (what `kubeadm init` and
//! `kubeadm token create` set up): the `kube-public/cluster-info` ConfigMap with the cluster's
//! CA that anonymous users may read, the bindings that let a bootstrap token request a node
//! client certificate that is approved at once, and `capstan token create`.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{
    ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use rand::Rng;

use crate::cli::TokenCreateArgs;

/// The group `capstan token create` puts its tokens in, as kubeadm's default node token.
pub const NODE_TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// The ClusterRoleBinding of system:node to all nodes that earlier versions made.
const INTERIM_NODE_BINDING: &str = "capstan:nodes";

/// Publishes what joining nodes need, retrying until the API server takes it.
pub async fn publish_join_info(client: kube::Client, ca_pem: String, server: String) {
    let mut retry = Duration::from_millis(200);
    loop {
        match publish_once(&client, &ca_pem, &server).await {
            Ok(()) => {
                tracing::info!("cluster-info and the node bootstrap bindings are in place");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot publish cluster-info; retrying in {retry:?}");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn publish_once(client: &kube::Client, ca_pem: &str, server: &str) -> kube::Result<()> {
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "", "cluster": {
            "server": server,
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem),
        }}],
        "users": [],
        "contexts": [],
        "current-context": "",
        "preferences": {},
    });
    let yaml = serde_yaml_ng::to_string(&kubeconfig).unwrap_or_default();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    let wanted = BTreeMap::from([("kubeconfig".to_string(), yaml)]);
    match config_maps.get_opt("cluster-info").await? {
        Some(mut existing) if existing.data.as_ref() != Some(&wanted) => {
            // A CA or address that changed is republished; other keys (JWS signatures) go,
            // since they signed the old content.
            existing.data = Some(wanted);
            config_maps
                .replace("cluster-info", &PostParams::default(), &existing)
                .await?;
        }
        Some(_) => {}
        None => {
            let map = ConfigMap {
                metadata: named("cluster-info"),
                data: Some(wanted),
                ..Default::default()
            };
            create(&config_maps, &map).await?;
        }
    }
    let role = Role {
        metadata: named("kubeadm:bootstrap-signer-clusterinfo"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec!["cluster-info".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
    };
    create(&Api::namespaced(client.clone(), "kube-public"), &role).await?;
    let binding = RoleBinding {
        metadata: named("kubeadm:bootstrap-signer-clusterinfo"),
        role_ref: role_ref("Role", "kubeadm:bootstrap-signer-clusterinfo"),
        subjects: Some(vec![subject("User", "system:anonymous")]),
    };
    create(&Api::namespaced(client.clone(), "kube-public"), &binding).await?;
    let cluster_bindings = [
        // A bootstrap token may create a CSR...
        (
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            ("Group", NODE_TOKEN_GROUP),
        ),
        // ...which the csrapproving controller approves (it checks this permission)...
        (
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            ("Group", NODE_TOKEN_GROUP),
        ),
        // ...as it approves a node's renewal of its own certificate.
        (
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            ("Group", "system:nodes"),
        ),
    ];
    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
    // Earlier versions bound system:node to every node by RBAC, before the Node authorizer
    // existed; that binding lets any node read any pod's secrets, so it goes.
    match api.delete(INTERIM_NODE_BINDING, &Default::default()).await {
        Ok(_) => tracing::info!(
            binding = INTERIM_NODE_BINDING,
            "removed the interim node binding"
        ),
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => return Err(error),
    }
    for (name, role, (kind, who)) in cluster_bindings {
        let binding = ClusterRoleBinding {
            metadata: named(name),
            role_ref: role_ref("ClusterRole", role),
            subjects: Some(vec![subject(kind, who)]),
        };
        create(&api, &binding).await?;
    }
    Ok(())
}

/// Creates `object` unless it exists.
async fn create<K>(api: &Api<K>, object: &K) -> kube::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error),
    }
}

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: "rbac.authorization.k8s.io".into(),
        kind: kind.into(),
        name: name.into(),
    }
}

fn subject(kind: &str, name: &str) -> Subject {
    Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.into(),
        namespace: None,
    }
}

/// `capstan token create`: stores a new bootstrap token and prints it, or the whole
/// `capstan node --join` command.
pub fn create_token(args: TokenCreateArgs) -> Result<(), String> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start the async runtime: {e}"))?;
    tokio.block_on(create_token_async(args))
}

async fn create_token_async(args: TokenCreateArgs) -> Result<(), String> {
    let file = &args.kubeconfig;
    let error = |reason: String| format!("kubeconfig {}: {reason}", file.display());
    let kubeconfig = Kubeconfig::read_from(file).map_err(|e| error(e.to_string()))?;
    let cluster = kubeconfig
        .current_context
        .as_deref()
        .and_then(|name| kubeconfig.contexts.iter().find(|c| c.name == name))
        .and_then(|c| c.context.as_ref())
        .and_then(|c| kubeconfig.clusters.iter().find(|n| n.name == c.cluster))
        .and_then(|n| n.cluster.clone())
        .ok_or_else(|| error("its current context names no cluster".into()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| error(e.to_string()))?;
    let client = kube::Client::try_from(config).map_err(|e| error(e.to_string()))?;
    let token = match &args.token {
        Some(token) => {
            capstan_agent::node::discovery::check_token(token).map_err(|e| e.to_string())?;
            token.clone()
        }
        None => random_token(),
    };
    store_token(client, &token, args.ttl, args.description.as_deref()).await?;
    if !args.print_join_command {
        println!("{token}");
        return Ok(());
    }
    let server = cluster.server.unwrap_or_default();
    let endpoint = server.trim_start_matches("https://").trim_end_matches('/');
    let ca_pem = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| error(format!("certificate-authority-data: {e}")))?,
        (None, Some(path)) => std::fs::read(path).map_err(|e| error(format!("{path}: {e}")))?,
        (None, None) => return Err(error("its cluster has no certificate authority".into())),
    };
    let hash =
        capstan_agent::node::discovery::ca_cert_hash(&ca_pem).map_err(|e| error(e.to_string()))?;
    println!(
        "capstan node --join {endpoint} --token {token} --discovery-token-ca-cert-hash {hash}"
    );
    Ok(())
}

/// Stores `token` as kubeadm does: Secret `bootstrap-token-<id>` in kube-system, usable for
/// authentication and signing, in the default node token group, expiring after `ttl` (zero:
/// never).
pub async fn store_token(
    client: kube::Client,
    token: &str,
    ttl: std::time::Duration,
    description: Option<&str>,
) -> Result<(), String> {
    let (id, secret) = token.split_once('.').unwrap_or_default();
    let mut data = BTreeMap::from([
        ("token-id".to_string(), id.to_string()),
        ("token-secret".to_string(), secret.to_string()),
        ("usage-bootstrap-authentication".to_string(), "true".into()),
        ("usage-bootstrap-signing".to_string(), "true".into()),
        ("auth-extra-groups".to_string(), NODE_TOKEN_GROUP.into()),
    ]);
    if !ttl.is_zero() {
        let ttl = jiff::SignedDuration::try_from(ttl).map_err(|e| format!("--ttl: {e}"))?;
        let expiration = jiff::Timestamp::now()
            .checked_add(ttl)
            .map_err(|e| format!("--ttl: {e}"))?;
        data.insert(
            "expiration".into(),
            expiration
                .round(jiff::Unit::Second)
                .map_err(|e| format!("--ttl: {e}"))?
                .to_string(),
        );
    }
    if let Some(description) = description {
        data.insert("description".into(), description.to_string());
    }
    let stored = Secret {
        metadata: named(&format!("bootstrap-token-{id}")),
        type_: Some("bootstrap.kubernetes.io/token".into()),
        string_data: Some(data),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client, "kube-system")
        .create(&PostParams::default(), &stored)
        .await
        .map_err(|e| format!("cannot store the token: {e}"))?;
    Ok(())
}

/// A new token: `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn random_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut pick = |n: usize| -> String {
        (0..n)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    let id = pick(6);
    let secret = pick(16);
    format!("{id}.{secret}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_tokens_have_the_bootstrap_form() {
        let one = super::random_token();
        assert!(
            capstan_agent::node::discovery::check_token(&one).is_ok(),
            "{one}"
        );
        assert_ne!(one, super::random_token());
    }
}

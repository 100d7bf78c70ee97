//! TLS bootstrap, as the kubelet does it with `--bootstrap-kubeconfig`: when the node's own
//! kubeconfig is missing or its client certificate has expired, the agent makes a key, asks
//! for a certificate (CN=system:node:NAME, O=system:nodes) with a CertificateSigningRequest of
//! signer `kubernetes.io/kube-apiserver-client-kubelet`, waits until it is approved and
//! signed, stores key and certificate in `<cert dir>/kubelet-client-current.pem` and writes
//! the kubeconfig that uses them.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use sha2::Digest;

/// The signer of kubelet client certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The file (a symlink to the newest pair) the kubeconfig points at, as the kubelet names it.
pub const CURRENT_PAIR: &str = "kubelet-client-current.pem";
/// The key of a request still pending, kept so that a restart reuses the same request.
const PENDING_KEY: &str = "kubelet-client.key.tmp";

/// Why the node has no credentials.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Neither a usable kubeconfig nor a bootstrap kubeconfig.
    #[error(
        "kubeconfig {kubeconfig}: {reason}, and there is no bootstrap kubeconfig to get a certificate with"
    )]
    NoCredentials {
        /// The node's kubeconfig.
        kubeconfig: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A kubeconfig could not be read or used.
    #[error("kubeconfig {file}: {reason}")]
    Kubeconfig {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A file of the cert dir or the kubeconfig could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key or request could not be made.
    #[error("cannot make the certificate request: {0}")]
    Request(String),
    /// The API server refused or failed the request.
    #[error("certificate signing request {name}: {reason}")]
    Csr {
        /// The CertificateSigningRequest.
        name: String,
        /// What happened to it.
        reason: String,
    },
}

/// Where the node's credentials live.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The node's kubeconfig (written by the bootstrap).
    pub kubeconfig: PathBuf,
    /// The bootstrap kubeconfig, if the node may bootstrap.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// The directory of the client key and certificate.
    pub cert_dir: PathBuf,
    /// The node's name: the certificate is for `system:node:<name>`.
    pub node_name: String,
    /// How long to wait for the request to be approved and signed.
    pub wait: Duration,
}

impl Credentials {
    /// Returns the node's kubeconfig, after a TLS bootstrap when it is missing or its
    /// certificate has expired.
    pub async fn ensure(&self) -> Result<PathBuf, BootstrapError> {
        let problem = match usable(&self.kubeconfig) {
            Ok(()) => return Ok(self.kubeconfig.clone()),
            Err(problem) => problem,
        };
        let Some(bootstrap) = &self.bootstrap_kubeconfig else {
            return Err(BootstrapError::NoCredentials {
                kubeconfig: self.kubeconfig.display().to_string(),
                reason: problem,
            });
        };
        tracing::info!(kubeconfig = %self.kubeconfig.display(), reason = %problem, "bootstrapping the node's client certificate");
        let (client, cluster) = bootstrap_client(bootstrap).await?;
        make_dir(&self.cert_dir)?;
        let key = self.pending_key()?;
        let request = certificate_request(&self.node_name, &key)?;
        let name = request_name(&self.node_name, &key);
        let certificate = request_certificate(client, &name, request, self.wait).await?;
        let pair = self.store_pair(&certificate, &key.serialize_pem())?;
        write_kubeconfig(&self.kubeconfig, &cluster, &pair)?;
        let _ = std::fs::remove_file(self.cert_dir.join(PENDING_KEY));
        tracing::info!(request = %name, kubeconfig = %self.kubeconfig.display(), "client certificate issued");
        Ok(self.kubeconfig.clone())
    }

    /// Renews the client certificate with the node's own credentials (`client`): a new key,
    /// a request the approver takes as `selfnodeclient`, and the new pair made current.
    /// Returns the current pair's path.
    pub async fn renew(&self, client: &kube::Client) -> Result<PathBuf, BootstrapError> {
        let key = rcgen::KeyPair::generate().map_err(|e| BootstrapError::Request(e.to_string()))?;
        let request = certificate_request(&self.node_name, &key)?;
        let name = request_name(&self.node_name, &key);
        let certificate = request_certificate(client.clone(), &name, request, self.wait).await?;
        let pair = self.store_pair(&certificate, &key.serialize_pem())?;
        tracing::info!(request = %name, pair = %pair.display(), "client certificate renewed");
        Ok(pair)
    }

    /// The key of a pending request, or a new one (ECDSA P-256, as the kubelet makes).
    fn pending_key(&self) -> Result<rcgen::KeyPair, BootstrapError> {
        let path = self.cert_dir.join(PENDING_KEY);
        if let Ok(pem) = std::fs::read_to_string(&path)
            && let Ok(key) = rcgen::KeyPair::from_pem(&pem)
        {
            return Ok(key);
        }
        let key = rcgen::KeyPair::generate().map_err(|e| BootstrapError::Request(e.to_string()))?;
        write_private(&path, key.serialize_pem().as_bytes())?;
        Ok(key)
    }

    /// Writes `kubelet-client-<time>.pem` (certificate, then key) and points
    /// `kubelet-client-current.pem` at it; returns the current path.
    fn store_pair(&self, certificate: &[u8], key_pem: &str) -> Result<PathBuf, BootstrapError> {
        let stamp = chrono::Utc::now().format("%Y-%m-%d-%H-%M-%S");
        let file = self.cert_dir.join(format!("kubelet-client-{stamp}.pem"));
        let mut contents = certificate.to_vec();
        if !contents.ends_with(b"\n") {
            contents.push(b'\n');
        }
        contents.extend_from_slice(key_pem.as_bytes());
        write_private(&file, &contents)?;
        let current = self.cert_dir.join(CURRENT_PAIR);
        let staged = self.cert_dir.join(format!("{CURRENT_PAIR}.tmp"));
        let _ = std::fs::remove_file(&staged);
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| BootstrapError::Io { path, source }
        };
        std::os::unix::fs::symlink(&file, &staged).map_err(io(&staged))?;
        std::fs::rename(&staged, &current).map_err(io(&current))?;
        Ok(current)
    }
}

/// `Ok` when the kubeconfig exists and its client certificate, if it has one, is still valid.
pub fn usable(kubeconfig: &Path) -> Result<(), String> {
    if !kubeconfig.exists() {
        return Err("no such file".into());
    }
    let config = Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let context = config
        .current_context
        .as_deref()
        .and_then(|name| config.contexts.iter().find(|c| c.name == name))
        .and_then(|c| c.context.as_ref());
    let user = context
        .and_then(|c| c.user.as_deref())
        .and_then(|name| config.auth_infos.iter().find(|a| a.name == name))
        .and_then(|a| a.auth_info.as_ref());
    let Some(user) = user else {
        return Err("its current context names no user".into());
    };
    let pem = match (&user.client_certificate_data, &user.client_certificate) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("client-certificate-data: {e}"))?,
        (None, Some(file)) => {
            let path = kubeconfig
                .parent()
                .map(|dir| dir.join(file))
                .unwrap_or_else(|| PathBuf::from(file));
            std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, None) => return Ok(()),
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| format!("its client certificate is not PEM: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("its client certificate cannot be parsed: {e}"))?;
    if !cert.validity().is_valid() {
        return Err(format!(
            "its client certificate expired at {}",
            cert.validity().not_after
        ));
    }
    Ok(())
}

/// A client as the bootstrap kubeconfig's user, and the cluster entry to copy.
async fn bootstrap_client(
    file: &Path,
) -> Result<(kube::Client, kube::config::NamedCluster), BootstrapError> {
    let error = |reason: String| BootstrapError::Kubeconfig {
        file: file.display().to_string(),
        reason,
    };
    let kubeconfig = Kubeconfig::read_from(file).map_err(|e| error(e.to_string()))?;
    let cluster_name = kubeconfig
        .current_context
        .as_deref()
        .and_then(|name| kubeconfig.contexts.iter().find(|c| c.name == name))
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let mut cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| Some(&c.name) == cluster_name.as_ref())
        .cloned()
        .ok_or_else(|| error("its current context names no cluster".into()))?;
    // The node's kubeconfig may live elsewhere: a CA file is embedded, not referenced.
    if let Some(inner) = cluster.cluster.as_mut()
        && let Some(ca_file) = inner.certificate_authority.take()
    {
        let path = file
            .parent()
            .map(|dir| dir.join(&ca_file))
            .unwrap_or_else(|| PathBuf::from(&ca_file));
        let pem = std::fs::read(&path).map_err(|e| error(format!("{}: {e}", path.display())))?;
        inner.certificate_authority_data =
            Some(base64::engine::general_purpose::STANDARD.encode(pem));
    }
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| error(e.to_string()))?;
    let client = kube::Client::try_from(config).map_err(|e| error(e.to_string()))?;
    Ok((client, cluster))
}

/// The PEM certificate request for `system:node:<node>` in `system:nodes`.
fn certificate_request(node: &str, key: &rcgen::KeyPair) -> Result<String, BootstrapError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| BootstrapError::Request(e.to_string()))?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::OrganizationName, "system:nodes");
    name.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params.distinguished_name = name;
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| BootstrapError::Request(e.to_string()))
}

/// A name that is the same for the same key and node, so a restart finds its own request.
fn request_name(node: &str, key: &rcgen::KeyPair) -> String {
    let mut digest = sha2::Sha256::new();
    digest.update(rcgen::PublicKeyData::subject_public_key_info(key));
    digest.update(node.as_bytes());
    // Object names are lowercase: hex, not the kubelet's base64.
    format!("node-csr-{}", &hex::encode(digest.finalize())[..40])
}

/// Creates (or finds) the request and waits for its certificate.
async fn request_certificate(
    client: kube::Client,
    name: &str,
    request: String,
    wait: Duration,
) -> Result<Vec<u8>, BootstrapError> {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let csr_error = |reason: String| BootstrapError::Csr {
        name: name.to_string(),
        reason,
    };
    let csr = CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: CLIENT_SIGNER.into(),
            // An ECDSA key signs; it does not encipher.
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..Default::default()
        },
        status: None,
    };
    let deadline = tokio::time::Instant::now() + wait;
    // As the kubelet's bootstrap, a refusal is tried again until the wait is over: the
    // bindings that let a bootstrap token ask may be about to be made (a control plane just
    // started), and the API server may be restarting.
    let mut retry = Duration::from_millis(200);
    loop {
        match api.create(&PostParams::default(), &csr).await {
            Ok(_) => {
                tracing::info!(request = %name, "certificate signing request created");
                break;
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                tracing::info!(request = %name, "certificate signing request exists: waiting for it");
                break;
            }
            Err(error) if tokio::time::Instant::now() + retry < deadline => {
                tracing::warn!(request = %name, %error, "certificate signing request not created; retrying in {retry:?}");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(10));
            }
            Err(error) => return Err(csr_error(format!("cannot be created: {error}"))),
        }
    }
    loop {
        match api.get_opt(name).await {
            Ok(Some(csr)) => {
                if let Some(outcome) = outcome(&csr) {
                    return outcome.map_err(csr_error);
                }
            }
            Ok(None) => return Err(csr_error("was deleted before it was signed".into())),
            Err(error) => tracing::warn!(request = %name, %error, "cannot read the request"),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(csr_error(format!(
                "not approved and signed within {wait:?} (is the csrapproving controller running, \
                 and may the bootstrap token's groups create nodeclient requests?)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The certificate of a signed request, the refusal of a denied or failed one, or `None`
/// while it is pending.
fn outcome(csr: &CertificateSigningRequest) -> Option<Result<Vec<u8>, String>> {
    let status = csr.status.as_ref()?;
    for condition in status.conditions.iter().flatten() {
        if condition.status != "True" {
            continue;
        }
        let detail = format!(
            "reason: {}, message: {}",
            condition.reason.as_deref().unwrap_or(""),
            condition.message.as_deref().unwrap_or("")
        );
        match condition.type_.as_str() {
            "Denied" => return Some(Err(format!("is denied, {detail}"))),
            "Failed" => return Some(Err(format!("failed, {detail}"))),
            _ => {}
        }
    }
    status
        .certificate
        .as_ref()
        .filter(|c| !c.0.is_empty())
        .map(|c| Ok(c.0.clone()))
}

/// The node's kubeconfig: the bootstrap's cluster, the stored pair as client credentials.
fn write_kubeconfig(
    path: &Path,
    cluster: &kube::config::NamedCluster,
    pair: &Path,
) -> Result<(), BootstrapError> {
    let cluster = serde_json::to_value(cluster.cluster.clone().unwrap_or_default())
        .map_err(|e| BootstrapError::Request(e.to_string()))?;
    let pair = pair.display().to_string();
    let document = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default-cluster", "cluster": cluster}],
        "users": [{"name": "default-auth", "user": {"client-certificate": pair, "client-key": pair}}],
        "contexts": [{"name": "default-context", "context": {
            "cluster": "default-cluster", "user": "default-auth", "namespace": "default",
        }}],
        "current-context": "default-context",
    });
    let yaml =
        serde_yaml_ng::to_string(&document).map_err(|e| BootstrapError::Request(e.to_string()))?;
    if let Some(dir) = path.parent() {
        make_dir(dir)?;
    }
    let staged = path.with_extension("tmp");
    write_private(&staged, yaml.as_bytes())?;
    std::fs::rename(&staged, path).map_err(|source| BootstrapError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn make_dir(dir: &Path) -> Result<(), BootstrapError> {
    std::fs::create_dir_all(dir).map_err(|source| BootstrapError::Io {
        path: dir.display().to_string(),
        source,
    })
}

/// Writes a file only root can read (keys and the credentials pointing at them).
fn write_private(path: &Path, contents: &[u8]) -> Result<(), BootstrapError> {
    use std::io::Write;
    let io = |source| BootstrapError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    file.write_all(contents).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    #[test]
    fn the_request_names_the_node_in_system_nodes() {
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = certificate_request("node-1", &key).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
                .unwrap();
        let subject = csr.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:node-1"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
        assert_eq!(request_name("node-1", &key), request_name("node-1", &key));
        assert_ne!(request_name("node-1", &key), request_name("node-2", &key));
        assert!(request_name("node-1", &key).starts_with("node-csr-"));
    }

    #[test]
    fn a_missing_or_expired_kubeconfig_is_not_usable() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("kubeconfig");
        assert_eq!(usable(&missing).unwrap_err(), "no such file");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["n".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let expired = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join("pair.pem"), expired.pem()).unwrap();
        let cluster = kube::config::NamedCluster {
            name: "c".into(),
            cluster: Some(kube::config::Cluster {
                server: Some("https://127.0.0.1:1".into()),
                ..Default::default()
            }),
            other: Default::default(),
        };
        write_kubeconfig(&missing, &cluster, Path::new("pair.pem")).unwrap();
        let error = usable(&missing).unwrap_err();
        assert!(
            error.starts_with("its client certificate expired at"),
            "{error}"
        );
        let mode = std::fs::metadata(&missing).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

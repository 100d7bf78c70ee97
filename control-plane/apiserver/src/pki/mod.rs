//! The cluster's credentials, as kubeadm lays them out: a CA, the API server's serving
//! certificate, the service-account signing key and an admin client certificate with its
//! kubeconfig, made on first start under `<data-dir>/pki/` and loaded unchanged afterwards.

pub mod der;
mod files;
mod issue;
mod sakey;
pub mod sans;
pub mod verify;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{Issuer, KeyPair, PublicKeyData as _};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub use der::AltName;
pub use issue::{CA_COMMON_NAME, CA_VALIDITY, LEAF_VALIDITY};
pub use sakey::{ServiceAccountKey, VerifyingKey};

use crate::kubeconfig;

/// User name of the admin client certificate (kubeadm's).
pub const ADMIN_USER: &str = "kubernetes-admin";
/// Group of the admin client certificate: RBAC's superuser group.
pub const ADMIN_GROUP: &str = "system:masters";
/// Name of the admin kubeconfig in the data directory.
pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";
/// A certificate expiring sooner than this at start is re-issued.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Why the credentials could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file's contents could not be used.
    #[error("{what}: {reason}")]
    Parse {
        /// Which credential (with its path where known).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file exists but cannot be used; names the file.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rcgen refused to make a key or certificate.
    #[error("generate {what}: {source}")]
    Generate {
        /// Which key or certificate.
        what: &'static str,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// An option's value cannot be used.
    #[error("{option}: {reason}")]
    Option {
        /// The option.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// What the credentials depend on: the API server's flags that end up in certificates or the
/// kubeconfig.
#[derive(Debug, Clone)]
pub struct PkiOptions {
    /// `--bind-address`: the kubeconfig's server host (127.0.0.1 / ::1 for an unspecified
    /// address). Default 0.0.0.0.
    pub bind_address: IpAddr,
    /// `--secure-port`, for the kubeconfig's server URL. Default 6443.
    pub secure_port: u16,
    /// `--service-cluster-ip-range`: its first address (the `kubernetes` Service's ClusterIP)
    /// is a SAN. Default 10.96.0.0/12.
    pub service_cluster_ip_range: ipnet::IpNet,
    /// The cluster DNS domain, for `kubernetes.default.svc.<domain>`. Default cluster.local.
    pub cluster_domain: String,
    /// Further SANs (IP addresses or DNS names), as kubeadm's `apiServer.certSANs`.
    pub extra_sans: Vec<String>,
}

impl Default for PkiOptions {
    fn default() -> Self {
        Self {
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            secure_port: 6443,
            service_cluster_ip_range: ipnet::IpNet::V4(ipnet::Ipv4Net::new_assert(
                Ipv4Addr::new(10, 96, 0, 0),
                12,
            )),
            cluster_domain: "cluster.local".to_string(),
            extra_sans: Vec::new(),
        }
    }
}

impl PkiOptions {
    /// The URL clients on this host reach the API server at.
    pub fn server_url(&self) -> String {
        let host = match self.bind_address {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            other => other,
        };
        match host {
            IpAddr::V4(v4) => format!("https://{v4}:{}", self.secure_port),
            IpAddr::V6(v6) => format!("https://[{v6}]:{}", self.secure_port),
        }
    }
}

/// A certificate with its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate").finish_non_exhaustive()
    }
}

/// The paths of the credential files, kubeadm's names under `<data-dir>/pki/`.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    /// `<data-dir>/pki`.
    pub dir: PathBuf,
    /// The cluster CA certificate.
    pub ca_cert: PathBuf,
    /// The cluster CA key.
    pub ca_key: PathBuf,
    /// The API server's serving certificate.
    pub serving_cert: PathBuf,
    /// Its key.
    pub serving_key: PathBuf,
    /// The service-account signing key (PKCS#8).
    pub sa_key: PathBuf,
    /// Its public key (SubjectPublicKeyInfo PEM), for other API servers' verification.
    pub sa_pub: PathBuf,
    /// The admin client certificate.
    pub admin_cert: PathBuf,
    /// Its key.
    pub admin_key: PathBuf,
    /// `<data-dir>/admin.kubeconfig`.
    pub admin_kubeconfig: PathBuf,
}

impl PkiPaths {
    /// The paths for `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        let dir = data_dir.join("pki");
        Self {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            admin_kubeconfig: data_dir.join(ADMIN_KUBECONFIG),
            dir,
        }
    }
}

/// The cluster's credentials, loaded: what TLS serving, authentication and token issuing use.
pub struct ClusterCredentials {
    paths: PkiPaths,
    ca_cert: CertificateDer<'static>,
    ca_pem: String,
    ca: Issuer<'static, KeyPair>,
    serving_cert: CertificateDer<'static>,
    serving_key: PrivatePkcs8KeyDer<'static>,
    serving_sans: Vec<AltName>,
    service_account_key: Arc<ServiceAccountKey>,
    server_url: String,
}

impl std::fmt::Debug for ClusterCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCredentials")
            .field("dir", &self.paths.dir)
            .field("serving_sans", &self.serving_sans)
            .finish_non_exhaustive()
    }
}

/// A leaf certificate and key as read from disk.
struct Leaf {
    cert_pem: String,
    cert: CertificateDer<'static>,
    key: KeyPair,
}

impl ClusterCredentials {
    /// Loads the credentials under `<data_dir>/pki/`, making whatever is missing: on a fresh
    /// directory all of them, on a restart nothing, except a serving certificate that lacks a
    /// SAN now needed (or is close to expiry), which is re-issued from the same CA.
    pub fn load_or_create(data_dir: &Path, options: &PkiOptions) -> Result<Self, PkiError> {
        let started = Instant::now();
        let paths = PkiPaths::new(data_dir);
        files::ensure_private_dir(&paths.dir)?;

        let (ca_pem, ca_cert, ca_key, ca_created) = load_or_create_ca(&paths)?;
        let ca = issue::ca_issuer(&ca_cert, ca_key)?;

        let wanted = wanted_sans(options)?;
        let (serving, serving_sans) =
            load_or_issue_serving(&paths, &ca, &ca_cert, &wanted, ca_created)?;
        let service_account_key = load_or_create_sa_key(&paths)?;
        let admin = load_or_issue_admin(&paths, &ca, &ca_cert, ca_created)?;

        let server_url = options.server_url();
        let config = kubeconfig::Kubeconfig::admin(
            &server_url,
            &ca_pem,
            &admin.cert_pem,
            &admin.key.serialize_pem(),
        );
        let rendered = config.to_yaml().map_err(|e| PkiError::Parse {
            what: "admin kubeconfig",
            reason: e.to_string(),
        })?;
        if files::read_optional(&paths.admin_kubeconfig)?.as_deref() != Some(rendered.as_str()) {
            tracing::info!(path = %paths.admin_kubeconfig.display(), server = %server_url, "writing the admin kubeconfig");
            files::write_atomic(
                &paths.admin_kubeconfig,
                rendered.as_bytes(),
                files::SECRET_MODE,
            )?;
        }
        files::sync_dir(&paths.dir)?;
        files::sync_dir(data_dir)?;

        let serving_key = PrivatePkcs8KeyDer::from(serving.key.serialize_der());
        tracing::info!(
            dir = %paths.dir.display(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "cluster credentials ready"
        );
        Ok(Self {
            paths,
            ca_cert,
            ca_pem,
            ca,
            serving_cert: serving.cert,
            serving_key,
            serving_sans,
            service_account_key: Arc::new(service_account_key),
            server_url,
        })
    }

    /// Where the credential files are.
    pub fn paths(&self) -> &PkiPaths {
        &self.paths
    }

    /// The cluster CA certificate, DER.
    pub fn ca_certificate(&self) -> &CertificateDer<'static> {
        &self.ca_cert
    }

    /// The cluster CA certificate, PEM (what kubeconfigs embed).
    pub fn ca_certificate_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The serving certificate chain: just the leaf, as kube-apiserver sends it (clients have
    /// the CA already, from their kubeconfig or the service-account volume).
    pub fn serving_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.serving_cert.clone()]
    }

    /// The serving certificate's private key.
    pub fn serving_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.serving_key.clone_key())
    }

    /// The SANs the serving certificate carries.
    pub fn serving_sans(&self) -> &[AltName] {
        &self.serving_sans
    }

    /// The service-account token signing key.
    pub fn service_account_key(&self) -> &Arc<ServiceAccountKey> {
        &self.service_account_key
    }

    /// The server URL written into the admin kubeconfig.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// Issues a client certificate from the cluster CA for user `common_name` in group
    /// `organization` (e.g. `system:node:<name>` in `system:nodes` for a node agent).
    pub fn issue_client_certificate(
        &self,
        common_name: &str,
        organization: Option<&str>,
        validity: Duration,
    ) -> Result<IssuedCertificate, PkiError> {
        let key = issue::new_key("client certificate key")?;
        let cert = issue::client_params(common_name, organization, validity)?
            .signed_by(&key, &self.ca)
            .map_err(|source| PkiError::Generate {
                what: "client certificate",
                source,
            })?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn wanted_sans(options: &PkiOptions) -> Result<BTreeSet<AltName>, PkiError> {
    let service_ip = sans::first_service_ip(&options.service_cluster_ip_range)?;
    if !sans::is_dns_name(&options.cluster_domain) {
        return Err(PkiError::Option {
            option: "cluster domain",
            reason: format!("{:?} is not a DNS name", options.cluster_domain),
        });
    }
    let extra = options
        .extra_sans
        .iter()
        .map(|s| sans::parse_extra_san(s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(sans::wanted(
        service_ip,
        &options.cluster_domain,
        &sans::host_addresses(),
        sans::host_name().as_deref(),
        &extra,
    ))
}

fn read_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::BadFile {
        path: path.to_path_buf(),
        reason: format!("no PEM certificate: {e}"),
    })
}

fn read_key(path: &Path, pem: &str) -> Result<KeyPair, PkiError> {
    KeyPair::from_pem(pem).map_err(|e| PkiError::BadFile {
        path: path.to_path_buf(),
        reason: format!("no usable PKCS#8 private key: {e}"),
    })
}

fn write_key_and_cert(
    key_path: &Path,
    key: &KeyPair,
    cert_path: &Path,
    cert_pem: &str,
) -> Result<(), PkiError> {
    // Key first: a crash between the two leaves a key without a certificate, which the next
    // start replaces, never a certificate whose key is gone.
    files::write_atomic(key_path, key.serialize_pem().as_bytes(), files::SECRET_MODE)?;
    files::write_atomic(cert_path, cert_pem.as_bytes(), files::PUBLIC_MODE)
}

fn load_or_create_ca(
    paths: &PkiPaths,
) -> Result<(String, CertificateDer<'static>, KeyPair, bool), PkiError> {
    let cert_pem = files::read_optional(&paths.ca_cert)?;
    let key_pem = files::read_optional(&paths.ca_key)?;
    match (cert_pem, key_pem) {
        (Some(cert_pem), Some(key_pem)) => {
            let cert = read_cert(&paths.ca_cert, &cert_pem)?;
            let key = read_key(&paths.ca_key, &key_pem)?;
            let fields = der::parse_certificate(&cert).map_err(|e| PkiError::BadFile {
                path: paths.ca_cert.clone(),
                reason: e.to_string(),
            })?;
            if fields.spki != key.subject_public_key_info() {
                return Err(PkiError::BadFile {
                    path: paths.ca_key.clone(),
                    reason: format!("is not the key of {}", paths.ca_cert.display()),
                });
            }
            Ok((cert_pem, cert, key, false))
        }
        // Everything in the cluster trusts the CA: a CA certificate without its key is never
        // silently replaced.
        (Some(_), None) => Err(PkiError::BadFile {
            path: paths.ca_key.clone(),
            reason: format!("missing, but {} exists", paths.ca_cert.display()),
        }),
        // No certificate: a key alone (a crash during the first start) signed nothing anyone
        // trusts, so a new CA replaces it.
        (None, _) => {
            tracing::info!(path = %paths.ca_cert.display(), "creating the cluster CA");
            let key = issue::new_key("CA key")?;
            let cert =
                issue::ca_params()?
                    .self_signed(&key)
                    .map_err(|source| PkiError::Generate {
                        what: "CA certificate",
                        source,
                    })?;
            let pem = cert.pem();
            write_key_and_cert(&paths.ca_key, &key, &paths.ca_cert, &pem)?;
            Ok((pem, cert.der().clone(), key, true))
        }
    }
}

/// Reads a leaf certificate and key, `None` (with the reason logged) when they must be
/// re-issued: missing, not matching each other, not from this CA, or expiring soon.
fn load_leaf(
    cert_path: &Path,
    key_path: &Path,
    ca_cert: &CertificateDer<'_>,
    usage: verify::Usage,
) -> Result<Option<Leaf>, PkiError> {
    let (Some(cert_pem), Some(key_pem)) = (
        files::read_optional(cert_path)?,
        files::read_optional(key_path)?,
    ) else {
        return Ok(None);
    };
    let cert = read_cert(cert_path, &cert_pem)?;
    let key = read_key(key_path, &key_pem)?;
    let fields = der::parse_certificate(&cert).map_err(|e| PkiError::BadFile {
        path: cert_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if fields.spki != key.subject_public_key_info() {
        tracing::warn!(cert = %cert_path.display(), key = %key_path.display(), "certificate and key do not match; re-issuing");
        return Ok(None);
    }
    if let Err(e) = verify::verify_chain(ca_cert, &cert, &[], usage, RENEW_BEFORE) {
        tracing::warn!(cert = %cert_path.display(), error = ?e, "certificate not valid from the cluster CA for the next 30 days; re-issuing");
        return Ok(None);
    }
    Ok(Some(Leaf {
        cert_pem,
        cert,
        key,
    }))
}

fn load_or_issue_serving(
    paths: &PkiPaths,
    ca: &Issuer<'static, KeyPair>,
    ca_cert: &CertificateDer<'_>,
    wanted: &BTreeSet<AltName>,
    ca_created: bool,
) -> Result<(Leaf, Vec<AltName>), PkiError> {
    let existing = if ca_created {
        None
    } else {
        load_leaf(
            &paths.serving_cert,
            &paths.serving_key,
            ca_cert,
            verify::Usage::Server,
        )?
    };
    let mut sans = wanted.clone();
    let mut reuse_key = None;
    if let Some(leaf) = existing {
        let have: BTreeSet<AltName> = der::parse_certificate(&leaf.cert)
            .map_err(|e| PkiError::BadFile {
                path: paths.serving_cert.clone(),
                reason: e.to_string(),
            })?
            .alt_names
            .into_iter()
            .collect();
        let missing: Vec<&AltName> = wanted.difference(&have).collect();
        if missing.is_empty() {
            return Ok((leaf, have.into_iter().collect()));
        }
        tracing::info!(path = %paths.serving_cert.display(), ?missing, "serving certificate lacks SANs now needed; re-issuing it from the same CA");
        // Keep the names it had (a client may still dial an old address) and its key.
        sans.extend(have);
        reuse_key = Some(leaf.key);
    } else {
        tracing::info!(path = %paths.serving_cert.display(), "issuing the API server's serving certificate");
    }
    let key = match reuse_key {
        Some(key) => key,
        None => issue::new_key("serving key")?,
    };
    let cert = issue::serving_params(&sans)?
        .signed_by(&key, ca)
        .map_err(|source| PkiError::Generate {
            what: "serving certificate",
            source,
        })?;
    let cert_pem = cert.pem();
    write_key_and_cert(&paths.serving_key, &key, &paths.serving_cert, &cert_pem)?;
    Ok((
        Leaf {
            cert_pem,
            cert: cert.der().clone(),
            key,
        },
        sans.into_iter().collect(),
    ))
}

fn load_or_issue_admin(
    paths: &PkiPaths,
    ca: &Issuer<'static, KeyPair>,
    ca_cert: &CertificateDer<'_>,
    ca_created: bool,
) -> Result<Leaf, PkiError> {
    if !ca_created {
        if let Some(leaf) = load_leaf(
            &paths.admin_cert,
            &paths.admin_key,
            ca_cert,
            verify::Usage::Client,
        )? {
            return Ok(leaf);
        }
    }
    tracing::info!(path = %paths.admin_cert.display(), "issuing the admin client certificate");
    let key = issue::new_key("admin key")?;
    let cert = issue::client_params(ADMIN_USER, Some(ADMIN_GROUP), LEAF_VALIDITY)?
        .signed_by(&key, ca)
        .map_err(|source| PkiError::Generate {
            what: "admin client certificate",
            source,
        })?;
    let cert_pem = cert.pem();
    write_key_and_cert(&paths.admin_key, &key, &paths.admin_cert, &cert_pem)?;
    Ok(Leaf {
        cert_pem,
        cert: cert.der().clone(),
        key,
    })
}

fn load_or_create_sa_key(paths: &PkiPaths) -> Result<ServiceAccountKey, PkiError> {
    let key = match files::read_optional(&paths.sa_key)? {
        Some(pem) => read_key(&paths.sa_key, &pem)?,
        None => {
            tracing::info!(path = %paths.sa_key.display(), "creating the service-account signing key");
            let key = issue::new_key("service-account key")?;
            files::write_atomic(
                &paths.sa_key,
                key.serialize_pem().as_bytes(),
                files::SECRET_MODE,
            )?;
            key
        }
    };
    let public_pem = key.public_key_pem();
    // sa.pub is derived from sa.key; rewrite it only when it says something else.
    if files::read_optional(&paths.sa_pub)?.as_deref() != Some(public_pem.as_str()) {
        files::write_atomic(&paths.sa_pub, public_pem.as_bytes(), files::PUBLIC_MODE)?;
    }
    ServiceAccountKey::from_pkcs8(&key.serialize_der(), &key.subject_public_key_info()).map_err(
        |e| match e {
            PkiError::Parse { reason, .. } => PkiError::BadFile {
                path: paths.sa_key.clone(),
                reason,
            },
            other => other,
        },
    )
}

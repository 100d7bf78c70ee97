//! Token discovery, as `kubeadm join --token T --discovery-token-ca-cert-hash sha256:H` does it:
//! the cluster's CA is read from the `kube-public/cluster-info` ConfigMap (which anonymous users
//! may read) over a connection that cannot be verified yet, and trusted only if the hash of its
//! public key is one the user pinned. What comes out is the bootstrap kubeconfig: the endpoint,
//! that CA and the bootstrap token.

use base64::Engine;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::config::Kubeconfig;
use sha2::Digest;

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A flag is malformed.
    #[error("{flag}: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The ConfigMap could not be fetched.
    #[error("cannot fetch kube-public/cluster-info from {endpoint}: {reason}")]
    Fetch {
        /// The API server.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The ConfigMap holds no usable CA.
    #[error("kube-public/cluster-info is invalid: {0}")]
    Invalid(String),
    /// The CA found is not the one pinned.
    #[error(
        "cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"{found}\" are pinned"
    )]
    NotPinned {
        /// The hash of the CA found.
        found: String,
    },
}

/// The bootstrap token format: `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn check_token(token: &str) -> Result<(), DiscoveryError> {
    let valid = token.split_once('.').is_some_and(|(id, secret)| {
        let ok = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        };
        ok(id, 6) && ok(secret, 16)
    });
    if valid {
        Ok(())
    } else {
        Err(DiscoveryError::Flag {
            flag: "--token",
            reason: format!(
                "the bootstrap token {token:?} was not of the form \"[a-z0-9]{{6}}.[a-z0-9]{{16}}\""
            ),
        })
    }
}

/// `sha256:<hex>` of the DER SubjectPublicKeyInfo of the first certificate in `ca_pem`: the
/// form kubeadm prints and accepts.
pub fn ca_cert_hash(ca_pem: &[u8]) -> Result<String, DiscoveryError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem)
        .map_err(|e| DiscoveryError::Invalid(format!("the CA is not a PEM certificate: {e}")))?;
    let cert = pem.parse_x509().map_err(|e| {
        DiscoveryError::Invalid(format!("the CA certificate cannot be parsed: {e}"))
    })?;
    let digest = sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    Ok(format!("sha256:{}", hex::encode(digest)))
}

/// Checks that each pin is `sha256:` and 64 hex digits; returns them lowercased.
pub fn check_pins(pins: &[String]) -> Result<Vec<String>, DiscoveryError> {
    if pins.is_empty() {
        return Err(DiscoveryError::Flag {
            flag: "--discovery-token-ca-cert-hash",
            reason: "required with --join: the CA cannot be trusted without a pinned public key"
                .into(),
        });
    }
    pins.iter()
        .map(|pin| {
            let lower = pin.to_ascii_lowercase();
            match lower.strip_prefix("sha256:") {
                Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    Ok(lower)
                }
                _ => Err(DiscoveryError::Flag {
                    flag: "--discovery-token-ca-cert-hash",
                    reason: format!("{pin:?} is not of the form \"sha256:<64 hex digits>\""),
                }),
            }
        })
        .collect()
}

/// Fetches the cluster's CA from `endpoint` (`host:port` or an https URL), checks it against
/// `pins`, and returns the bootstrap kubeconfig for `token` (a kubeconfig document).
pub async fn discover(
    endpoint: &str,
    token: &str,
    pins: &[String],
) -> Result<serde_json::Value, DiscoveryError> {
    check_token(token)?;
    let pins = check_pins(pins)?;
    let server = if endpoint.starts_with("https://") {
        endpoint.to_string()
    } else {
        format!("https://{endpoint}")
    };
    let fetch_error = |reason: String| DiscoveryError::Fetch {
        endpoint: server.clone(),
        reason,
    };
    let url = server.parse().map_err(|e| DiscoveryError::Flag {
        flag: "--join",
        reason: format!("{endpoint:?} is not an address: {e}"),
    })?;
    let mut config = kube::Config::new(url);
    // Nothing is trusted from this connection until the pin below has been checked.
    config.accept_invalid_certs = true;
    let client = kube::Client::try_from(config).map_err(|e| fetch_error(e.to_string()))?;
    let info = kube::Api::<ConfigMap>::namespaced(client, "kube-public")
        .get("cluster-info")
        .await
        .map_err(|e| fetch_error(e.to_string()))?;
    let yaml = info
        .data
        .as_ref()
        .and_then(|d| d.get("kubeconfig"))
        .ok_or_else(|| DiscoveryError::Invalid("it has no kubeconfig key".into()))?;
    let published = Kubeconfig::from_yaml(yaml)
        .map_err(|e| DiscoveryError::Invalid(format!("its kubeconfig cannot be read: {e}")))?;
    let ca_data = published
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .ok_or_else(|| {
            DiscoveryError::Invalid("its kubeconfig has no certificate-authority-data".into())
        })?;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca_data.trim())
        .map_err(|e| DiscoveryError::Invalid(format!("certificate-authority-data: {e}")))?;
    let found = ca_cert_hash(&ca_pem)?;
    if !pins.contains(&found) {
        return Err(DiscoveryError::NotPinned { found });
    }
    Ok(bootstrap_kubeconfig(&server, &ca_data, token))
}

/// The kubeconfig the TLS bootstrap authenticates with: `server`, its CA, the bootstrap token,
/// named as kubeadm names it in bootstrap-kubelet.conf.
fn bootstrap_kubeconfig(server: &str, ca_data: &str, token: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubernetes", "cluster": {
            "server": server,
            "certificate-authority-data": ca_data,
        }}],
        "users": [{"name": "tls-bootstrap-token-user", "user": {"token": token}}],
        "contexts": [{"name": "tls-bootstrap-token-user@kubernetes", "context": {
            "cluster": "kubernetes",
            "user": "tls-bootstrap-token-user",
        }}],
        "current-context": "tls-bootstrap-token-user@kubernetes",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_pins_are_checked_with_the_flag_named() {
        assert!(check_token("abcdef.0123456789abcdef").is_ok());
        for bad in [
            "abcdef0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abc.def",
        ] {
            let error = check_token(bad).unwrap_err().to_string();
            assert!(error.starts_with("--token: the bootstrap token"), "{error}");
        }
        let pin = format!("SHA256:{}", "A".repeat(64));
        assert_eq!(
            check_pins(std::slice::from_ref(&pin)).unwrap(),
            vec![pin.to_ascii_lowercase()]
        );
        let error = check_pins(&["md5:00".into()]).unwrap_err().to_string();
        assert!(
            error.starts_with("--discovery-token-ca-cert-hash: \"md5:00\""),
            "{error}"
        );
        assert!(check_pins(&[]).is_err());
    }

    #[test]
    fn the_hash_is_of_the_public_key_info() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["ca".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let expected = format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(
                rcgen::PublicKeyData::subject_public_key_info(&key)
            ))
        );
        assert_eq!(ca_cert_hash(cert.pem().as_bytes()).unwrap(), expected);
        assert!(ca_cert_hash(b"not a certificate").is_err());
    }
}

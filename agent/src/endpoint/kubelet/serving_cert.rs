//! The kubelet endpoint's serving certificate: the configured `tlsCertFile` /
//! `tlsPrivateKeyFile`, or a self-signed one kept in the agent's `pki` directory
//! (`kubelet.crt`, `kubelet.key`, the kubelet's names) and made again when it is missing,
//! unreadable or expires within a day (rcgen's default validity, which outlasts the host).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and its key.
pub struct ServingPair {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key.
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ServingPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingPair").finish_non_exhaustive()
    }
}

/// Reads a PEM pair.
pub fn load(cert: &Path, key: &Path) -> Result<ServingPair, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
    Ok(ServingPair { chain, key })
}

/// The self-signed pair in `dir` for `node_name` and `addresses`, made when needed.
pub fn self_signed(
    dir: &Path,
    node_name: &str,
    addresses: &[String],
) -> Result<ServingPair, String> {
    let cert_file = dir.join("kubelet.crt");
    let key_file = dir.join("kubelet.key");
    if let Ok(pair) = load(&cert_file, &key_file)
        && still_valid(&pair.chain[0])
    {
        return Ok(pair);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let key = rcgen::KeyPair::generate().map_err(|e| format!("generate the serving key: {e}"))?;
    let mut names = vec![node_name.to_string(), "localhost".to_string()];
    names.extend(addresses.iter().cloned());
    names.push("127.0.0.1".into());
    names.dedup();
    let mut params = rcgen::CertificateParams::new(names)
        .map_err(|e| format!("serving certificate names: {e}"))?;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, format!("{node_name}@capstan"));
    params.distinguished_name = subject;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("sign the serving certificate: {e}"))?;
    write_private(&key_file, key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_file, cert.pem()).map_err(|e| format!("{}: {e}", cert_file.display()))?;
    tracing::info!(cert = %cert_file.display(), "made a self-signed serving certificate for the kubelet endpoint");
    load(&cert_file, &key_file)
}

fn write_private(path: &PathBuf, contents: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether the certificate is good for at least another day.
fn still_valid(cert: &CertificateDer<'_>) -> bool {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    let day_ahead =
        x509_parser::time::ASN1Time::from_timestamp(chrono::Utc::now().timestamp() + 24 * 3600);
    day_ahead.is_ok_and(|t| parsed.validity().not_after > t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_pair_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = self_signed(dir.path(), "node-a", &["10.0.0.5".into()]).unwrap();
        let second = self_signed(dir.path(), "node-a", &["10.0.0.5".into()]).unwrap();
        assert_eq!(first.chain[0], second.chain[0]);
        let (_, cert) = x509_parser::parse_x509_certificate(first.chain[0].as_ref()).unwrap();
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        let text = format!("{:?}", sans.value.general_names);
        assert!(
            text.contains("DNSName(\"node-a\")") && text.contains("IPAddress([10, 0, 0, 5])"),
            "{text}"
        );
    }
}

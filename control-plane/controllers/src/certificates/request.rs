//! A CSR's PKCS#10 request, parsed (x509-parser for the subject and SANs as they are, rcgen's
//! `CertificateSigningRequestParams::from_pem` for signing), and upstream's checks of kubelet
//! client and serving requests and of kube-apiserver-client usages.

use std::collections::BTreeSet;

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// The kubelet client signer.
pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The kubelet serving signer.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// The generic API client signer.
pub const API_CLIENT: &str = "kubernetes.io/kube-apiserver-client";

/// Why a request is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not a PEM `CERTIFICATE REQUEST`, or not PKCS#10.
    #[error("unable to parse csr: {0}")]
    Parse(String),
    /// Fails the signer's checks (upstream's messages).
    #[error("{0}")]
    Invalid(String),
}

/// What the checks look at.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The PEM text.
    pub pem: String,
    /// Subject common name.
    pub common_name: String,
    /// Subject organizations, in order.
    pub organizations: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// Email SANs.
    pub emails: Vec<String>,
    /// IP SANs.
    pub ips: usize,
    /// URI SANs.
    pub uris: usize,
}

/// Parses the PEM of `spec.request`.
pub fn parse(pem_bytes: &[u8]) -> Result<Request, RequestError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_bytes)
        .map_err(|e| RequestError::Parse(e.to_string()))?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(RequestError::Parse(format!(
            "PEM block type {} is not CERTIFICATE REQUEST",
            pem.label
        )));
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| RequestError::Parse(e.to_string()))?;
    let info = &csr.certification_request_info;
    let text =
        |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().unwrap_or("").to_string();
    let mut request = Request {
        pem: String::from_utf8_lossy(pem_bytes).into_owned(),
        common_name: info
            .subject
            .iter_common_name()
            .next()
            .map(text)
            .unwrap_or_default(),
        organizations: info.subject.iter_organization().map(text).collect(),
        ..Request::default()
    };
    for extension in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = extension {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(dns) => request.dns_names.push((*dns).to_string()),
                    GeneralName::RFC822Name(email) => request.emails.push((*email).to_string()),
                    GeneralName::IPAddress(_) => request.ips += 1,
                    GeneralName::URI(_) => request.uris += 1,
                    _ => {}
                }
            }
        }
    }
    Ok(request)
}

fn invalid(message: &str) -> RequestError {
    RequestError::Invalid(message.to_string())
}

fn usages(list: &[String]) -> BTreeSet<&str> {
    list.iter().map(String::as_str).collect()
}

fn nodes_subject(request: &Request) -> Result<(), RequestError> {
    if request.organizations != ["system:nodes"] {
        return Err(invalid("subject organization is not system:nodes"));
    }
    Ok(())
}

fn node_common_name(request: &Request) -> Result<(), RequestError> {
    if !request.common_name.starts_with("system:node:") {
        return Err(invalid(
            "subject common name does not begin with system:node:",
        ));
    }
    Ok(())
}

/// Upstream's ValidateKubeletClientCSR.
pub fn validate_kubelet_client(
    request: &Request,
    spec_usages: &[String],
) -> Result<(), RequestError> {
    nodes_subject(request)?;
    if !request.dns_names.is_empty() {
        return Err(invalid("DNS subjectAltNames are not allowed"));
    }
    if !request.emails.is_empty() {
        return Err(invalid("Email subjectAltNames are not allowed"));
    }
    if request.ips > 0 {
        return Err(invalid("IP subjectAltNames are not allowed"));
    }
    if request.uris > 0 {
        return Err(invalid("URI subjectAltNames are not allowed"));
    }
    node_common_name(request)?;
    let got = usages(spec_usages);
    let rsa = BTreeSet::from(["client auth", "digital signature", "key encipherment"]);
    let no_rsa = BTreeSet::from(["client auth", "digital signature"]);
    if got != rsa && got != no_rsa {
        return Err(invalid(
            "usages did not match [client auth digital signature key encipherment]",
        ));
    }
    Ok(())
}

/// Upstream's ValidateKubeletServingCSR.
pub fn validate_kubelet_serving(
    request: &Request,
    spec_usages: &[String],
) -> Result<(), RequestError> {
    nodes_subject(request)?;
    if !request.emails.is_empty() {
        return Err(invalid("Email subjectAltNames are not allowed"));
    }
    if request.uris > 0 {
        return Err(invalid("URI subjectAltNames are not allowed"));
    }
    if request.dns_names.is_empty() && request.ips == 0 {
        return Err(invalid("DNS or IP subjectAltName is required"));
    }
    node_common_name(request)?;
    let got = usages(spec_usages);
    let rsa = BTreeSet::from(["digital signature", "key encipherment", "server auth"]);
    let no_rsa = BTreeSet::from(["digital signature", "server auth"]);
    if got != rsa && got != no_rsa {
        return Err(invalid(
            "usages did not match [digital signature key encipherment server auth]",
        ));
    }
    Ok(())
}

/// The kube-apiserver-client signer's check: only client usages.
pub fn validate_api_client(spec_usages: &[String]) -> Result<(), RequestError> {
    for usage in spec_usages {
        if !["digital signature", "key encipherment", "client auth"].contains(&usage.as_str()) {
            return Err(RequestError::Invalid(format!(
                "invalid usage for client certificate: {usage}"
            )));
        }
    }
    Ok(())
}

/// The check of the signer `signer`, or `None` when it is not one of ours.
pub fn validate_for(
    signer: &str,
    request: &Request,
    spec_usages: &[String],
) -> Option<Result<(), RequestError>> {
    match signer {
        KUBELET_CLIENT => Some(validate_kubelet_client(request, spec_usages)),
        KUBELET_SERVING => Some(validate_kubelet_serving(request, spec_usages)),
        API_CLIENT => Some(validate_api_client(spec_usages)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(cn: &str, orgs: &[&str], dns: &[&str]) -> String {
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .unwrap_or_default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for org in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *org);
        }
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let csr = params
            .serialize_request(&key)
            .unwrap_or_else(|e| panic!("{e}"));
        csr.pem().unwrap_or_else(|e| panic!("{e}"))
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kubelet_client_checks() {
        let good =
            parse(pem("system:node:n1", &["system:nodes"], &[]).as_bytes()).unwrap_or_default();
        assert_eq!(good.common_name, "system:node:n1");
        let usages = strings(&["digital signature", "client auth"]);
        assert_eq!(validate_kubelet_client(&good, &usages), Ok(()));
        let rsa = strings(&["key encipherment", "digital signature", "client auth"]);
        assert_eq!(validate_kubelet_client(&good, &rsa), Ok(()));
        let server = strings(&["digital signature", "server auth"]);
        assert!(validate_kubelet_client(&good, &server).is_err());
        let org = parse(pem("system:node:n1", &["other"], &[]).as_bytes()).unwrap_or_default();
        assert_eq!(
            validate_kubelet_client(&org, &usages),
            Err(invalid("subject organization is not system:nodes"))
        );
        let cn = parse(pem("n1", &["system:nodes"], &[]).as_bytes()).unwrap_or_default();
        assert_eq!(
            validate_kubelet_client(&cn, &usages),
            Err(invalid(
                "subject common name does not begin with system:node:"
            ))
        );
        let dns = parse(pem("system:node:n1", &["system:nodes"], &["n1.example"]).as_bytes())
            .unwrap_or_default();
        assert_eq!(
            validate_kubelet_client(&dns, &usages),
            Err(invalid("DNS subjectAltNames are not allowed"))
        );
        assert_eq!(validate_kubelet_serving(&dns, &server), Ok(()));
        assert!(parse(b"not a pem").is_err());
    }
}

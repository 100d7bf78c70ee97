//! Certificate signing requests: "csrapproving" approves kubelet client requests as upstream's
//! sarapprove does, "csrsigning" signs approved requests of the kubelet and API-client signers
//! with the cluster CA.

pub mod approving;
pub mod request;
pub mod signing;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;

/// Errors of a reconcile, retried with a delay.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(String),
}

/// Whether the request has the condition `kind` True.
pub fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// Whether a decision was made already: approved, denied or failed.
pub fn finished(csr: &CertificateSigningRequest) -> bool {
    ["Approved", "Denied", "Failed"]
        .iter()
        .any(|kind| has_condition(csr, kind))
}

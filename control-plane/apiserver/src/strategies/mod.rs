//! Per-kind strategy beyond the shared one in `strategy`: defaults, checks and the
//! create-time fields of one kind family per file. `strategy` and `validation` call in here.

mod csr;

use serde_json::Value;

use crate::kinds::Kind;
use crate::server::RequestUser;
use crate::status::Cause;

/// What a create sets from the request beyond the shared create strategy (after it ran: the
/// uid is known).
pub fn prepare_create(kind: &Kind, object: &mut Value, user: &RequestUser) {
    if let ("certificates.k8s.io", "CertificateSigningRequest") = (kind.group, kind.kind) {
        csr::prepare_create(object, user)
    }
}

/// The kind family's own checks of an object about to be stored.
pub fn check(kind: &Kind, object: &Value) -> Vec<Cause> {
    match (kind.group, kind.kind) {
        ("certificates.k8s.io", "CertificateSigningRequest") => csr::check(object),
        _ => Vec::new(),
    }
}

//! `Warning` headers (RFC 7234 code 299, as kube-apiserver sends them and kubectl prints them)
//! for writes whose objects are stored but do nothing here, so nobody takes them for enforced.

use http::{Method, Response};

use crate::body::ApiBody;
use crate::kinds::Kind;

/// What the server does not do with objects of `kind`, if it is stored only.
pub fn stored_only(kind: &Kind) -> Option<&'static str> {
    match (kind.group, kind.plural) {
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
        | ("admissionregistration.k8s.io", "validatingwebhookconfigurations") => Some(
            "capstan stores admission webhook configurations but does not call webhooks: they have no effect",
        ),
        ("admissionregistration.k8s.io", "validatingadmissionpolicies")
        | ("admissionregistration.k8s.io", "validatingadmissionpolicybindings") => Some(
            "capstan stores validating admission policies but does not evaluate them: they have no effect",
        ),
        _ => None,
    }
}

/// Adds the stored-only warning of `kind` to the answer of a write (through the request's
/// warning collector, which writes every warning once).
pub fn add(kind: &Kind, method: &Method, response: Response<ApiBody>) -> Response<ApiBody> {
    let write = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if let (true, Some(text)) = (write, stored_only(kind)) {
        crate::admission::warnings::add(text);
    }
    response
}

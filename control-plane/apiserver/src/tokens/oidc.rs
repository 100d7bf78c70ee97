//! The service-account issuer's OIDC discovery documents, so that relying parties outside the
//! cluster can verify tokens: `/.well-known/openid-configuration` and the key set at
//! `/openid/v1/jwks`, as kube-apiserver serves them (only when the issuer is an https URL).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Response;
use serde_json::{Value, json};

use super::TokenSettings;
use crate::body::{self, ApiBody};
use crate::server::ApiServer;
use crate::status::{ApiError, ApiResult};

/// The discovery document's path.
pub const CONFIG_PATH: &str = "/.well-known/openid-configuration";
/// The key set's path.
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// What clients may cache them for, as upstream.
const CACHE_CONTROL: &str = "public, max-age=3600";

/// Whether `path` is one of the discovery paths.
pub fn is_discovery_path(path: &str) -> bool {
    matches!(path.trim_end_matches('/'), CONFIG_PATH | JWKS_PATH)
}

/// The discovery document.
pub fn configuration(settings: &TokenSettings) -> Value {
    json!({
        "issuer": settings.issuers.first().cloned().unwrap_or_default(),
        "jwks_uri": settings.jwks_uri,
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    })
}

/// The key set: the one P-256 signing key, as go-jose writes it.
pub fn key_set(settings: &TokenSettings) -> Value {
    let key = settings.key().verifying_key();
    let point = key.public_point();
    // An uncompressed point: 0x04, then x and y of 32 bytes each.
    let (x, y) = match point {
        [4, rest @ ..] if rest.len() == 64 => rest.split_at(32),
        _ => (&[][..], &[][..]),
    };
    json!({"keys": [{
        "use": "sig",
        "kty": "EC",
        "kid": key.key_id(),
        "crv": "P-256",
        "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
    }]})
}

/// Serves one of the discovery paths.
pub fn serve(server: &ApiServer, path: &str) -> ApiResult<Response<ApiBody>> {
    let settings = server
        .config
        .service_account_tokens
        .as_deref()
        .filter(|s| s.issuers.first().is_some_and(|i| i.starts_with("https://")))
        .ok_or_else(ApiError::path_not_found)?;
    let (content_type, document) = if path.trim_end_matches('/') == CONFIG_PATH {
        ("application/json", configuration(settings))
    } else {
        ("application/jwk-set+json", key_set(settings))
    };
    let mut response = body::bytes_response(200, content_type, document.to_string().into_bytes());
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static(CACHE_CONTROL),
    );
    Ok(response)
}

//! `POST .../serviceaccounts/<name>/token`: a TokenRequest (authentication.k8s.io/v1) answered
//! with a signed token for the service account, optionally bound to a Pod, Secret or Node of
//! the same namespace, whose UIDs go into the token's `kubernetes.io` claim. The checks,
//! defaults and messages are kube-apiserver's `TokenREST.Create`.

use std::time::{Duration, SystemTime};

use http::Response;
use serde_json::{Value, json};

use super::{
    DEFAULT_EXPIRATION_SECONDS, EXTENDED_EXPIRATION_SECONDS, MAX_EXPIRATION_SECONDS,
    MIN_EXPIRATION_SECONDS, TokenSettings, WARN_ONLY_EXPIRATION_SECONDS,
};
use crate::authn::serviceaccount::{KubernetesClaim, ObjectRef};
use crate::body::{self, ApiBody};
use crate::rest::{self, Call};
use crate::route::Target;
use crate::status::{ApiError, ApiResult, Cause};

const GROUP: &str = "authentication.k8s.io";
const KIND: &str = "TokenRequest";

/// `TokenRequest.authentication.k8s.io "<name>" is invalid: ...`.
fn invalid(name: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(GROUP, KIND, name, causes)
}

fn invalid_value(field: &str, value: &Value, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {value}: {detail}"),
        field: field.into(),
    }
}

/// Issues the token a TokenRequest asks for.
pub async fn create(call: &Call<'_>, target: &Target<'_>) -> ApiResult<Response<ApiBody>> {
    let server = call.server;
    let Some(settings) = server.config.service_account_tokens.as_deref() else {
        // As kube-apiserver without a signing key: the subresource is not installed.
        return Err(ApiError::path_not_found());
    };
    let name = target.name.as_deref().unwrap_or("");
    let Some(namespace) = target.namespace.as_deref() else {
        return Err(ApiError::bad_request("namespace is required"));
    };
    let request = body::decode_object(call.content_type.as_deref(), &call.body)?;
    check_names(&request, name, namespace)?;
    let (account, _) = rest::get_object(server, target.kind, Some(namespace), name).await?;
    let Asked {
        spec,
        audiences,
        mut expiration,
    } = asked(&request, settings)?;

    let mut claim = KubernetesClaim {
        namespace: namespace.to_string(),
        node: None,
        pod: None,
        secret: None,
        serviceaccount: ObjectRef {
            name: name.to_string(),
            uid: uid_of(&account),
        },
        warnafter: None,
    };
    let reference = spec.get("boundObjectRef").filter(|r| r.is_object());
    if crate::authz::node::node_identity(call.user).is_some() {
        let pod = match reference {
            Some(r) if r.get("kind").and_then(Value::as_str) == Some("Pod") => {
                let pod_name = r.get("name").and_then(Value::as_str).unwrap_or("");
                match server.kinds.find("", "v1", "pods") {
                    Some(pods) => rest::get_object(server, pods, Some(namespace), pod_name)
                        .await
                        .ok()
                        .map(|(pod, _)| pod),
                    None => None,
                }
            }
            _ => None,
        };
        crate::admission::node_restriction::check_token_request(
            call.user,
            name,
            reference,
            pod.as_ref(),
        )?;
    }
    if let Some(reference) = reference {
        bind(call, namespace, name, reference, &mut claim).await?;
    }
    let mut warning = None;
    if let Some(max) = settings
        .max_expiration_seconds
        .filter(|max| expiration > *max)
    {
        warning = Some(format!(
            "requested expiration of {expiration} seconds shortened to {max} seconds"
        ));
        expiration = max;
    }
    let now = SystemTime::now();
    let mut lifetime = expiration;
    if settings.extend_expiration
        && claim.pod.is_some()
        && expiration == WARN_ONLY_EXPIRATION_SECONDS
        && audiences.iter().all(|a| settings.audiences.contains(a))
    {
        claim.warnafter = Some(unix(now) + expiration as u64);
        lifetime = EXTENDED_EXPIRATION_SECONDS;
    }
    let token = issue(settings, now, claim, &audiences, lifetime)?;
    tracing::debug!(%namespace, account = %name, expiration, "issued a service account token");

    let mut metadata = request
        .get("metadata")
        .filter(|m| m.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    metadata["name"] = json!(name);
    metadata["namespace"] = json!(namespace);
    metadata["creationTimestamp"] = json!(timestamp(now));
    let mut spec = spec;
    spec["audiences"] = json!(audiences);
    spec["expirationSeconds"] = json!(expiration);
    if spec.get("boundObjectRef").is_none() {
        spec["boundObjectRef"] = Value::Null;
    }
    let answer = json!({
        "kind": KIND,
        "apiVersion": format!("{GROUP}/v1"),
        "metadata": metadata,
        "spec": spec,
        "status": {
            "token": token,
            "expirationTimestamp": timestamp(now + Duration::from_secs(expiration as u64)),
        },
    });
    let mut response = body::object_response(201, &answer, call.yaml);
    if let Some(text) = warning {
        // The HTTP warning kubectl prints as `Warning: ...`.
        let value = format!("299 - {}", json!(text));
        if let Ok(header) = http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(http::header::WARNING, header);
        }
    }
    Ok(response)
}

/// A name or namespace in the body must be the URL's.
fn check_names(request: &Value, name: &str, namespace: &str) -> ApiResult<()> {
    if !request.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a TokenRequest object",
        ));
    }
    let kind = request.get("kind").and_then(Value::as_str).unwrap_or(KIND);
    if kind != KIND {
        return Err(ApiError::bad_request(format!(
            "the body is a {kind}, not a {KIND}"
        )));
    }
    for (field, expected, what) in [
        ("name", name, "name"),
        ("namespace", namespace, "namespace"),
    ] {
        let given = request
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !given.is_empty() && given != expected {
            return Err(invalid(
                name,
                vec![invalid_value(
                    &format!("metadata.{field}"),
                    &json!(given),
                    &format!("must match the service account {what} if specified"),
                )],
            ));
        }
    }
    Ok(())
}

/// What a request asks for, defaulted and validated.
struct Asked {
    spec: Value,
    audiences: Vec<String>,
    expiration: i64,
}

fn asked(request: &Value, settings: &TokenSettings) -> ApiResult<Asked> {
    let spec = request
        .get("spec")
        .filter(|s| s.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if audiences.is_empty() {
        audiences = settings.audiences.clone();
    }
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("spec.expirationSeconds must be an integer"))?,
    };
    let mut causes = Vec::new();
    if expiration < MIN_EXPIRATION_SECONDS {
        causes.push(invalid_value(
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        causes.push(invalid_value(
            "spec.expirationSeconds",
            &json!(expiration),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    if !causes.is_empty() {
        // Upstream names no object here.
        return Err(invalid("", causes));
    }
    Ok(Asked {
        spec,
        audiences,
        expiration,
    })
}

fn uid_of(object: &Value) -> String {
    object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn timestamp(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn issue(
    settings: &TokenSettings,
    now: SystemTime,
    claim: KubernetesClaim,
    audiences: &[String],
    lifetime: i64,
) -> ApiResult<String> {
    settings
        .issuer
        .issue_claim(now, claim, audiences, Duration::from_secs(lifetime as u64))
        .map_err(|e| {
            tracing::error!(error = %e, "could not sign a service account token");
            ApiError::internal(format!("failed to generate token: {e}"))
        })
}

/// Puts the bound object (and for a pod, its node) into `claim` after checking it exists with
/// the UID the reference names, and that a pod runs as the account.
async fn bind(
    call: &Call<'_>,
    namespace: &str,
    account: &str,
    reference: &Value,
    claim: &mut KubernetesClaim,
) -> ApiResult<()> {
    let server = call.server;
    let field = |f: &str| reference.get(f).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind, name, uid) = (
        field("apiVersion"),
        field("kind"),
        field("name"),
        field("uid"),
    );
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    let plural = match (group, kind) {
        ("", "Pod") => "pods",
        ("", "Secret") => "secrets",
        ("", "Node") => "nodes",
        _ => {
            let version = api_version.rsplit('/').next().unwrap_or("");
            let gvk = if group.is_empty() {
                format!("/{version}, Kind={kind}")
            } else {
                format!("{group}/{version}, Kind={kind}")
            };
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {gvk}"
            )));
        }
    };
    let Some(objects) = server.kinds.find("", "v1", plural) else {
        return Err(ApiError::path_not_found());
    };
    let scope = (plural != "nodes").then_some(namespace);
    let (object, _) = rest::get_object(server, objects, scope, name).await?;
    let actual_uid = uid_of(&object);
    let this = Some(ObjectRef {
        name: name.to_string(),
        uid: actual_uid.clone(),
    });
    match plural {
        "pods" => {
            let runs_as = object
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if runs_as != account {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount {} to pod running with different serviceaccount name.",
                    json!(account)
                )));
            }
            claim.pod = this;
            if let Some(node_name) = object
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                claim.node = Some(node_of(call, node_name).await?);
            }
        }
        "secrets" => claim.secret = this,
        _ => claim.node = this,
    }
    if !uid.is_empty() && uid != actual_uid {
        return Err(ApiError::conflict(
            "",
            kind,
            name,
            &format!(
                "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        ));
    }
    Ok(())
}

/// The node a pod runs on; only its name when the Node object is not there.
async fn node_of(call: &Call<'_>, name: &str) -> ApiResult<ObjectRef> {
    let server = call.server;
    let uid = match server.kinds.find("", "v1", "nodes") {
        Some(nodes) => match rest::get_object(server, nodes, None, name).await {
            Ok((node, _)) => uid_of(&node),
            Err(e) if e.reason == "NotFound" => String::new(),
            Err(e) => return Err(e),
        },
        None => String::new(),
    };
    Ok(ObjectRef {
        name: name.to_string(),
        uid,
    })
}

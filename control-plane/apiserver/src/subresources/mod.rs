//! The subresources beyond `status`: what discovery lists for each kind, and their handlers
//! (scale, pods' binding, eviction and ephemeral containers, CSR approval, namespace finalize,
//! and the `proxy` ones, which answer that they are not built).

mod approval;
mod finalize;
mod pods;
mod scale;
mod streaming;

use http::{Method, Response};
use serde_json::{Value, json};

use crate::admission;
use crate::body::ApiBody;
use crate::kinds::Kind;
use crate::rest::{self, Call};
use crate::route::Target;
use crate::status::{ApiError, ApiResult};
use crate::strategy;

pub use scale::selector_string;

/// One subresource as discovery lists it.
#[derive(Debug, Clone, Copy)]
pub struct Subresource {
    /// The name after the object's, e.g. `scale`.
    pub name: &'static str,
    /// The verbs it serves.
    pub verbs: &'static [&'static str],
    /// The group, version and kind it takes and answers, when not the parent's.
    pub response: Option<(&'static str, &'static str, &'static str)>,
}

const SCALE: Subresource = Subresource {
    name: "scale",
    verbs: &["get", "patch", "update"],
    response: Some(("autoscaling", "v1", "Scale")),
};
const PROXY_VERBS: &[&str] = &["create", "delete", "get", "patch", "update"];
const CONNECT_VERBS: &[&str] = &["create", "get"];

const POD: &[Subresource] = &[
    Subresource {
        name: "attach",
        verbs: CONNECT_VERBS,
        response: Some(("", "v1", "PodAttachOptions")),
    },
    Subresource {
        name: "binding",
        verbs: &["create"],
        response: Some(("", "v1", "Binding")),
    },
    Subresource {
        name: "ephemeralcontainers",
        verbs: &["get", "patch", "update"],
        response: None,
    },
    Subresource {
        name: "eviction",
        verbs: &["create"],
        response: Some(("policy", "v1", "Eviction")),
    },
    Subresource {
        name: "exec",
        verbs: CONNECT_VERBS,
        response: Some(("", "v1", "PodExecOptions")),
    },
    Subresource {
        name: "log",
        verbs: &["get"],
        response: None,
    },
    Subresource {
        name: "portforward",
        verbs: CONNECT_VERBS,
        response: Some(("", "v1", "PodPortForwardOptions")),
    },
    Subresource {
        name: "proxy",
        verbs: PROXY_VERBS,
        response: Some(("", "v1", "PodProxyOptions")),
    },
];

/// The subresources of `kind` other than `status`.
pub fn extra(kind: &Kind) -> &'static [Subresource] {
    match (kind.group, kind.plural) {
        ("", "pods") => POD,
        ("", "nodes") => &[Subresource {
            name: "proxy",
            verbs: PROXY_VERBS,
            response: Some(("", "v1", "NodeProxyOptions")),
        }],
        ("", "services") => &[Subresource {
            name: "proxy",
            verbs: PROXY_VERBS,
            response: Some(("", "v1", "ServiceProxyOptions")),
        }],
        ("", "namespaces") => &[Subresource {
            name: "finalize",
            verbs: &["update"],
            response: None,
        }],
        ("", "replicationcontrollers")
        | ("apps", "deployments" | "replicasets" | "statefulsets") => &[SCALE],
        ("certificates.k8s.io", "certificatesigningrequests") => &[Subresource {
            name: "approval",
            verbs: &["get", "patch", "update"],
            response: None,
        }],
        _ => &[],
    }
}

fn response_kind(kind: &Kind, sub: &Subresource) -> (&'static str, &'static str, &'static str) {
    sub.response
        .unwrap_or((kind.group, kind.version, kind.kind))
}

/// The aggregated-discovery entries of `kind`'s extra subresources.
pub fn aggregated(kind: &Kind) -> Vec<Value> {
    extra(kind)
        .iter()
        .map(|sub| {
            let (group, version, k) = response_kind(kind, sub);
            json!({
                "subresource": sub.name,
                "responseKind": {"group": group, "version": version, "kind": k},
                "verbs": sub.verbs,
            })
        })
        .collect()
}

/// The APIResourceList entries of `kind`'s extra subresources (`pods/log`...).
pub fn legacy(kind: &Kind) -> Vec<Value> {
    extra(kind)
        .iter()
        .map(|sub| {
            let (group, version, k) = response_kind(kind, sub);
            let mut entry = json!({
                "name": format!("{}/{}", kind.plural, sub.name),
                "singularName": "",
                "namespaced": kind.namespaced,
                "kind": k,
                "verbs": sub.verbs,
            });
            if sub.response.is_some() && (group != kind.group || version != kind.version) {
                entry["group"] = json!(group);
                entry["version"] = json!(version);
            }
            entry
        })
        .collect()
}

/// Serves a request on `target`'s subresource (never `status`).
pub async fn serve(
    call: &Call<'_>,
    target: &Target<'_>,
    method: &Method,
) -> ApiResult<Response<ApiBody>> {
    let sub = target.subresource.as_deref().unwrap_or("");
    let Some(known) = extra(target.kind).iter().find(|s| s.name == sub) else {
        return Err(ApiError::path_not_found());
    };
    let verb = match *method {
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    if !known.verbs.contains(&verb) {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    match (target.kind.plural, sub) {
        (_, "scale") => scale::serve(call, target, method).await,
        (_, "approval") => approval::serve(call, target, method).await,
        (_, "finalize") => finalize::serve(call, target).await,
        ("pods", "binding") => pods::binding(call, target).await,
        ("pods", "eviction") => pods::eviction(call, target).await,
        ("pods", "ephemeralcontainers") => pods::ephemeral_containers(call, target, method).await,
        _ => streaming::serve(call, target).await,
    }
}

/// How many times a read-modify-write is retried when the object changed under it.
const ATTEMPTS: usize = 5;

/// What one read-modify-write of a subresource is.
pub(crate) struct Change<'a> {
    /// The subresource, as admission sees it.
    pub subresource: &'a str,
    /// The operation, as admission sees it.
    pub operation: admission::Operation,
    /// The revision the client pinned, if any: then a change under it is a conflict.
    pub pinned: Option<i64>,
}

/// Reads the target object, lets `change` make the new one from it, validates and admits it,
/// and stores it at the revision read; retried when the object changed meanwhile (unless
/// pinned). Returns the object as stored.
pub(crate) async fn modify<F>(
    call: &Call<'_>,
    target: &Target<'_>,
    how: Change<'_>,
    mut change: F,
) -> ApiResult<Value>
where
    F: FnMut(&Value) -> ApiResult<Value>,
{
    let kind = target.kind;
    let name = target.name.as_deref().unwrap_or("");
    let namespace = target.namespace.as_deref();
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let (current, revision) = rest::get_object(call.server, kind, namespace, name).await?;
        if how.pinned.is_some_and(|rv| rv != revision) {
            return Err(ApiError::modified(kind.group, kind.plural, name));
        }
        let mut new = change(&current)?;
        if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        let attributes = admission::Attributes {
            server: call.server,
            kind,
            namespace,
            name,
            subresource: Some(how.subresource),
            operation: how.operation,
            user: call.user,
            old: Some(&current),
            dry_run: call.dry_run(),
        };
        admission::mutate(&call.server.admission, &attributes, Some(&mut new)).await?;
        strategy::validate(kind, &new)?;
        admission::validate(&call.server.admission, &attributes, Some(&new)).await?;
        if call.dry_run() {
            strategy::metadata_mut(&mut new)
                .insert("resourceVersion".into(), json!(revision.to_string()));
            return Ok(new);
        }
        let key = kind.key(namespace, name);
        match call
            .server
            .store
            .update(&key, rest::encode(&new), revision)
            .await
        {
            Ok(stored) => return rest::decode(&stored),
            Err(capstan_store::StoreError::Conflict { .. }) if how.pinned.is_none() => {
                last = Some(ApiError::modified(kind.group, kind.plural, name));
            }
            Err(error) => return Err(rest::store_error(error, kind, name)),
        }
    }
    Err(last.unwrap_or_else(|| ApiError::modified(kind.group, kind.plural, name)))
}

/// The `resourceVersion` a body pins, if it sets one.
pub(crate) fn pinned(object: &Value) -> ApiResult<Option<i64>> {
    strategy::meta_str(object, "resourceVersion")
        .filter(|rv| !rv.is_empty())
        .map(rest::parse_revision)
        .transpose()
}

/// The success Status a create-like subresource (binding, eviction) answers with.
pub(crate) fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

//! The `scale` subresource of custom resources: an `autoscaling/v1` Scale read from and
//! written to the paths the definition names (`specReplicasPath`, `statusReplicasPath`,
//! `labelSelectorPath`), so `kubectl scale` and autoscalers work on custom objects.

use http::{Method, Response};
use serde_json::{Map, Value, json};

use super::columns::lookup;
use crate::body::{self, ApiBody};
use crate::kinds::Kind;
use crate::patch::{self, PatchType};
use crate::rest::{self, Call};
use crate::route::Target;
use crate::status::{ApiError, ApiResult};
use crate::strategy;

/// Where a custom resource keeps what its Scale shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// `specReplicasPath`, e.g. `.spec.replicas`.
    pub spec_replicas: String,
    /// `statusReplicasPath`, e.g. `.status.replicas`.
    pub status_replicas: String,
    /// `labelSelectorPath`, e.g. `.status.selector`.
    pub label_selector: Option<String>,
}

/// The scale subresource of one version of a definition, if it has one.
pub fn paths_of(version: &Value) -> Option<ScalePaths> {
    let scale = version.pointer("/subresources/scale")?;
    let text = |f: &str| scale.get(f).and_then(Value::as_str).map(str::to_string);
    Some(ScalePaths {
        spec_replicas: text("specReplicasPath")?,
        status_replicas: text("statusReplicasPath")?,
        label_selector: text("labelSelectorPath"),
    })
}

/// The Scale of `object`.
fn to_scale(paths: &ScalePaths, object: &Value) -> Value {
    let meta = |f: &str| object.pointer(&format!("/metadata/{f}")).cloned();
    let mut metadata = Map::new();
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(value) = meta(field) {
            metadata.insert(field.into(), value);
        }
    }
    let replicas = |path: &str| lookup(object, path).and_then(Value::as_i64).unwrap_or(0);
    let mut spec = json!({});
    let wanted = replicas(&paths.spec_replicas);
    if wanted != 0 {
        spec["replicas"] = json!(wanted);
    }
    let mut status = json!({"replicas": replicas(&paths.status_replicas)});
    if let Some(selector) = paths
        .label_selector
        .as_deref()
        .and_then(|p| lookup(object, p))
        .and_then(Value::as_str)
    {
        status["selector"] = json!(selector);
    }
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": metadata,
           "spec": spec, "status": status})
}

/// Sets the value at a simple dotted path (`.spec.replicas`), making the objects on the way.
fn set_path(object: &mut Value, path: &str, value: Value) {
    let fields: Vec<&str> = path.split('.').filter(|f| !f.is_empty()).collect();
    let mut current = object;
    for (i, field) in fields.iter().enumerate() {
        if !current.is_object() {
            *current = json!({});
        }
        if i + 1 == fields.len() {
            current[*field] = value;
            return;
        }
        current = &mut current[*field];
    }
}

/// GET, PUT or PATCH (`method`) of `<object>/scale`.
pub async fn serve(
    call: &Call<'_>,
    target: &Target<'_>,
    method: &Method,
) -> ApiResult<Response<ApiBody>> {
    let kind: &Kind = target.kind;
    let Some(paths) = kind.custom.as_ref().and_then(|c| c.scale.as_ref()) else {
        return Err(ApiError::path_not_found());
    };
    let name = target.name.as_deref().unwrap_or("");
    let namespace = target.namespace.as_deref();
    let (current, revision) = rest::get_object(call.server, kind, namespace, name).await?;
    let scale = to_scale(paths, &current);
    let wanted = match method.clone() {
        Method::GET => return Ok(body::object_response(200, &scale, call.yaml)),
        Method::PUT => body::decode_object(call.content_type.as_deref(), &call.body)?,
        Method::PATCH => {
            let content_type = call.content_type.as_deref().unwrap_or("");
            let patch_type = PatchType::from_content_type(content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
            patch::apply(&scale, patch_type, &call.body)?
        }
        other => return Err(ApiError::method_not_allowed(other.as_str())),
    };
    let pinned = wanted
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty());
    if let Some(rv) = pinned {
        if rest::parse_revision(rv)? != revision {
            return Err(ApiError::modified(kind.group, kind.plural, name));
        }
    }
    let replicas = match wanted.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(value) => value.as_i64().filter(|r| *r >= 0).ok_or_else(|| {
            ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![crate::status::Cause::invalid(
                    "spec.replicas",
                    &value.to_string(),
                    "must be greater than or equal to 0",
                )],
            )
        })?,
    };
    let mut updated = current.clone();
    set_path(&mut updated, &paths.spec_replicas, json!(replicas));
    strategy::prepare_update(kind, &mut updated, &current);
    super::prepare(kind, &mut updated, Some(&current))?;
    if call.dry_run() {
        return Ok(body::object_response(
            200,
            &to_scale(paths, &updated),
            call.yaml,
        ));
    }
    let key = kind.key(namespace, name);
    let stored = call
        .server
        .store
        .update(&key, rest::encode(&updated), revision)
        .await
        .map_err(|e| rest::store_error(e, kind, name))?;
    let mut object = rest::decode(&stored)?;
    super::read(kind, &mut object);
    Ok(body::object_response(
        200,
        &to_scale(paths, &object),
        call.yaml,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_reads_and_writes_the_named_paths() {
        let paths = ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: Some(".status.selector".into()),
        };
        let mut object = json!({"metadata": {"name": "w"}, "spec": {"replicas": 2},
                                "status": {"replicas": 1, "selector": "app=w"}});
        let scale = to_scale(&paths, &object);
        assert_eq!(scale["spec"]["replicas"], 2);
        assert_eq!(scale["status"], json!({"replicas": 1, "selector": "app=w"}));
        set_path(&mut object, ".spec.replicas", json!(5));
        set_path(&mut object, ".spec.deep.count", json!(1));
        assert_eq!(object["spec"]["replicas"], 5);
        assert_eq!(object["spec"]["deep"]["count"], 1);
    }
}

//! The files of configMap, secret, downwardAPI and projected volumes, computed from the pod and
//! the objects it refers to. Errors carry the field below the volume they come from.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, Secret,
};

use super::atomic::{FileProjection, Payload, validate_path};
use crate::objects::ObjectLookup;
use crate::pods::downward::{self, PodRuntimeInfo, find_container};

/// The mode of files whose volume sets no `defaultMode` (the API default for every kind).
pub const DEFAULT_MODE: i32 = 0o644;

/// A payload that cannot be built: the field (relative to the volume source) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadError {
    /// Path below the volume, such as `configMap.items[1].key`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn fail(field: impl Into<String>, reason: impl Into<String>) -> PayloadError {
    PayloadError {
        field: field.into(),
        reason: reason.into(),
    }
}

fn mode_of(mode: Option<i32>, default: i32, field: &str) -> Result<u32, PayloadError> {
    let mode = mode.unwrap_or(default);
    if !(0..=0o777).contains(&mode) {
        return Err(fail(
            field,
            format!("mode {mode:#o} is not within 0 and 0777"),
        ));
    }
    Ok(mode as u32)
}

/// Projects `entries` (key → bytes) through `items`, as the kubelet's MakePayload does: all
/// keys under their own names without items, else only the listed keys under their paths.
fn project(
    entries: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
    field: &str,
    what: &str,
) -> Result<Payload, PayloadError> {
    let default = mode_of(default_mode, DEFAULT_MODE, &format!("{field}.defaultMode"))?;
    let mut payload = Payload::new();
    match items {
        None => {
            for (key, data) in entries {
                payload.insert(
                    key.clone(),
                    FileProjection {
                        data: data.clone(),
                        mode: default,
                    },
                );
            }
        }
        Some(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_field = format!("{field}.items[{i}]");
                let Some(data) = entries.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(fail(
                        format!("{item_field}.key"),
                        match what {
                            "configmap" => {
                                format!(
                                    "configmap references non-existent config key: {}",
                                    item.key
                                )
                            }
                            _ => format!("references non-existent secret key: {}", item.key),
                        },
                    ));
                };
                validate_path(&item.path).map_err(|e| fail(format!("{item_field}.path"), e))?;
                let mode = match item.mode {
                    Some(m) => mode_of(Some(m), DEFAULT_MODE, &format!("{item_field}.mode"))?,
                    None => default,
                };
                payload.insert(
                    item.path.clone(),
                    FileProjection {
                        data: data.clone(),
                        mode,
                    },
                );
            }
        }
    }
    for path in payload.keys() {
        validate_path(path).map_err(|e| fail(format!("{field}: key"), e))?;
    }
    Ok(payload)
}

fn config_map_entries(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut entries: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    for (k, v) in cm.binary_data.iter().flatten() {
        entries.insert(k.clone(), v.0.clone());
    }
    entries
}

fn secret_entries(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut entries: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    // A manifest read from disk may carry stringData, which an API server would have merged.
    for (k, v) in secret.string_data.iter().flatten() {
        entries.insert(k.clone(), v.as_bytes().to_vec());
    }
    entries
}

/// The files of a ConfigMap reference; a missing optional ConfigMap gives no files.
#[allow(clippy::too_many_arguments)]
pub fn config_map(
    objects: &dyn ObjectLookup,
    namespace: &str,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
    field: &str,
) -> Result<Payload, PayloadError> {
    match objects.config_map(namespace, name) {
        Some(cm) => project(
            &config_map_entries(&cm),
            items,
            default_mode,
            optional,
            field,
            "configmap",
        ),
        None if optional => Ok(Payload::new()),
        None => Err(fail(
            format!("{field}.name"),
            format!("configmap \"{name}\" not found"),
        )),
    }
}

/// The files of a Secret reference; a missing optional Secret gives no files.
#[allow(clippy::too_many_arguments)]
pub fn secret(
    objects: &dyn ObjectLookup,
    namespace: &str,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
    field: &str,
) -> Result<Payload, PayloadError> {
    match objects.secret(namespace, name) {
        Some(s) => project(
            &secret_entries(&s),
            items,
            default_mode,
            optional,
            field,
            "secret",
        ),
        None if optional => Ok(Payload::new()),
        None => Err(fail(
            format!("{field}.secretName"),
            format!("secret \"{name}\" not found"),
        )),
    }
}

/// The files of downwardAPI items. Volumes expose only the pod's metadata through fieldRef (the
/// API restricts them so), and any container's resources through resourceFieldRef.
pub fn downward_api(
    pod: &Pod,
    info: &PodRuntimeInfo,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    field: &str,
) -> Result<Payload, PayloadError> {
    let default = mode_of(default_mode, DEFAULT_MODE, &format!("{field}.defaultMode"))?;
    let mut payload = Payload::new();
    for (i, item) in items.iter().enumerate() {
        let item_field = format!("{field}.items[{i}]");
        validate_path(&item.path).map_err(|e| fail(format!("{item_field}.path"), e))?;
        let value = if let Some(r) = &item.field_ref {
            let f = format!("{item_field}.fieldRef.fieldPath");
            if !r.field_path.starts_with("metadata.") {
                return Err(fail(
                    f,
                    format!(
                        "{:?} is not supported in volumes (only metadata fields)",
                        r.field_path
                    ),
                ));
            }
            downward::field_value(pod, info, &r.field_path).map_err(|e| fail(f, e.to_string()))?
        } else if let Some(r) = &item.resource_field_ref {
            let f = format!("{item_field}.resourceFieldRef");
            let name = r.container_name.as_deref().unwrap_or("");
            if name.is_empty() {
                return Err(fail(
                    format!("{f}.containerName"),
                    "must be set in a volume",
                ));
            }
            let container = find_container(pod, name).ok_or_else(|| {
                fail(
                    format!("{f}.containerName"),
                    format!("container {name:?} not found in the pod"),
                )
            })?;
            downward::resource_value(container, &r.resource, r.divisor.as_ref(), info)
                .map_err(|e| fail(f, e.to_string()))?
        } else {
            return Err(fail(
                item_field,
                "neither fieldRef nor resourceFieldRef is set",
            ));
        };
        let mode = match item.mode {
            Some(m) => mode_of(Some(m), DEFAULT_MODE, &format!("{item_field}.mode"))?,
            None => default,
        };
        payload.insert(
            item.path.clone(),
            FileProjection {
                data: value.into_bytes(),
                mode,
            },
        );
    }
    Ok(payload)
}

/// The files of a projected volume: each source's files together, later sources winning a
/// path conflict. Service account tokens come from the lookup (an API server's TokenRequest);
/// cluster trust bundles are not supported.
pub fn projected(
    pod: &Pod,
    info: &PodRuntimeInfo,
    objects: &dyn ObjectLookup,
    source: &ProjectedVolumeSource,
    field: &str,
) -> Result<Payload, PayloadError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let default_mode = Some(source.default_mode.unwrap_or(DEFAULT_MODE));
    let mut payload = Payload::new();
    for (i, s) in source.sources.iter().flatten().enumerate() {
        let f = format!("{field}.sources[{i}]");
        let part = if let Some(cm) = &s.config_map {
            config_map(
                objects,
                namespace,
                &cm.name,
                cm.items.as_ref(),
                default_mode,
                cm.optional == Some(true),
                &format!("{f}.configMap"),
            )?
        } else if let Some(sec) = &s.secret {
            let p = secret(
                objects,
                namespace,
                &sec.name,
                sec.items.as_ref(),
                default_mode,
                sec.optional == Some(true),
                &format!("{f}.secret"),
            );
            // The projected secret source names its object `name`, not `secretName`.
            p.map_err(|mut e| {
                if e.field.ends_with(".secretName") {
                    e.field = format!("{f}.secret.name");
                }
                e
            })?
        } else if let Some(d) = &s.downward_api {
            downward_api(
                pod,
                info,
                d.items.as_deref().unwrap_or_default(),
                default_mode,
                &format!("{f}.downwardAPI"),
            )?
        } else if let Some(token) = &s.service_account_token {
            let f = format!("{f}.serviceAccountToken");
            validate_path(&token.path).map_err(|e| fail(format!("{f}.path"), e))?;
            let value = objects
                .service_account_token(pod, token)
                .map_err(|e| fail(&f, e))?;
            let mode = mode_of(default_mode, DEFAULT_MODE, &format!("{field}.defaultMode"))?;
            Payload::from([(
                token.path.clone(),
                FileProjection {
                    data: value.into_bytes(),
                    mode,
                },
            )])
        } else if s.cluster_trust_bundle.is_some() {
            return Err(fail(
                format!("{f}.clusterTrustBundle"),
                "not supported: a standalone node has no API server",
            ));
        } else {
            return Err(fail(f, "no supported source set"));
        };
        payload.extend(part);
    }
    Ok(payload)
}

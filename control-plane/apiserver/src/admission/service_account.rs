//! ServiceAccount admission: a pod runs as a service account that exists (`default` unless it
//! names one), gets the account's image pull secrets when it has none, and unless automounting
//! is turned off (on the pod, else on the account) gets the `kube-api-access-<random>` projected
//! volume (a bound token, the cluster CA, the namespace) mounted in every container. Mirror
//! pods (the kubelet's copies of static pods) are left as they are but may not reference
//! service accounts or secrets.

use std::time::Duration;

use futures::future::BoxFuture;
use rand::Rng;
use serde_json::{Map, Value, json};

use super::forbid::forbidden;
use super::{Attributes, Operation, Plugin};
use crate::default_serviceaccount::DEFAULT_NAME;
use crate::rest;
use crate::status::ApiResult;

/// Where the token, CA and namespace are mounted in every container.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the projected volume's name.
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// The token lifetime the volume asks for: kube's 3607 s, which the API server recognises
/// (with the API server's own audience) to extend the token as a safe transition.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// The annotation marking mirror pods.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The annotation making an account restrict the secrets its pods reference.
const ENFORCE_MOUNTABLE_SECRETS: &str = "kubernetes.io/enforce-mountable-secrets";
/// How often the `default` account is looked for before the pod is refused: it may be about
/// to be made for a namespace created just now.
const DEFAULT_ATTEMPTS: usize = 10;
const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// The ServiceAccount plugin.
pub struct ServiceAccount;

impl Plugin for ServiceAccount {
    fn name(&self) -> &'static str {
        "ServiceAccount"
    }

    fn mutate<'a>(
        &'a self,
        attributes: &'a Attributes<'a>,
        object: Option<&'a mut Value>,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let Some(pod) = object.filter(|_| applies(attributes)) else {
                return Ok(());
            };
            if is_mirror(pod) {
                return check_mirror(attributes, pod);
            }
            let named = json!({"metadata": pod.get("metadata").cloned().unwrap_or(Value::Null)});
            let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
                return Ok(());
            };
            // `serviceAccount` is the deprecated spelling v1 still carries.
            let name = [spec.get("serviceAccountName"), spec.get("serviceAccount")]
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find(|n| !n.is_empty())
                .unwrap_or(DEFAULT_NAME)
                .to_string();
            spec.insert("serviceAccountName".into(), json!(name));
            spec.insert("serviceAccount".into(), json!(name));
            let account = lookup(attributes, &name)
                .await
                .map_err(|why| forbidden(attributes, Some(&named), &why))?;
            if automount(&account, spec) {
                mount_token(spec);
            }
            let has_pull_secrets = spec
                .get("imagePullSecrets")
                .and_then(Value::as_array)
                .is_some_and(|s| !s.is_empty());
            let account_pull_secrets: Vec<Value> = account
                .get("imagePullSecrets")
                .and_then(Value::as_array)
                .map(|secrets| {
                    secrets
                        .iter()
                        .filter_map(|s| s.get("name"))
                        .map(|name| json!({"name": name}))
                        .collect()
                })
                .unwrap_or_default();
            if !has_pull_secrets && !account_pull_secrets.is_empty() {
                spec.insert(
                    "imagePullSecrets".into(),
                    Value::Array(account_pull_secrets),
                );
            }
            Ok(())
        })
    }

    fn validate<'a>(
        &'a self,
        attributes: &'a Attributes<'a>,
        object: Option<&'a Value>,
    ) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async move {
            let Some(pod) = object.filter(|_| applies(attributes)) else {
                return Ok(());
            };
            if is_mirror(pod) {
                return check_mirror(attributes, pod);
            }
            let name = pod
                .pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if name.is_empty() {
                let namespace = attributes.namespace.unwrap_or("");
                let pod_name = pod.pointer("/metadata/name").and_then(Value::as_str);
                return Err(forbidden(
                    attributes,
                    Some(pod),
                    &format!(
                        "no service account specified for pod {namespace}/{}",
                        pod_name.unwrap_or("")
                    ),
                ));
            }
            let account = lookup(attributes, name)
                .await
                .map_err(|why| forbidden(attributes, Some(pod), &why))?;
            let enforce = account
                .pointer(&format!(
                    "/metadata/annotations/{}",
                    escape(ENFORCE_MOUNTABLE_SECRETS)
                ))
                .and_then(Value::as_str)
                .is_some_and(|v| matches!(v, "true" | "1" | "t" | "T" | "TRUE" | "True"));
            if enforce {
                if let Some(why) = unmountable_secret(&account, pod) {
                    return Err(forbidden(attributes, Some(pod), &why));
                }
            }
            Ok(())
        })
    }
}

/// Pod creates only, not their subresources.
fn applies(attributes: &Attributes<'_>) -> bool {
    attributes.operation == Operation::Create && attributes.is("", "pods")
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn is_mirror(pod: &Value) -> bool {
    pod.pointer(&format!(
        "/metadata/annotations/{}",
        escape(MIRROR_ANNOTATION)
    ))
    .is_some()
}

fn check_mirror(attributes: &Attributes<'_>, pod: &Value) -> ApiResult<()> {
    let refuse = |why: &str| Err(forbidden(attributes, Some(pod), why));
    let account = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !account.is_empty() {
        return refuse("a mirror pod may not reference service accounts");
    }
    if !secret_names(pod).is_empty() {
        return refuse("a mirror pod may not reference secrets");
    }
    let projects_token = volumes(pod).any(|v| {
        v.pointer("/projected/sources")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|s| s.get("serviceAccountToken").is_some()))
    });
    if projects_token {
        return refuse("a mirror pod may not use ServiceAccountToken volume projections");
    }
    Ok(())
}

fn volumes(pod: &Value) -> impl Iterator<Item = &Value> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    CONTAINER_LISTS
        .into_iter()
        .filter_map(|list| pod.pointer(&format!("/spec/{list}")))
        .filter_map(Value::as_array)
        .flatten()
}

/// Every secret the pod names (pull secrets, volumes, environment), as kube's
/// `VisitPodSecretNames`.
fn secret_names<'a>(pod: &'a Value) -> Vec<&'a str> {
    let mut names = Vec::new();
    let mut add = |value: Option<&'a Value>| {
        if let Some(name) = value.and_then(Value::as_str).filter(|n| !n.is_empty()) {
            names.push(name);
        }
    };
    for secret in pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(secret.get("name"));
    }
    for container in containers(pod) {
        for from in container
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(from.pointer("/secretRef/name"));
        }
        for env in container
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(env.pointer("/valueFrom/secretKeyRef/name"));
        }
    }
    for volume in volumes(pod) {
        add(volume.pointer("/secret/secretName"));
        add(volume.pointer("/azureFile/secretName"));
        add(volume.pointer("/csi/nodePublishSecretRef/name"));
        for source in [
            "cephfs",
            "cinder",
            "flexVolume",
            "iscsi",
            "rbd",
            "scaleIO",
            "storageos",
        ] {
            add(volume.pointer(&format!("/{source}/secretRef/name")));
        }
        for projection in volume
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(projection.pointer("/secret/name"));
        }
    }
    names
}

/// The service account `name` of the request's namespace, or why it cannot be had (kube's
/// `error looking up service account` text).
async fn lookup(attributes: &Attributes<'_>, name: &str) -> Result<Value, String> {
    let server = attributes.server;
    let namespace = attributes.namespace.unwrap_or("");
    let failed = |why: &str| format!("error looking up service account {namespace}/{name}: {why}");
    let Some(accounts) = server.kinds.find("", "v1", "serviceaccounts") else {
        return Err(failed("service accounts are not served"));
    };
    let attempts = if name == DEFAULT_NAME {
        DEFAULT_ATTEMPTS
    } else {
        1
    };
    let pause = Duration::from_millis(rand::rng().random_range(100..200));
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(pause).await;
        }
        match rest::get_object(server, accounts, Some(namespace), name).await {
            Ok((account, _)) => return Ok(account),
            Err(e) if e.reason == "NotFound" => continue,
            Err(e) => return Err(failed(&e.message)),
        }
    }
    Err(failed(&format!("serviceaccount \"{name}\" not found")))
}

/// The pod's choice wins, then the account's, then yes.
fn automount(account: &Value, spec: &Map<String, Value>) -> bool {
    spec.get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            account
                .get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true)
}

/// The projected volume kube-apiserver adds: a token for the API server's audience, the CA
/// bundle the root-CA publisher puts in `kube-root-ca.crt`, and the namespace.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"items": [{"key": "ca.crt", "path": "ca.crt"}], "name": "kube-root-ca.crt"}},
                {"downwardAPI": {"items": [{"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}, "path": "namespace"}]}},
            ],
        },
    })
}

/// Mounts the token volume in every container that has nothing at the mount path, adding the
/// volume when one needs it and the pod has none yet.
fn mount_token(spec: &mut Map<String, Value>) {
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|n| n.starts_with(VOLUME_PREFIX))
        .map(str::to_string);
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", crate::strategy::random_suffix()));
    let mount = json!({"mountPath": TOKEN_MOUNT_PATH, "name": volume_name, "readOnly": true});
    let mut mounted = false;
    for list in CONTAINER_LISTS {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let mounts = container
                .entry("volumeMounts")
                .or_insert_with(|| Value::Array(Vec::new()));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            let taken = mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH));
            if !taken {
                mounts.push(mount.clone());
                mounted = true;
            }
        }
    }
    if mounted && existing.is_none() {
        let volumes = spec
            .entry("volumes")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(token_volume(&volume_name));
        }
    }
}

/// With `kubernetes.io/enforce-mountable-secrets`, the first secret the pod references that
/// the account does not list, in kube's words.
fn unmountable_secret(account: &Value, pod: &Value) -> Option<String> {
    let listed = |field: &str| -> Vec<&str> {
        account
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("name").and_then(Value::as_str))
            .collect()
    };
    let mountable = listed("secrets");
    let account_name = account
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    for volume in volumes(pod) {
        if let Some(secret) = volume.pointer("/secret/secretName").and_then(Value::as_str) {
            if !mountable.contains(&secret) {
                return Some(format!(
                    "volume with secret.secretName=\"{secret}\" is not allowed because service account {account_name} does not reference that secret"
                ));
            }
        }
    }
    for (list, what) in [
        ("initContainers", "init container"),
        ("containers", "container"),
    ] {
        for container in pod
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let container_name = container.get("name").and_then(Value::as_str).unwrap_or("");
            for env in container
                .get("env")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(secret) = env
                    .pointer("/valueFrom/secretKeyRef/name")
                    .and_then(Value::as_str)
                else {
                    continue;
                };
                if !mountable.contains(&secret) {
                    let env_name = env.get("name").and_then(Value::as_str).unwrap_or("");
                    return Some(format!(
                        "{what} {container_name} with envVar {env_name} referencing secret.secretName=\"{secret}\" is not allowed because service account {account_name} does not reference that secret"
                    ));
                }
            }
        }
    }
    let pull = listed("imagePullSecrets");
    for (i, secret) in pod
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = secret.get("name").and_then(Value::as_str).unwrap_or("");
        if !pull.contains(&name) {
            return Some(format!(
                "imagePullSecrets[{i}].name=\"{name}\" is not allowed because service account {account_name} does not reference that imagePullSecret"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_once_in_every_container_and_reuses_a_volume() {
        let mut spec = json!({
            "initContainers": [{"name": "i"}],
            "containers": [
                {"name": "a"},
                {"name": "b", "volumeMounts": [{"name": "mine", "mountPath": TOKEN_MOUNT_PATH}]},
            ],
        });
        let Some(map) = spec.as_object_mut() else {
            panic!("not a map");
        };
        mount_token(map);
        let volume = spec["volumes"][0]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(volume.starts_with(VOLUME_PREFIX) && volume.len() == VOLUME_PREFIX.len() + 5);
        assert_eq!(spec["initContainers"][0]["volumeMounts"][0]["name"], volume);
        assert_eq!(spec["containers"][0]["volumeMounts"][0]["readOnly"], true);
        assert_eq!(
            spec["containers"][1]["volumeMounts"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        let Some(map) = spec.as_object_mut() else {
            panic!("not a map");
        };
        mount_token(map);
        assert_eq!(spec["volumes"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn secrets_are_found_where_kube_looks() {
        let pod = json!({"spec": {
            "containers": [{"name": "c", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}}]}],
            "volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "s2"}}]}}],
        }});
        assert_eq!(secret_names(&pod), vec!["s1", "s2"]);
    }
}

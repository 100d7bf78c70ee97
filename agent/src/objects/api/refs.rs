//! Which ConfigMaps and Secrets a pod refers to, as the kubelet's managers count them
//! (VisitPodConfigmapNames, VisitPodSecretNames): volumes (projected sources included), env
//! and envFrom of every container kind, and image pull secrets.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{EnvFromSource, EnvVar, Pod};

/// The two kinds of object pods refer to by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A ConfigMap.
    ConfigMap,
    /// A Secret.
    Secret,
}

/// One referenced object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// What it is.
    pub kind: Kind,
    /// Its namespace: always the pod's.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// Every ConfigMap and Secret `pod` refers to.
pub fn references(pod: &Pod) -> BTreeSet<Key> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut names: Vec<(Kind, &str)> = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return BTreeSet::new();
    };
    for volume in spec.volumes.iter().flatten() {
        if let Some(cm) = &volume.config_map {
            names.push((Kind::ConfigMap, &cm.name));
        }
        if let Some(s) = &volume.secret {
            names.push((Kind::Secret, s.secret_name.as_deref().unwrap_or("")));
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(cm) = &source.config_map {
                names.push((Kind::ConfigMap, &cm.name));
            }
            if let Some(s) = &source.secret {
                names.push((Kind::Secret, &s.name));
            }
        }
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let env = |env: &'_ Option<Vec<EnvVar>>, from: &'_ Option<Vec<EnvFromSource>>| {
        let mut found: Vec<(Kind, String)> = Vec::new();
        for source in from.iter().flatten() {
            if let Some(r) = &source.config_map_ref {
                found.push((Kind::ConfigMap, r.name.clone()));
            }
            if let Some(r) = &source.secret_ref {
                found.push((Kind::Secret, r.name.clone()));
            }
        }
        for var in env.iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            if let Some(r) = &from.config_map_key_ref {
                found.push((Kind::ConfigMap, r.name.clone()));
            }
            if let Some(r) = &from.secret_key_ref {
                found.push((Kind::Secret, r.name.clone()));
            }
        }
        found
    };
    let mut owned: Vec<(Kind, String)> = Vec::new();
    for c in containers {
        owned.extend(env(&c.env, &c.env_from));
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        owned.extend(env(&c.env, &c.env_from));
    }
    for secret in spec.image_pull_secrets.iter().flatten() {
        names.push((Kind::Secret, &secret.name));
    }
    names
        .into_iter()
        .map(|(kind, name)| (kind, name.to_string()))
        .chain(owned)
        .filter(|(_, name)| !name.is_empty())
        .map(|(kind, name)| Key {
            kind,
            namespace: namespace.to_string(),
            name,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_reference_counts_once() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "imagePullSecrets": [{"name": "pull"}],
                "volumes": [
                    {"name": "a", "configMap": {"name": "cm"}},
                    {"name": "b", "secret": {"secretName": "s"}},
                    {"name": "c", "projected": {"sources": [
                        {"configMap": {"name": "root-ca"}},
                        {"secret": {"name": "s"}},
                        {"serviceAccountToken": {"path": "token"}}
                    ]}},
                    {"name": "d", "emptyDir": {}}
                ],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-env"}}]}],
                "containers": [{"name": "c", "env": [
                    {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                    {"name": "Y", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                ]}]
            }
        }))
        .unwrap();
        let got: Vec<(Kind, String)> = references(&pod)
            .into_iter()
            .inspect(|k| assert_eq!(k.namespace, "ns"))
            .map(|k| (k.kind, k.name))
            .collect();
        let want = [
            (Kind::ConfigMap, "cm"),
            (Kind::ConfigMap, "env-cm"),
            (Kind::ConfigMap, "root-ca"),
            (Kind::Secret, "init-env"),
            (Kind::Secret, "pull"),
            (Kind::Secret, "s"),
        ]
        .map(|(k, n)| (k, n.to_string()));
        assert_eq!(got, want);
    }
}

//! The Secrets a pod refers to (`podutil.VisitPodSecretNames`): pull secrets, env and envFrom
//! of every container, and the volumes that name a Secret.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod, Volume};

/// Every Secret name the pod uses.
pub fn secret_names(pod: &Pod) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Some(spec) = pod.spec.as_ref() else {
        return names;
    };
    for pull in spec.image_pull_secrets.iter().flatten() {
        names.insert(pull.name.clone());
    }
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| Container {
            env: c.env.clone(),
            env_from: c.env_from.clone(),
            ..Container::default()
        });
    let containers: Vec<Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .cloned()
        .chain(ephemeral)
        .collect();
    for container in &containers {
        for from in container.env_from.iter().flatten() {
            if let Some(secret) = &from.secret_ref {
                names.insert(secret.name.clone());
            }
        }
        for env in container.env.iter().flatten() {
            if let Some(key) = env
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                names.insert(key.name.clone());
            }
        }
    }
    for volume in spec.volumes.iter().flatten() {
        volume_secrets(volume, &mut names);
    }
    names.remove("");
    names
}

fn volume_secrets(volume: &Volume, names: &mut BTreeSet<String>) {
    if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
        names.insert(name);
    }
    for source in volume
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
    {
        if let Some(secret) = &source.secret {
            names.insert(secret.name.clone());
        }
    }
    let referenced = [
        volume
            .csi
            .as_ref()
            .and_then(|c| c.node_publish_secret_ref.as_ref().map(|r| r.name.clone())),
        volume.azure_file.as_ref().map(|a| a.secret_name.clone()),
        volume
            .cephfs
            .as_ref()
            .and_then(|c| c.secret_ref.as_ref().map(|r| r.name.clone())),
        volume
            .cinder
            .as_ref()
            .and_then(|c| c.secret_ref.as_ref().map(|r| r.name.clone())),
        volume
            .flex_volume
            .as_ref()
            .and_then(|f| f.secret_ref.as_ref().map(|r| r.name.clone())),
        volume
            .rbd
            .as_ref()
            .and_then(|r| r.secret_ref.as_ref().map(|r| r.name.clone())),
        volume
            .iscsi
            .as_ref()
            .and_then(|i| i.secret_ref.as_ref().map(|r| r.name.clone())),
        volume.scale_io.as_ref().map(|s| s.secret_ref.name.clone()),
        volume
            .storageos
            .as_ref()
            .and_then(|s| s.secret_ref.as_ref().map(|r| r.name.clone())),
    ];
    names.extend(referenced.into_iter().flatten());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_env_and_volume_secrets_are_found() {
        let pod: Pod = match serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "imagePullSecrets": [{"name": "pull"}],
                "containers": [{"name": "c", "image": "i",
                    "envFrom": [{"secretRef": {"name": "from"}}],
                    "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "key", "key": "k"}}}]}],
                "volumes": [
                    {"name": "a", "secret": {"secretName": "vol"}},
                    {"name": "b", "projected": {"sources": [{"secret": {"name": "proj"}}]}},
                    {"name": "c", "emptyDir": {}}
                ]
            }
        })) {
            Ok(pod) => pod,
            Err(error) => panic!("{error}"),
        };
        let names: Vec<String> = secret_names(&pod).into_iter().collect();
        assert_eq!(names, ["from", "key", "proj", "pull", "vol"]);
    }
}

//! Registration: the Node object the agent creates for itself (its well-known labels, the
//! labels and taints it was told to register with), and the flags' syntax for those.

use std::collections::BTreeMap;

pub use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

/// What the Node is registered with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registration {
    /// The Node's name.
    pub node_name: String,
    /// Labels besides the well-known ones (`--node-labels`).
    pub labels: BTreeMap<String, String>,
    /// Taints (`--register-with-taints`), set only when the Node is created.
    pub taints: Vec<Taint>,
}

/// Why a flag value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// The Go architecture name of this machine (`amd64`, `arm64`), as Kubernetes labels use.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Parses `--node-labels`: `key=value` pairs separated by commas.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, ParseError> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(ParseError(format!(
                "invalid label {pair:?}: expected key=value"
            )));
        };
        if key.is_empty() {
            return Err(ParseError(format!("invalid label {pair:?}: empty key")));
        }
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}

/// Parses `--register-with-taints`: `key=value:Effect` or `key:Effect`, separated by commas.
pub fn parse_taints(text: &str) -> Result<Vec<Taint>, ParseError> {
    let mut taints = Vec::new();
    for spec in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key_value, effect)) = spec.rsplit_once(':') else {
            return Err(ParseError(format!(
                "invalid taint spec: {spec:?}: expected key[=value]:Effect"
            )));
        };
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(ParseError(format!(
                "invalid taint effect: {effect:?}, unsupported taint effect (NoSchedule, PreferNoSchedule, NoExecute)"
            )));
        }
        let (key, value) = match key_value.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (key_value, None),
        };
        if key.is_empty() {
            return Err(ParseError(format!(
                "invalid taint spec: {spec:?}: empty key"
            )));
        }
        taints.push(Taint {
            key: key.to_string(),
            value,
            effect: effect.to_string(),
            time_added: None,
        });
    }
    Ok(taints)
}

/// The labels the kubelet always sets on its Node.
pub fn well_known_labels(node_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), node_name.to_string()),
        (
            "kubernetes.io/os".to_string(),
            std::env::consts::OS.to_string(),
        ),
        ("kubernetes.io/arch".to_string(), go_arch().to_string()),
        (
            "beta.kubernetes.io/os".to_string(),
            std::env::consts::OS.to_string(),
        ),
        ("beta.kubernetes.io/arch".to_string(), go_arch().to_string()),
    ])
}

/// The Node object to create.
pub fn node_object(registration: &Registration) -> Node {
    let mut labels = well_known_labels(&registration.node_name);
    labels.extend(registration.labels.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(registration.node_name.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: (!registration.taints.is_empty()).then(|| registration.taints.clone()),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

/// Creates the Node; when it exists already (a restart, or a re-registration), brings its
/// labels up to date instead, as the kubelet reconciles an existing Node. Returns the Node.
pub async fn register(
    client: &kube::Client,
    registration: &Registration,
) -> Result<Node, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = node_object(registration);
    match nodes.create(&PostParams::default(), &node).await {
        Ok(created) => {
            tracing::info!(node = %registration.node_name, "node registered");
            Ok(created)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let patch = serde_json::json!({"metadata": {"labels": node.metadata.labels}});
            let existing = nodes
                .patch(
                    &registration.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            tracing::info!(node = %registration.node_name, "node already registered; labels reconciled");
            Ok(existing)
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_and_labels_parse_as_the_kubelets_flags() {
        let taints = parse_taints("dedicated=gpu:NoSchedule,spot:PreferNoSchedule").expect("ok");
        assert_eq!(taints[0].key, "dedicated");
        assert_eq!(taints[0].value.as_deref(), Some("gpu"));
        assert_eq!(taints[0].effect, "NoSchedule");
        assert_eq!(taints[1].key, "spot");
        assert_eq!(taints[1].value, None);
        assert!(parse_taints("a=b:Never").is_err());
        assert!(parse_taints("a=b").is_err());
        let labels = parse_labels("zone=a, role=edge").expect("ok");
        assert_eq!(labels["zone"], "a");
        assert_eq!(labels["role"], "edge");
        assert!(parse_labels("novalue").is_err());
    }

    #[test]
    fn the_node_carries_well_known_labels_and_taints() {
        let node = node_object(&Registration {
            node_name: "n1".into(),
            labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            taints: parse_taints("k:NoExecute").expect("ok"),
        });
        let labels = node.metadata.labels.expect("labels");
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["zone"], "a");
        assert_eq!(node.spec.and_then(|s| s.taints).map(|t| t.len()), Some(1));
    }
}

//! The `x-kubernetes-*` extensions k8s-openapi's schemas leave out: patch merge keys and
//! strategies (what a client building a strategic merge patch from a schema reads; kubectl
//! does so only for operations that advertise that patch type, which these documents' don't,
//! so for built-in kinds it keeps its compiled-in types) and list types and map keys. They come from the `+patchMergeKey`, `+patchStrategy`, `+listType`
//! and `+listMapKey` markers of the Go types, for the fields of the kinds Capstan serves; a field
//! not named here keeps k8s-openapi's plain schema (a list is then replaced as a whole, which is
//! kube's default for unannotated lists too).

use serde_json::{Map, Value, json};

/// One annotated field: `(definition, property, patch merge key, patch strategy, list type,
/// list map keys)`, empty strings and slices meaning "not set".
type Rule = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
);

const CORE: &str = "io.k8s.api.core.v1.";
const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";

const NAME: &[&str] = &["name"];
const TYPE: &[&str] = &["type"];
const IP: &[&str] = &["ip"];
const M: &str = "merge";

#[rustfmt::skip]
const RULES: &[Rule] = &[
    ("ObjectMeta", "finalizers", "", M, "set", &[]),
    ("ObjectMeta", "ownerReferences", "uid", M, "map", &["uid"]),
    ("ObjectMeta", "managedFields", "", "", "atomic", &[]),
    ("PodSpec", "containers", "name", M, "map", NAME),
    ("PodSpec", "initContainers", "name", M, "map", NAME),
    ("PodSpec", "ephemeralContainers", "name", M, "map", NAME),
    ("PodSpec", "volumes", "name", "merge,retainKeys", "map", NAME),
    ("PodSpec", "imagePullSecrets", "name", M, "map", NAME),
    ("PodSpec", "hostAliases", "ip", M, "map", IP),
    ("PodSpec", "topologySpreadConstraints", "topologyKey", M, "map", &["topologyKey", "whenUnsatisfiable"]),
    ("PodSpec", "schedulingGates", "name", M, "map", NAME),
    ("PodSpec", "resourceClaims", "name", "merge,retainKeys", "map", NAME),
    ("PodSpec", "tolerations", "", "", "atomic", &[]),
    ("PodSpec", "readinessGates", "", "", "atomic", &[]),
    ("Container", "env", "name", M, "map", NAME),
    ("Container", "ports", "containerPort", M, "map", &["containerPort", "protocol"]),
    ("Container", "volumeMounts", "mountPath", M, "map", &["mountPath"]),
    ("Container", "volumeDevices", "devicePath", M, "map", &["devicePath"]),
    ("Container", "envFrom", "", "", "atomic", &[]),
    ("Container", "command", "", "", "atomic", &[]),
    ("Container", "args", "", "", "atomic", &[]),
    ("EphemeralContainer", "env", "name", M, "map", NAME),
    ("EphemeralContainer", "ports", "containerPort", M, "map", &["containerPort", "protocol"]),
    ("EphemeralContainer", "volumeMounts", "mountPath", M, "map", &["mountPath"]),
    ("EphemeralContainer", "volumeDevices", "devicePath", M, "map", &["devicePath"]),
    ("PodStatus", "conditions", "type", M, "map", TYPE),
    ("PodStatus", "podIPs", "ip", M, "map", IP),
    ("ServiceSpec", "ports", "port", M, "map", &["port", "protocol"]),
    ("ServiceSpec", "clusterIPs", "", "", "atomic", &[]),
    ("ServiceSpec", "ipFamilies", "", "", "atomic", &[]),
    ("ServiceSpec", "externalIPs", "", "", "atomic", &[]),
    ("ServiceStatus", "conditions", "type", M, "map", TYPE),
    ("ServiceAccount", "secrets", "name", M, "map", NAME),
    ("ServiceAccount", "imagePullSecrets", "", "", "atomic", &[]),
    ("NodeSpec", "podCIDRs", "", M, "set", &[]),
    ("NodeSpec", "taints", "", "", "atomic", &[]),
    ("NodeStatus", "conditions", "type", M, "map", TYPE),
    ("NodeStatus", "addresses", "type", M, "map", TYPE),
    ("NamespaceStatus", "conditions", "type", M, "map", TYPE),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "type", M, "map", TYPE),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "", "retainKeys", "", &[]),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "type", M, "map", TYPE),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "type", M, "map", TYPE),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "type", M, "map", TYPE),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", "type", M, "atomic", &[]),
];

fn definition_name(short: &str) -> String {
    if short.starts_with("io.") {
        short.to_string()
    } else if matches!(short, "ObjectMeta") {
        format!("{META}{short}")
    } else {
        format!("{CORE}{short}")
    }
}

/// Adds the extensions of [`RULES`] to the definitions present in `definitions` (v2 form).
pub fn apply(definitions: &mut Map<String, Value>) {
    for (definition, property, key, strategy, list_type, map_keys) in RULES {
        let field = definitions
            .get_mut(&definition_name(definition))
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(*property))
            .and_then(Value::as_object_mut);
        let Some(field) = field else { continue };
        if !key.is_empty() {
            field.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
        if !strategy.is_empty() {
            field.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        }
        if !list_type.is_empty() {
            field.insert("x-kubernetes-list-type".into(), json!(list_type));
        }
        if !map_keys.is_empty() {
            field.insert("x-kubernetes-list-map-keys".into(), json!(map_keys));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_get_their_merge_key() {
        let mut definitions = Map::new();
        definitions.insert(
            "io.k8s.api.core.v1.PodSpec".into(),
            json!({"properties": {"containers": {"type": "array"}}}),
        );
        apply(&mut definitions);
        let containers = &definitions["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
    }
}

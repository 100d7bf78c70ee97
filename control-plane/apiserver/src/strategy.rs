//! What each write does to an object before it is stored, as kube's per-kind strategies: the
//! system fields set on create and kept on update, the spec/status split of kinds with a status
//! subresource, generation, the defaults the node agent relies on, and validation.

use rand::Rng;
use serde_json::{Map, Value, json};

use crate::kinds::Kind;
use crate::status::{ApiError, ApiResult};
use crate::validation;

/// The characters of generated name suffixes: kube's, without vowels and look-alikes.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Now, as kube's RFC 3339 timestamps with second precision.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A timestamp `seconds` from now.
pub fn now_plus(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A random RFC 4122 version 4 UUID, as object uids are.
pub fn new_uid() -> String {
    let mut bytes: [u8; 16] = rand::rng().random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Five random characters of kube's name generator, as `generateName` appends.
pub fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..5)
        .map(|_| SUFFIX_ALPHABET[rng.random_range(0..SUFFIX_ALPHABET.len())] as char)
        .collect()
}

/// The object's metadata map, made if missing. Callers pass maps only (bodies are checked to be
/// objects when decoded).
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let slot = &mut object["metadata"];
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(map) => map,
        _ => unreachable!("metadata was made a map just above"),
    }
}

/// A string field of the metadata.
pub fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// Checks the body names this kind, and fills in apiVersion and kind when it leaves them out.
pub fn check_type(kind: &Kind, object: &mut Value) -> ApiResult<()> {
    let expected_version = kind.api_version();
    match object.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != expected_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({expected_version})"
            )));
        }
        _ => object["apiVersion"] = json!(expected_version),
    }
    match object.get("kind").and_then(Value::as_str) {
        Some(k) if k != kind.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.kind
            )));
        }
        _ => object["kind"] = json!(kind.kind),
    }
    if object
        .get("metadata")
        .is_some_and(|m| !m.is_object() && !m.is_null())
    {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    Ok(())
}

/// Sets what a create sets: name from generateName, namespace, uid, creationTimestamp,
/// generation, initial status and defaults. The caller checked the namespace.
pub fn prepare_create(kind: &Kind, object: &mut Value, namespace: Option<&str>) {
    let meta = metadata_mut(object);
    let has_name = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !has_name {
        if let Some(base) = meta.get("generateName").and_then(Value::as_str) {
            if !base.is_empty() {
                let name = format!("{base}{}", random_suffix());
                meta.insert("name".into(), json!(name));
            }
        }
    }
    match namespace.filter(|_| kind.namespaced) {
        Some(ns) => meta.insert("namespace".into(), json!(ns)),
        None => meta.remove("namespace"),
    };
    meta.insert("uid".into(), json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now()));
    for system in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(system);
    }
    if kind.generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    match (kind.group, kind.kind) {
        ("", "Namespace") => {
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
        }
        ("", "Pod") => {
            default_pod(object);
            let qos = crate::qos::class(object);
            object["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        // Nodes register with their status; the other kinds' status belongs to controllers.
        ("", "Node") => {}
        _ if kind.status_subresource => {
            object["status"] = json!({});
        }
        _ => {}
    }
}

fn set_default(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.into(), value);
    }
}

/// The pod defaults the kubelet and the node agent read (a subset of kube's SetDefaults_Pod):
/// the pod spec's own, plus the two only a Pod (not a template) gets.
pub fn default_pod(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    default_pod_spec(spec);
    set_default(spec, "enableServiceLinks", json!(true));
    // Upstream's Priority admission sets it on Pods only; templates show none.
    set_default(spec, "priority", json!(0));
}

/// Upstream's SetDefaults_PodSpec and SetDefaults_Container/ContainerPort: what a Pod and
/// every pod template (in Deployments, Jobs, ...) get alike.
pub fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    default_volumes(spec);
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let image = container.get("image").and_then(Value::as_str).unwrap_or("");
            let last = image.rsplit('/').next().unwrap_or("");
            let policy = if !last.contains(':') || last.ends_with(":latest") {
                "Always"
            } else {
                "IfNotPresent"
            };
            let policy = if image.contains('@') {
                "IfNotPresent"
            } else {
                policy
            };
            set_default(container, "imagePullPolicy", json!(policy));
            set_default(
                container,
                "terminationMessagePath",
                json!("/dev/termination-log"),
            );
            set_default(container, "terminationMessagePolicy", json!("File"));
            set_default(container, "resources", json!({}));
            if let Some(ports) = container.get_mut("ports").and_then(Value::as_array_mut) {
                for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(port, "protocol", json!("TCP"));
                }
            }
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if let Some(probe) = container.get_mut(probe).and_then(Value::as_object_mut) {
                    default_probe(probe);
                }
            }
        }
    }
}

/// Upstream's SetDefaults_Probe and SetDefaults_HTTPGetAction.
fn default_probe(probe: &mut Map<String, Value>) {
    set_default(probe, "timeoutSeconds", json!(1));
    set_default(probe, "periodSeconds", json!(10));
    set_default(probe, "successThreshold", json!(1));
    set_default(probe, "failureThreshold", json!(3));
    if let Some(get) = probe.get_mut("httpGet").and_then(Value::as_object_mut) {
        set_default(get, "path", json!("/"));
        set_default(get, "scheme", json!("HTTP"));
    }
}

/// Upstream's volume-source defaults: 0644 file modes for projected-like sources.
fn default_volumes(spec: &mut Map<String, Value>) {
    let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) else {
        return;
    };
    for volume in volumes.iter_mut().filter_map(Value::as_object_mut) {
        for source in ["secret", "configMap", "downwardAPI", "projected"] {
            if let Some(source) = volume.get_mut(source).and_then(Value::as_object_mut) {
                set_default(source, "defaultMode", json!(420));
            }
        }
    }
}

/// Carries over from `old` what an update of the main resource may not change, and bumps the
/// generation when the spec changed.
pub fn prepare_update(kind: &Kind, new: &mut Value, old: &Value) {
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let meta = metadata_mut(new);
    for kept in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
    ] {
        match old_meta.get(kept) {
            Some(value) => meta.insert(kept.into(), value.clone()),
            None => meta.remove(kept),
        };
    }
    meta.remove("resourceVersion");
    if kind.status_subresource {
        match old.get("status") {
            Some(status) => new["status"] = status.clone(),
            None => {
                if let Some(map) = new.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    if kind.generation && spec_of(new) != spec_of(old) {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        metadata_mut(new).insert("generation".into(), json!(generation + 1));
    }
}

/// What an update through the `status` subresource stores: the old object with the new status
/// (and, for the kinds whose upstream status strategy lets them through, the new annotations).
pub fn prepare_status_update(kind: &Kind, new: &Value, old: &Value) -> Value {
    let mut merged = old.clone();
    merged["status"] = new.get("status").cloned().unwrap_or_else(|| json!({}));
    let annotations = status_sets_annotations(kind)
        .then(|| new.pointer("/metadata/annotations").cloned())
        .flatten();
    if let Some(meta) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        if let Some(annotations) = annotations {
            meta.insert("annotations".into(), annotations);
        }
    }
    merged
}

/// Whether a status write may change the object's annotations: kube-apiserver's Deployment
/// status strategy resets only spec and labels, and the deployment controller relies on it to
/// write `deployment.kubernetes.io/revision` together with the status.
fn status_sets_annotations(kind: &Kind) -> bool {
    kind.group == "apps" && kind.plural == "deployments"
}

/// Everything but metadata and status: what counts as the spec for generation.
fn spec_of(object: &Value) -> Value {
    let mut spec = object.clone();
    if let Some(map) = spec.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    spec
}

/// Validates an object about to be stored; `Invalid` with every cause.
pub fn validate(kind: &Kind, object: &Value) -> ApiResult<()> {
    let mut causes = validation::check_metadata(kind, object);
    causes.extend(validation::check_kind(kind, object));
    if causes.is_empty() {
        return Ok(());
    }
    let name = meta_str(object, "name").unwrap_or("");
    Err(ApiError::invalid(kind.group, kind.kind, name, causes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::KindTable;

    #[test]
    fn generation_counts_spec_changes_only() {
        let table = KindTable::default();
        let Some(deploy) = table.find("apps", "v1", "deployments") else {
            panic!("no deployments");
        };
        let mut object = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}});
        prepare_create(deploy, &mut object, Some("default"));
        assert_eq!(object["metadata"]["generation"], 1);
        let mut relabelled = object.clone();
        relabelled["metadata"]["labels"] = json!({"a": "b"});
        relabelled["status"] = json!({"replicas": 5});
        prepare_update(deploy, &mut relabelled, &object);
        assert_eq!(relabelled["metadata"]["generation"], 1);
        assert_eq!(relabelled["status"], json!({}), "main PUT ignores status");
        let mut scaled = object.clone();
        scaled["spec"]["replicas"] = json!(3);
        prepare_update(deploy, &mut scaled, &object);
        assert_eq!(scaled["metadata"]["generation"], 2);
    }

    #[test]
    fn a_deployment_status_write_keeps_its_annotations_but_not_its_labels_or_spec() {
        let table = KindTable::default();
        let (Some(deploy), Some(rs)) = (
            table.find("apps", "v1", "deployments"),
            table.find("apps", "v1", "replicasets"),
        ) else {
            panic!("no deployments or replicasets");
        };
        let old = json!({"metadata": {"name": "d", "labels": {"a": "1"}}, "spec": {"replicas": 1}});
        let mut new = old.clone();
        new["metadata"]["annotations"] = json!({"deployment.kubernetes.io/revision": "2"});
        new["metadata"]["labels"] = json!({"a": "2"});
        new["spec"]["replicas"] = json!(9);
        new["status"] = json!({"replicas": 1});
        let stored = prepare_status_update(deploy, &new, &old);
        assert_eq!(
            stored["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
            "2"
        );
        assert_eq!(stored["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(stored["spec"]["replicas"], 1);
        assert_eq!(stored["status"]["replicas"], 1);
        let stored = prepare_status_update(rs, &new, &old);
        assert!(stored["metadata"].get("annotations").is_none());
    }

    #[test]
    fn generate_name_gets_a_five_character_suffix() {
        let table = KindTable::default();
        let Some(cm) = table.find("", "v1", "configmaps") else {
            panic!("no configmaps");
        };
        let mut object = json!({"metadata": {"generateName": "web-"}});
        prepare_create(cm, &mut object, Some("default"));
        let name = meta_str(&object, "name").unwrap_or("");
        assert_eq!(name.len(), 9, "{name}");
        assert!(name.starts_with("web-"));
        assert_eq!(new_uid().len(), 36);
    }
}

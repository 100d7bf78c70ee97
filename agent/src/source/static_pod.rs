//! A static pod manifest turned into the pod the agent runs, as the kubelet does it (upstream
//! pkg/kubelet/config/common.go): parse, default as the API server would, validate, then give
//! it an identity: the UID is a hash of the defaulted content, the node name and the file, so the
//! same file yields the same UID across restarts and any change yields a new one; the name gets
//! `-<node name>`; the namespace defaults to "default"; spec.nodeName is this node.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Pod, PodStatus, Toleration};
use sha2::{Digest, Sha256};

use super::{
    CONFIG_HASH_ANNOTATION, CONFIG_SOURCE_ANNOTATION, ManifestError, SourceName, apply_defaults,
    validate_pod,
};

/// A decoded manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticPod {
    /// The pod to run.
    pub pod: Pod,
    /// Fields of the file that no Pod field has (typos, or fields of a newer Kubernetes): the
    /// API server drops them silently, which hides mistakes such as `imagePulPolicy`.
    pub unknown_fields: Vec<String>,
}

/// The pod in a manifest file's contents, or every reason it is not one.
pub fn decode_manifest(
    text: &str,
    file: &Path,
    node_name: &str,
) -> Result<StaticPod, Vec<ManifestError>> {
    let error = |field: &str, reason: String| {
        vec![ManifestError {
            file: file.to_path_buf(),
            field: field.to_string(),
            reason,
        }]
    };
    // JSON is YAML, so one parser reads both. A second document is an error: one pod per file.
    let mut document: serde_json::Value = serde_yaml_ng::from_str(text)
        .map_err(|e| error("", format!("not valid YAML or JSON: {e}")))?;
    if let Some(volumes) = document.pointer_mut("/spec/volumes") {
        yaml11_octal_modes(volumes);
    }
    if !document.is_object() {
        return Err(error("", "expected a Pod object".into()));
    }
    for (field, want) in [("apiVersion", "v1"), ("kind", "Pod")] {
        match document.get(field).and_then(|v| v.as_str()) {
            Some(got) if got == want => {}
            Some(got) => {
                return Err(error(
                    field,
                    format!("Unsupported value: {got:?}: supported values: {want:?}"),
                ));
            }
            None => return Err(error(field, format!("Required value: must be {want:?}"))),
        }
    }
    let mut pod: Pod = serde_path_to_error::deserialize(&document).map_err(|e| {
        let field = e.path().to_string();
        error(&field, e.into_inner().to_string())
    })?;
    let mut unknown_fields = Vec::new();
    if let Ok(known) = serde_json::to_value(&pod) {
        dropped_fields(&document, &known, &mut String::new(), &mut unknown_fields);
    }
    apply_defaults(&mut pod);
    let problems = validate_pod(&pod);
    if !problems.is_empty() {
        return Err(problems
            .into_iter()
            .map(|p| ManifestError {
                file: file.to_path_buf(),
                field: p.field,
                reason: p.reason,
            })
            .collect());
    }
    let full_name = static_pod_name(pod.metadata.name.as_deref().unwrap_or_default(), node_name);
    if let Some(why) = crate::names::dns1123_subdomain_error(&full_name) {
        return Err(error(
            "metadata.name",
            format!("Invalid value: {full_name:?}: {why} (with the node name appended)"),
        ));
    }
    let uid = content_uid(&pod, node_name, file);
    let meta = &mut pod.metadata;
    meta.uid = Some(uid.clone());
    meta.name = Some(full_name);
    if meta.namespace.as_deref().unwrap_or_default().is_empty() {
        meta.namespace = Some("default".into());
    }
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_HASH_ANNOTATION.into(), uid);
    annotations.insert(
        CONFIG_SOURCE_ANNOTATION.into(),
        SourceName::File.as_str().into(),
    );
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node_name.to_string());
        // As upstream: static pods tolerate NoExecute taints, so node problems do not evict them.
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        let tolerate_all = Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        };
        if !tolerations.contains(&tolerate_all) {
            tolerations.push(tolerate_all);
        }
    }
    pod.status = Some(PodStatus {
        phase: Some("Pending".into()),
        ..Default::default()
    });
    Ok(StaticPod {
        pod,
        unknown_fields,
    })
}

/// The paths of what `given` has and `kept` (the same document after a typed round trip)
/// lost: fields no type declares.
fn dropped_fields(
    given: &serde_json::Value,
    kept: &serde_json::Value,
    path: &mut String,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (given, kept) {
        (Value::Object(given), Value::Object(kept)) => {
            for (key, value) in given {
                if value.is_null() {
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                match kept.get(key) {
                    Some(kept) => dropped_fields(value, kept, path, out),
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (Value::Array(given), Value::Array(kept)) => {
            for (i, (g, k)) in given.iter().zip(kept).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                dropped_fields(g, k, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Kubernetes reads YAML 1.1, where `defaultMode: 0400` is octal; YAML 1.2 (our parser) reads
/// it as the string "0400". Manifests are full of such modes, so in the volumes (where every
/// `mode` and `defaultMode` is a file mode; labels elsewhere may well be called "mode"), a
/// 0-prefixed octal string there becomes the number meant.
fn yaml11_octal_modes(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, v) in fields.iter_mut() {
                if key == "mode" || key == "defaultMode" {
                    if let Some(octal) = v.as_str().and_then(|s| s.strip_prefix('0')) {
                        if let Ok(mode) = i64::from_str_radix(octal, 8) {
                            *v = serde_json::Value::from(mode);
                        }
                    }
                }
                yaml11_octal_modes(v);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(yaml11_octal_modes),
        _ => {}
    }
}

/// `<name>-<node name>`, what the kubelet calls a static pod.
pub fn static_pod_name(name: &str, node_name: &str) -> String {
    format!("{name}-{}", node_name.to_lowercase())
}

/// A hash of the defaulted pod, then the node and the file (upstream hashes the same three
/// things with MD5). The pod serializes deterministically: struct fields in declaration order,
/// maps sorted. 32 hex digits, the length of upstream's.
pub fn content_uid(pod: &Pod, node_name: &str, file: &Path) -> String {
    let mut hasher = Sha256::new();
    // Serializing a Pod cannot fail (no non-string map keys); if it ever did, the Debug form
    // still changes with the content.
    match serde_json::to_vec(pod) {
        Ok(bytes) => hasher.update(&bytes),
        Err(_) => hasher.update(format!("{pod:?}").as_bytes()),
    }
    hasher.update(format!("host:{node_name}").as_bytes());
    hasher.update(format!("file:{}", file.display()).as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: web, image: nginx:1.27}]\n";

    fn decode(text: &str) -> Result<Pod, Vec<String>> {
        decode_manifest(text, Path::new("/m/web.yaml"), "Node-1")
            .map(|decoded| decoded.pod)
            .map_err(|errs| errs.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn identity_and_annotations() {
        let pod = decode(WEB).expect("valid");
        let meta = &pod.metadata;
        assert_eq!(meta.name.as_deref(), Some("web-node-1"));
        assert_eq!(meta.namespace.as_deref(), Some("default"));
        let uid = meta.uid.clone().expect("uid");
        assert_eq!(uid.len(), 32);
        let annotations = meta.annotations.as_ref().expect("annotations");
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], uid);
        assert_eq!(annotations[CONFIG_SOURCE_ANNOTATION], "file");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("Node-1"));
        assert_eq!(
            spec.restart_policy.as_deref(),
            Some("Always"),
            "defaults applied"
        );
        assert_eq!(spec.tolerations.as_ref().unwrap().len(), 1);
        assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
        let ns =
            decode(&WEB.replace("{name: web}", "{name: web, namespace: kube-system}")).unwrap();
        assert_eq!(ns.metadata.namespace.as_deref(), Some("kube-system"));
    }

    #[test]
    fn uid_is_stable_and_follows_the_content() {
        let uid = |text: &str, file: &str, node: &str| {
            decode_manifest(text, Path::new(file), node)
                .expect("valid")
                .pod
                .metadata
                .uid
                .expect("uid")
        };
        let first = uid(WEB, "/m/web.yaml", "n");
        assert_eq!(
            first,
            uid(WEB, "/m/web.yaml", "n"),
            "same content, same UID"
        );
        // Formatting is not content: the same pod as JSON hashes the same.
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[{"name":"web","image":"nginx:1.27"}]}}"#;
        assert_eq!(first, uid(json, "/m/web.yaml", "n"));
        // Spelling out a default is not a change either: the hash is taken after defaulting.
        let explicit = WEB.replace("spec:\n", "spec:\n  restartPolicy: Always\n");
        assert_eq!(first, uid(&explicit, "/m/web.yaml", "n"));
        assert_ne!(
            first,
            uid(&WEB.replace("1.27", "1.28"), "/m/web.yaml", "n"),
            "changed spec"
        );
        assert_ne!(
            first,
            uid(
                &WEB.replace("{name: web}", "{name: web, labels: {a: b}}"),
                "/m/web.yaml",
                "n"
            )
        );
        assert_ne!(first, uid(WEB, "/m/other.yaml", "n"), "another file");
        assert_ne!(first, uid(WEB, "/m/web.yaml", "m"), "another node");
    }

    #[test]
    fn unknown_fields_are_named() {
        let text = WEB.replace(
            "image: nginx:1.27",
            "image: nginx:1.27, imagePulPolicy: Never, resources: {limits: {cpu: 1}, limts: {}}",
        ) + "extra: {a: 1}\nstatus: null\n";
        let decoded = decode_manifest(&text, Path::new("/m/web.yaml"), "n").expect("valid");
        assert_eq!(
            decoded.unknown_fields,
            [
                "extra",
                "spec.containers[0].imagePulPolicy",
                "spec.containers[0].resources.limts"
            ]
        );
        assert!(
            decode_manifest(WEB, Path::new("/m/web.yaml"), "n")
                .unwrap()
                .unknown_fields
                .is_empty()
        );
    }

    #[test]
    fn octal_modes_read_as_kubernetes_reads_them() {
        let text = WEB.replace("{name: web}", "{name: web, labels: {mode: '0755'}}").replace(
            "  containers:",
            "  volumes: [{name: s, secret: {secretName: s, defaultMode: 0400, items: [{key: k, path: p, mode: 0600}]}}, {name: c, configMap: {name: c, defaultMode: 420}}]\n  containers:",
        );
        let pod = decode(&text).expect("valid");
        assert_eq!(
            pod.metadata.labels.as_ref().unwrap()["mode"],
            "0755",
            "labels are not modes"
        );
        let volumes = pod.spec.unwrap().volumes.unwrap();
        let secret = volumes[0].secret.as_ref().unwrap();
        assert_eq!(secret.default_mode, Some(0o400));
        assert_eq!(secret.items.as_ref().unwrap()[0].mode, Some(0o600));
        assert_eq!(
            volumes[1].config_map.as_ref().unwrap().default_mode,
            Some(420)
        );
    }

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(
            decode("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n").unwrap_err(),
            ["/m/web.yaml: kind: Unsupported value: \"Service\": supported values: \"Pod\""]
        );
        assert_eq!(
            decode("kind: Pod\nmetadata: {name: s}\n").unwrap_err(),
            ["/m/web.yaml: apiVersion: Required value: must be \"v1\""]
        );
        let e = decode("apiVersion: v1\nkind: Pod\nspec: [").unwrap_err();
        assert!(
            e[0].starts_with("/m/web.yaml: not valid YAML or JSON"),
            "{e:?}"
        );
        let e = decode(&format!("{WEB}---\n{WEB}")).unwrap_err();
        assert!(
            e[0].starts_with("/m/web.yaml: not valid YAML or JSON"),
            "{e:?}"
        );
        assert_eq!(
            decode("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: web, image: x, ports: [{containerPort: http}]}]}").unwrap_err(),
            ["/m/web.yaml: spec.containers[0].ports[0].containerPort: invalid type: string \"http\", expected i32"]
        );
        assert_eq!(
            decode(&WEB.replace("image: nginx:1.27", "image: ''")).unwrap_err(),
            ["/m/web.yaml: spec.containers[0].image: Required value"]
        );
        let long = "a".repeat(250);
        let e = decode(&WEB.replace("{name: web}", &format!("{{name: {long}}}"))).unwrap_err();
        assert!(e[0].contains("with the node name appended"), "{e:?}");
    }
}

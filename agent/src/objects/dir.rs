//! ConfigMaps and Secrets from manifests in a directory, for a node without an API server.
//!
//! Files ending .yaml, .yml or .json (not dotfiles), each holding one or more documents separated
//! by `---` (or a `kind: List`). Secrets' `data` is base64 as in the API; `stringData` is merged
//! over it as the API server does. The directory is re-read on the first lookup after any
//! manifest in it was added, removed or changed (by name, size, mtime and inode), so lookups see
//! edits at once without a watcher, and cost a few stat calls when nothing changed.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde::Deserialize;

use super::ObjectLookup;
use crate::source::ManifestError;
use crate::source::file::is_manifest_name;

/// What identifies a version of a file without reading it.
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64, u64)>;

/// `(namespace, name)`.
type Key = (String, String);

#[derive(Debug, Default)]
struct Cache {
    fingerprint: Option<Fingerprint>,
    config_maps: BTreeMap<Key, ConfigMap>,
    secrets: BTreeMap<Key, Secret>,
    errors: Vec<ManifestError>,
}

/// ConfigMaps and Secrets read from a directory of manifests.
#[derive(Debug)]
pub struct ObjectDir {
    dir: PathBuf,
    cache: Mutex<Cache>,
}

impl ObjectDir {
    /// Objects from `dir`, which need not exist yet.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ObjectDir {
            dir: dir.into(),
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The manifests (or documents in them) that could not be used, as of now.
    pub fn errors(&self) -> Vec<ManifestError> {
        self.fresh().errors.clone()
    }

    /// The cache, re-read first if the directory changed.
    fn fresh(&self) -> MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves at worst a stale cache, which the fingerprint
        // check below replaces: the poison carries no broken invariant.
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let fingerprint = fingerprint(&self.dir);
        if cache.fingerprint.as_ref() != Some(&fingerprint) {
            let (config_maps, secrets, errors) = load(&fingerprint);
            for error in errors.iter().filter(|e| !cache.errors.contains(e)) {
                tracing::warn!(
                    file = %error.file.display(),
                    field = %error.field,
                    reason = %error.reason,
                    "object manifest refused: {error}"
                );
            }
            *cache = Cache {
                fingerprint: Some(fingerprint),
                config_maps,
                secrets,
                errors,
            };
        }
        cache
    }
}

impl ObjectLookup for ObjectDir {
    fn config_map(&self, namespace: &str, name: &str) -> Option<ConfigMap> {
        let key = (namespace.to_string(), name.to_string());
        self.fresh().config_maps.get(&key).cloned()
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        let key = (namespace.to_string(), name.to_string());
        self.fresh().secrets.get(&key).cloned()
    }
}

/// The manifests in `dir` with what identifies their versions, sorted by path. A missing or
/// unreadable directory has none.
fn fingerprint(dir: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Fingerprint = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(is_manifest_name))
        .filter_map(|e| {
            let path = e.path();
            let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
            Some((path, meta.modified().ok(), meta.len(), meta.ino()))
        })
        .collect();
    files.sort();
    files
}

type Loaded = (
    BTreeMap<Key, ConfigMap>,
    BTreeMap<Key, Secret>,
    Vec<ManifestError>,
);

fn load(files: &Fingerprint) -> Loaded {
    let (mut config_maps, mut secrets, mut errors) = Loaded::default();
    // Which file defined a key first: later definitions are reported, not used.
    let mut defined: BTreeMap<(&'static str, Key), PathBuf> = BTreeMap::new();
    for (file, ..) in files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                errors.push(error(file, "", format!("cannot read: {e}")));
                continue;
            }
        };
        let documents = match documents(&text) {
            Ok(documents) => documents,
            Err(reason) => {
                errors.push(error(file, "", reason));
                continue;
            }
        };
        for (index, document) in documents.into_iter().enumerate() {
            let object = match decode(document) {
                Ok(Some(object)) => object,
                Ok(None) => continue,
                Err((field, reason)) => {
                    errors.push(error(file, &format!("document {index}: {field}"), reason));
                    continue;
                }
            };
            let (kind, key) = match &object {
                Object::ConfigMap(c) => ("ConfigMap", key_of(&c.metadata)),
                Object::Secret(s) => ("Secret", key_of(&s.metadata)),
            };
            if let Some(first) = defined.get(&(kind, key.clone())) {
                errors.push(error(
                    file,
                    &format!("document {index}: metadata.name"),
                    format!(
                        "Duplicate value: {kind} \"{}/{}\": already defined by {}",
                        key.0,
                        key.1,
                        first.display()
                    ),
                ));
                continue;
            }
            defined.insert((kind, key.clone()), file.clone());
            match object {
                Object::ConfigMap(c) => {
                    config_maps.insert(key, c);
                }
                Object::Secret(s) => {
                    secrets.insert(key, s);
                }
            }
        }
    }
    (config_maps, secrets, errors)
}

fn error(file: &Path, field: &str, reason: String) -> ManifestError {
    ManifestError {
        file: file.to_path_buf(),
        field: field.to_string(),
        reason,
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Every document of a YAML stream (JSON is YAML), `kind: List` items flattened.
fn documents(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut out = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(document)
            .map_err(|e| format!("not valid YAML or JSON: {e}"))?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("List") {
            if let Some(items) = value.get("items").and_then(|i| i.as_array()) {
                out.extend(items.iter().cloned());
                continue;
            }
        }
        out.push(value);
    }
    Ok(out)
}

enum Object {
    ConfigMap(ConfigMap),
    Secret(Secret),
}

/// One document as an object, None for an empty document, or (field, reason).
fn decode(document: serde_json::Value) -> Result<Option<Object>, (String, String)> {
    if document.is_null() {
        return Ok(None);
    }
    let kind = document
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or_default()
        .to_string();
    match document.get("apiVersion").and_then(|v| v.as_str()) {
        Some("v1") => {}
        Some(other) => {
            return Err((
                "apiVersion".into(),
                format!("Unsupported value: {other:?}: supported values: \"v1\""),
            ));
        }
        None => return Err(("apiVersion".into(), "Required value: must be \"v1\"".into())),
    }
    let typed = |e: serde_path_to_error::Error<serde_json::Error>| {
        (e.path().to_string(), e.into_inner().to_string())
    };
    let mut object = match kind.as_str() {
        "ConfigMap" => {
            Object::ConfigMap(serde_path_to_error::deserialize(&document).map_err(typed)?)
        }
        "Secret" => {
            let mut secret: Secret = serde_path_to_error::deserialize(&document).map_err(typed)?;
            // The API server stores stringData into data, stringData winning.
            if let Some(strings) = secret.string_data.take() {
                let data = secret.data.get_or_insert_with(BTreeMap::new);
                for (k, v) in strings {
                    data.insert(k, ByteString(v.into_bytes()));
                }
            }
            secret.type_.get_or_insert_with(|| "Opaque".into());
            Object::Secret(secret)
        }
        "" => return Err(("kind".into(), "Required value".into())),
        other => {
            return Err((
                "kind".into(),
                format!(
                    "Unsupported value: {other:?}: supported values: \"ConfigMap\", \"Secret\""
                ),
            ));
        }
    };
    let meta = match &mut object {
        Object::ConfigMap(c) => &mut c.metadata,
        Object::Secret(s) => &mut s.metadata,
    };
    match meta.name.as_deref() {
        None | Some("") => return Err(("metadata.name".into(), "Required value".into())),
        Some(name) => {
            if let Some(why) = crate::names::dns1123_subdomain_error(name) {
                return Err((
                    "metadata.name".into(),
                    format!("Invalid value: {name:?}: {why}"),
                ));
            }
        }
    }
    if meta.namespace.as_deref().unwrap_or_default().is_empty() {
        meta.namespace = Some("default".into());
    }
    Ok(Some(object))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const OBJECTS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: token, namespace: kube-system}
data: {key: aGVsbG8=, both: b2xk}
stringData: {plain: text, both: new}
---
"#;

    #[test]
    fn reads_several_documents_per_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("objects.yaml"), OBJECTS).unwrap();
        let objects = ObjectDir::new(dir.path());
        let cm = objects
            .config_map("default", "settings")
            .expect("configmap");
        assert_eq!(cm.data.unwrap()["mode"], "fast");
        let secret = objects.secret("kube-system", "token").expect("secret");
        let data = secret.data.expect("data");
        assert_eq!(data["key"].0, b"hello");
        assert_eq!(data["plain"].0, b"text");
        assert_eq!(data["both"].0, b"new", "stringData wins");
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert!(secret.string_data.is_none());
        assert!(
            objects.secret("default", "token").is_none(),
            "namespaces matter"
        );
        assert!(
            objects.config_map("default", "token").is_none(),
            "kinds matter"
        );
        assert!(objects.errors().is_empty());
    }

    #[test]
    fn sees_changes_without_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let objects = ObjectDir::new(dir.path().join("later"));
        assert!(
            objects.config_map("default", "settings").is_none(),
            "no directory yet"
        );
        fs::create_dir(dir.path().join("later")).unwrap();
        let file = dir.path().join("later/cm.json");
        fs::write(&file, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings"},"data":{"v":"1"}}"#).unwrap();
        assert_eq!(
            objects
                .config_map("default", "settings")
                .unwrap()
                .data
                .unwrap()["v"],
            "1"
        );
        // Same size, new content: the mtime or inode tells (write a new file and rename it in).
        let tmp = dir.path().join("later/.cm.json.tmp");
        fs::write(&tmp, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings"},"data":{"v":"2"}}"#).unwrap();
        fs::rename(&tmp, &file).unwrap();
        assert_eq!(
            objects
                .config_map("default", "settings")
                .unwrap()
                .data
                .unwrap()["v"],
            "2"
        );
        fs::remove_file(&file).unwrap();
        assert!(objects.config_map("default", "settings").is_none());
    }

    #[test]
    fn bad_documents_are_reported_and_isolated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        fs::write(d.join("a.yaml"), OBJECTS).unwrap();
        fs::write(
            d.join("b.yaml"),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: bad}\ndata: {k: '!!notbase64'}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine}\n",
        )
        .unwrap();
        fs::write(d.join("c.yaml"), "data: [unclosed").unwrap();
        let objects = ObjectDir::new(d);
        assert!(
            objects.config_map("default", "fine").is_some(),
            "good documents still count"
        );
        assert_eq!(
            objects
                .config_map("default", "settings")
                .unwrap()
                .data
                .unwrap()["mode"],
            "fast",
            "first file wins"
        );
        assert!(objects.secret("default", "bad").is_none());
        let errors: Vec<String> = objects.errors().iter().map(ToString::to_string).collect();
        let b = d.join("b.yaml").display().to_string();
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors[0].starts_with(&format!("{b}: document 0: data.k: ")),
            "{errors:#?}"
        );
        assert_eq!(
            errors[1],
            format!(
                "{b}: document 1: kind: Unsupported value: \"Pod\": supported values: \"ConfigMap\", \"Secret\""
            )
        );
        assert_eq!(
            errors[2],
            format!(
                "{b}: document 2: metadata.name: Duplicate value: ConfigMap \"default/settings\": already defined by {}",
                d.join("a.yaml").display()
            )
        );
        assert!(
            errors[3].starts_with(&format!(
                "{}: not valid YAML or JSON",
                d.join("c.yaml").display()
            )),
            "{errors:#?}"
        );
    }
}

//! The served OpenAPI documents, built once per process when first asked for and kept gzipped
//! (the JSON is ~90% smaller so): `/openapi/v2` as JSON and as gnostic protobuf, and the v3
//! index and per group version documents. They are rebuilt only when the kinds (or a
//! [`SchemaSource`]'s revision) change, and only one set is kept.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::{Map, Value, json};

use super::definitions::{self, Definitions, SchemaSource};
use super::v3;
use crate::kinds::Kind;
use crate::openapi_v2;

/// One document: gzipped, with kube's ETag (the SHA-512 of the plain bytes, in upper hex).
pub struct Blob {
    /// The document, gzipped.
    pub gzip: Vec<u8>,
    /// The ETag, unquoted.
    pub etag: String,
    /// The plain length.
    pub len: usize,
}

impl Blob {
    fn new(plain: &[u8]) -> Blob {
        let digest = ring::digest::digest(&ring::digest::SHA512, plain);
        let etag = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        // Writing to a Vec cannot fail.
        let _ = encoder.write_all(plain);
        let gzip = encoder.finish().unwrap_or_default();
        Blob {
            gzip,
            etag,
            len: plain.len(),
        }
    }

    /// The plain document.
    pub fn plain(&self) -> Vec<u8> {
        let mut plain = Vec::with_capacity(self.len);
        if GzDecoder::new(&self.gzip[..])
            .read_to_end(&mut plain)
            .is_err()
        {
            tracing::warn!("an OpenAPI document did not decompress");
        }
        plain
    }
}

/// Every document for one set of kinds.
pub struct Documents {
    key: u64,
    /// `/openapi/v2` as JSON.
    pub v2_json: Blob,
    /// `/openapi/v2` as gnostic protobuf.
    pub v2_protobuf: Blob,
    /// `/openapi/v3`.
    pub v3_index: Blob,
    /// `/openapi/v3/<path>` by path (`api/v1`, `apis/apps/v1`).
    pub v3: Vec<(String, Blob)>,
    /// When they were built, for `Last-Modified`.
    pub built: chrono::DateTime<chrono::Utc>,
}

/// `api/v1` or `apis/apps/v1`.
pub fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The cache key: the source's revision identifies the kinds (for the served table it is the
/// registry's stamp, unique to one content of one server's table), the length covers sources
/// whose revision doesn't follow the kinds ([`super::definitions::BuiltinOnly`] in tests).
/// Cheap on purpose: it is computed on every request, unlike hashing the whole table.
fn key(kinds: &[Kind], source: &dyn SchemaSource, version: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    kinds.len().hash(&mut hasher);
    source.revision().hash(&mut hasher);
    version.hash(&mut hasher);
    hasher.finish()
}

static CACHE: Mutex<Option<Arc<Documents>>> = Mutex::new(None);

/// The documents of `kinds`, built now if the cached ones are of other kinds.
pub fn get(kinds: &[Kind], source: &dyn SchemaSource, version: &str) -> Arc<Documents> {
    let key = key(kinds, source, version);
    // Held while building, so that concurrent first requests build once.
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(documents) = cache.as_ref().filter(|d| d.key == key) {
        return Arc::clone(documents);
    }
    // Drop the old set first: never two in memory.
    *cache = None;
    let started = Instant::now();
    let documents = Arc::new(build(key, kinds, source, version));
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        v2_bytes = documents.v2_json.len,
        v2_gzip_bytes = documents.v2_json.gzip.len(),
        v2_protobuf_bytes = documents.v2_protobuf.len,
        v3_documents = documents.v3.len(),
        "built the OpenAPI documents"
    );
    *cache = Some(Arc::clone(&documents));
    documents
}

fn build(key: u64, kinds: &[Kind], source: &dyn SchemaSource, version: &str) -> Documents {
    let Definitions { schemas, roots } = definitions::build(kinds, source);
    let mut v3_docs = Vec::new();
    let mut index = Map::new();
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for kind in kinds {
        if !groups.contains(&(kind.group, kind.version)) {
            groups.push((kind.group, kind.version));
        }
    }
    for (group, gv_version) in groups {
        let of_gv: Vec<&(Kind, String)> = roots
            .iter()
            .filter(|(k, _)| k.group == group && k.version == gv_version)
            .collect();
        let names = definitions::closure(&schemas, of_gv.iter().map(|(_, n)| n.as_str()));
        let document = v3::document(&of_gv, &schemas, &names, version);
        let blob = Blob::new(document.to_string().as_bytes());
        let path = group_version_path(group, gv_version);
        index.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", blob.etag)}),
        );
        v3_docs.push((path, blob));
    }
    let v2 = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": version},
        "paths": {},
        "definitions": Value::Object(schemas),
    });
    let v2_protobuf = Blob::new(&openapi_v2::encode(&v2));
    let v2_json = Blob::new(v2.to_string().as_bytes());
    drop(v2);
    Documents {
        key,
        v2_json,
        v2_protobuf,
        v3_index: Blob::new(json!({"paths": index}).to_string().as_bytes()),
        v3: v3_docs,
        built: chrono::Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::builtin;
    use definitions::BuiltinOnly;

    #[test]
    fn documents_follow_the_kinds_and_are_cached() {
        let mut kinds = builtin();
        let first = get(&kinds, &BuiltinOnly, "v1.33.0");
        let again = get(&kinds, &BuiltinOnly, "v1.33.0");
        assert!(Arc::ptr_eq(&first, &again), "built once");
        assert!(!first.v3.iter().any(|(p, _)| p == "apis/example.com/v1"));
        let mut widget = kinds[0].clone();
        widget.group = "example.com";
        widget.kind = "Widget";
        kinds.push(widget);
        let grown = get(&kinds, &BuiltinOnly, "v1.33.0");
        assert!(grown.v3.iter().any(|(p, _)| p == "apis/example.com/v1"));
        let v2: Value = serde_json::from_slice(&grown.v2_json.plain()).unwrap_or_default();
        assert_eq!(
            v2["definitions"]["com.example.v1.Widget"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
    }
}

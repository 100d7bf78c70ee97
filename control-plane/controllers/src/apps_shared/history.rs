//! ControllerRevisions as upstream's `pkg/controller/history` keeps them: the revision data is
//! a patch that replaces `spec.template`, named `<owner>-<hash>` where the hash is FNV-32a of
//! the data (and the collision count), encoded with the apimachinery "safe" alphabet.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::ObjectMeta;
use serde_json::{Value, json};

/// The label of a StatefulSet revision carrying its hash (`controller.kubernetes.io/hash`).
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// The patch a revision stores: `{"spec":{"template":{…,"$patch":"replace"}}}`.
pub fn template_patch(template: &PodTemplateSpec) -> Result<Value, serde_json::Error> {
    let mut template = serde_json::to_value(template)?;
    if let Value::Object(map) = &mut template {
        map.insert("$patch".into(), json!("replace"));
    }
    Ok(json!({"spec": {"template": template}}))
}

/// The template a revision's data holds (what `ApplyRevision` restores).
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision
        .data
        .as_ref()?
        .0
        .get("spec")?
        .get("template")?
        .clone();
    if let Value::Object(map) = &mut template {
        map.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// FNV-32a of the patch's compact JSON (keys sorted, as Go marshals maps) and the collision
/// count in decimal, as `HashControllerRevision`, safe-encoded.
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(data).unwrap_or_default();
    if let Some(count) = collision_count {
        bytes.extend_from_slice(count.to_string().as_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

fn fnv32a(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in bytes {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// apimachinery's `rand.SafeEncodeString`: each byte mapped into an alphabet without vowels
/// (so no words are spelled) and without look-alike characters.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| char::from(ALPHANUMS[usize::from(b) % ALPHANUMS.len()]))
        .collect()
}

/// `<prefix>-<hash>`, the prefix cut to 223 characters so the name stays a valid name.
pub fn revision_name(prefix: &str, hash: &str) -> String {
    let prefix: String = prefix.chars().take(223).collect();
    format!("{prefix}-{hash}")
}

/// A revision object: template labels plus `extra_labels`, owned by `owner`.
pub fn new_revision(
    name: &str,
    namespace: &str,
    owner: OwnerReference,
    labels: BTreeMap<String, String>,
    annotations: Option<BTreeMap<String, String>>,
    data: Value,
    revision: i64,
) -> ControllerRevision {
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            annotations: annotations.filter(|a| !a.is_empty()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

/// Whether a revision holds exactly `data`.
pub fn holds(revision: &ControllerRevision, data: &Value) -> bool {
    revision.data.as_ref().is_some_and(|d| &d.0 == data)
}

/// Sorts revisions oldest first (revision number, then creation, then name), as upstream.
pub fn sort(revisions: &mut [ControllerRevision]) {
    revisions.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                a.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            })
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// The number after the newest revision (1 with none); `revisions` sorted.
pub fn next_number(revisions: &[ControllerRevision]) -> i64 {
    revisions.last().map_or(1, |r| r.revision + 1)
}

/// The revisions to delete to keep `limit` of those not `live`, oldest first.
pub fn to_truncate<'a>(
    revisions: &'a [ControllerRevision],
    live: &dyn Fn(&ControllerRevision) -> bool,
    limit: i32,
) -> Vec<&'a ControllerRevision> {
    let history: Vec<&ControllerRevision> = revisions.iter().filter(|r| !live(r)).collect();
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    if history.len() <= limit {
        return Vec::new();
    }
    history[..history.len() - limit].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_encoding_uses_the_upstream_alphabet() {
        // '0' is byte 48: 48 % 27 = 21 → '4'; '9' is 57 % 27 = 3 → 'f'.
        assert_eq!(safe_encode("09"), "4f");
        assert_eq!(revision_name("web", "5f"), "web-5f");
    }

    #[test]
    fn collision_count_changes_the_hash() {
        let data = json!({"spec": {"template": {"$patch": "replace"}}});
        assert_ne!(hash(&data, None), hash(&data, Some(1)));
        assert_eq!(hash(&data, Some(1)), hash(&data, Some(1)));
    }
}

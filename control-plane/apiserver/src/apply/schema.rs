//! What server-side apply needs of a type's schema: how each list merges (atomic, as a set, or
//! as a map keyed by some fields) and which maps are atomic. The built-in kinds declare these
//! with `+listType`, `+listMapKey` and `+structType`/`+mapType`; custom kinds get them from
//! `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and `x-kubernetes-map-type`
//! ([`CustomSchema::from_openapi`]), and without them every list is atomic.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::kinds::Kind;

/// How a list merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole; owned as one field.
    Atomic,
    /// Items are scalars merged by value.
    Set,
    /// Items are maps merged by these key fields.
    Map(Vec<String>),
}

/// The list and map semantics of one kind, by path of field names from the root (list items
/// add no name).
pub trait Schema: Send + Sync {
    /// How the list at `path` merges.
    fn list_type(&self, path: &[&str]) -> ListType;

    /// Whether the map at `path` is replaced whole rather than merged by field.
    fn atomic_map(&self, path: &[&str]) -> bool;

    /// The value a missing key field of a list item takes (kube defaults `protocol` to TCP).
    fn key_default(&self, _path: &[&str], _key: &str) -> Option<Value> {
        None
    }
}

/// The schema of a kind: a custom kind's own (read from its definition's `openAPIV3Schema`
/// when the kind was built, so it lives and dies with the served table), the built-in tables
/// for the built-in groups, or atomic lists.
pub fn for_kind(kind: &Kind) -> Arc<dyn Schema> {
    if let Some(custom) = &kind.custom {
        return Arc::clone(&custom.apply) as Arc<dyn Schema>;
    }
    if is_builtin_group(kind.group) {
        return Arc::new(Builtin);
    }
    Arc::new(AtomicLists)
}

/// Groups kube defines: core, unqualified legacy groups and `*.k8s.io`. CRDs cannot use them.
fn is_builtin_group(group: &str) -> bool {
    !group.contains('.') || group.ends_with(".k8s.io")
}

/// The fallback for types without list metadata: every list atomic, every map granular.
pub struct AtomicLists;

impl Schema for AtomicLists {
    fn list_type(&self, path: &[&str]) -> ListType {
        // Object metadata is the same for every kind.
        Builtin.metadata_list(path).unwrap_or(ListType::Atomic)
    }

    fn atomic_map(&self, _path: &[&str]) -> bool {
        false
    }
}

/// The built-in kinds, by field name (and its parent where one name has two meanings), as
/// their Go types declare them in v1.33.
pub struct Builtin;

impl Builtin {
    fn metadata_list(&self, path: &[&str]) -> Option<ListType> {
        match path {
            [.., "metadata", "finalizers"] => Some(ListType::Set),
            [.., "metadata", "ownerReferences"] => Some(map(&["uid"])),
            _ => None,
        }
    }
}

fn map(keys: &[&str]) -> ListType {
    ListType::Map(keys.iter().map(|k| k.to_string()).collect())
}

impl Schema for Builtin {
    fn list_type(&self, path: &[&str]) -> ListType {
        if let Some(meta) = self.metadata_list(path) {
            return meta;
        }
        let Some((last, parents)) = path.split_last() else {
            return ListType::Atomic;
        };
        let parent = parents.last().copied().unwrap_or("");
        match *last {
            "containers"
            | "initContainers"
            | "ephemeralContainers"
            | "volumes"
            | "env"
            | "imagePullSecrets"
            | "resourceClaims"
            | "schedulingGates" => map(&["name"]),
            "volumeMounts" => map(&["mountPath"]),
            "volumeDevices" => map(&["devicePath"]),
            "hostAliases" => map(&["ip"]),
            "topologySpreadConstraints" => map(&["topologyKey", "whenUnsatisfiable"]),
            "conditions" if parent == "status" => map(&["type"]),
            "addresses" if parent == "status" => map(&["type"]),
            "podIPs" | "hostIPs" if parent == "status" => map(&["ip"]),
            "ports"
                if matches!(
                    parent,
                    "containers" | "initContainers" | "ephemeralContainers"
                ) =>
            {
                map(&["containerPort", "protocol"])
            }
            // Service ports; EndpointSlice and Endpoints ports are atomic.
            "ports" if parent == "spec" => map(&["port", "protocol"]),
            _ => ListType::Atomic,
        }
    }

    fn atomic_map(&self, path: &[&str]) -> bool {
        matches!(
            path.last().copied(),
            Some(
                "selector"
                    | "nodeSelector"
                    | "labelSelector"
                    | "namespaceSelector"
                    | "podSelector"
                    | "configMapKeyRef"
                    | "secretKeyRef"
                    | "fieldRef"
                    | "resourceFieldRef"
                    | "roleRef"
            )
        )
    }

    fn key_default(&self, _path: &[&str], key: &str) -> Option<Value> {
        (key == "protocol").then(|| Value::from("TCP"))
    }
}

/// List and map semantics read from an OpenAPI v3 schema (a CRD version's
/// `openAPIV3Schema`): what the CRD module hands to apply for its kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomSchema {
    lists: BTreeMap<String, ListType>,
    atomic_maps: Vec<String>,
}

impl CustomSchema {
    /// Reads `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and
    /// `x-kubernetes-map-type` everywhere in `schema`.
    pub fn from_openapi(schema: &Value) -> CustomSchema {
        let mut out = CustomSchema::default();
        out.walk(schema, &mut Vec::new());
        out
    }

    fn walk(&mut self, schema: &Value, path: &mut Vec<String>) {
        let dotted = path.join(".");
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => {
                self.lists.insert(dotted.clone(), ListType::Set);
            }
            Some("map") => {
                let keys = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| {
                        k.iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                self.lists.insert(dotted.clone(), ListType::Map(keys));
            }
            _ => {}
        }
        let atomic = schema.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
        if atomic {
            self.atomic_maps.push(dotted);
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, child) in properties {
                path.push(name.clone());
                self.walk(child, path);
                path.pop();
            }
        }
        // List items and map values add no name to the path.
        for nested in ["items", "additionalProperties"] {
            if let Some(child) = schema.get(nested).filter(|c| c.is_object()) {
                self.walk(child, path);
            }
        }
    }
}

impl Schema for CustomSchema {
    fn list_type(&self, path: &[&str]) -> ListType {
        if let Some(meta) = Builtin.metadata_list(path) {
            return meta;
        }
        self.lists
            .get(&path.join("."))
            .cloned()
            .unwrap_or(ListType::Atomic)
    }

    fn atomic_map(&self, path: &[&str]) -> bool {
        self.atomic_maps.contains(&path.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtin_lists_by_name_and_parent() {
        let b = Builtin;
        assert_eq!(
            b.list_type(&["spec", "template", "spec", "containers"]),
            map(&["name"])
        );
        assert_eq!(
            b.list_type(&["spec", "containers", "ports"]),
            map(&["containerPort", "protocol"])
        );
        assert_eq!(b.list_type(&["spec", "ports"]), map(&["port", "protocol"]));
        assert_eq!(b.list_type(&["spec", "tolerations"]), ListType::Atomic);
        assert_eq!(b.list_type(&["metadata", "finalizers"]), ListType::Set);
        assert!(b.atomic_map(&["spec", "selector"]));
    }

    #[test]
    fn custom_schema_reads_list_extensions() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {
                "items": {"type": "array", "x-kubernetes-list-type": "map",
                          "x-kubernetes-list-map-keys": ["id"], "items": {"type": "object"}},
                "tags": {"type": "array", "x-kubernetes-list-type": "set"},
                "plain": {"type": "array"},
                "ref": {"type": "object", "x-kubernetes-map-type": "atomic"}}}}});
        let custom = CustomSchema::from_openapi(&schema);
        assert_eq!(custom.list_type(&["spec", "items"]), map(&["id"]));
        assert_eq!(custom.list_type(&["spec", "tags"]), ListType::Set);
        assert_eq!(custom.list_type(&["spec", "plain"]), ListType::Atomic);
        assert!(custom.atomic_map(&["spec", "ref"]));
        assert_eq!(AtomicLists.list_type(&["spec", "x"]), ListType::Atomic);
    }

    #[test]
    fn custom_kinds_use_their_definitions_schema() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                          "listKind": "WidgetList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"items": {
                            "type": "array", "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["id"],
                            "items": {"type": "object"}}}}}}}}]}});
        let kinds = crate::crd::definition::kinds_of(&crd);
        let Some(kind) = kinds.first() else {
            panic!("no kind from {crd}")
        };
        assert_eq!(for_kind(kind).list_type(&["spec", "items"]), map(&["id"]));
        // The same kind without its definition: nothing else remembers the schema.
        let bare = Kind {
            custom: None,
            ..kind.clone()
        };
        assert_eq!(
            for_kind(&bare).list_type(&["spec", "items"]),
            ListType::Atomic
        );
    }
}

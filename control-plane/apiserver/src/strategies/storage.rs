//! PersistentVolumes, PersistentVolumeClaims and StorageClasses: upstream's create checks
//! (access modes, capacity and requested storage, one volume source, a provisioner) and what
//! their updates may not change, with upstream's field paths and messages.

use serde_json::{Value, json};

use crate::quantity::Quantity;
use crate::status::Cause;

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// The volume sources a PersistentVolume may name, exactly one of them.
const SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "glusterfs",
    "nfs",
    "rbd",
    "quobyte",
    "cinder",
    "cephfs",
    "iscsi",
    "fc",
    "flocker",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

fn forbidden(field: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueForbidden".into(),
        message: format!("Forbidden: {detail}"),
        field: field.into(),
    }
}

fn required(field: &str, detail: &str) -> Cause {
    let mut cause = Cause::required(field);
    if !detail.is_empty() {
        cause.message = format!("Required value: {detail}");
    }
    cause
}

fn unsupported(field: &str, value: &str, supported: &[&str]) -> Cause {
    let listed: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
    Cause {
        reason: "FieldValueNotSupported".into(),
        message: format!(
            "Unsupported value: {}: supported values: {}",
            json!(value),
            listed.join(", ")
        ),
        field: field.into(),
    }
}

fn immutable(field: &str, value: Option<&Value>) -> Cause {
    let shown = match value {
        Some(Value::String(s)) => json!(s).to_string(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => "null".to_string(),
    };
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {shown}: field is immutable"),
        field: field.into(),
    }
}

fn check_access_modes(spec: &Value, claim: bool, causes: &mut Vec<Cause>) {
    let modes = spec
        .get("accessModes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if modes.is_empty() {
        let detail = if claim {
            "at least 1 access mode is required"
        } else {
            ""
        };
        causes.push(required("spec.accessModes", detail));
    }
    for mode in &modes {
        let mode = mode.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&mode) {
            causes.push(unsupported("spec.accessModes", mode, ACCESS_MODES));
        }
    }
}

fn storage(value: Option<&Value>) -> Option<Quantity> {
    value
        .and_then(Value::as_str)
        .and_then(|s| Quantity::parse(s).ok())
}

/// Upstream's ValidatePersistentVolumeClaim (the spec part).
pub fn check_claim(object: &Value) -> Vec<Cause> {
    let null = Value::Null;
    let spec = object.get("spec").unwrap_or(&null);
    let mut causes = Vec::new();
    check_access_modes(spec, true, &mut causes);
    let requested = spec.pointer("/resources/requests/storage");
    match requested {
        None | Some(Value::Null) => causes.push(Cause::required("spec.resources[storage]")),
        Some(value) => match storage(Some(value)) {
            Some(q) if q.milli_value() > 0 => {}
            _ => causes.push(Cause {
                reason: "FieldValueInvalid".into(),
                message: format!(
                    "Invalid value: {}: must be greater than zero",
                    json!(value.as_str().unwrap_or(""))
                ),
                field: "spec.resources.requests[storage]".into(),
            }),
        },
    }
    causes
}

/// Upstream's ValidatePersistentVolumeClaimUpdate: a bound claim may grow its requested
/// storage and change its volumeAttributesClassName; the binder may set an empty volumeName.
pub fn check_claim_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut munged = new.get("spec").cloned().unwrap_or_else(|| json!({}));
    let old_spec = old.get("spec").cloned().unwrap_or_else(|| json!({}));
    let bound = old.pointer("/status/phase").and_then(Value::as_str) == Some("Bound");
    let old_volume = old_spec.get("volumeName").and_then(Value::as_str);
    let mut restore = |pointer: &str| {
        let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        let old_value = old_spec.pointer(pointer).cloned();
        if let Some(map) = munged.pointer_mut(parent).and_then(Value::as_object_mut) {
            match old_value {
                Some(value) => map.insert(key.into(), value),
                None => map.remove(key),
            };
        }
    };
    if bound {
        restore("/resources/requests/storage");
    }
    restore("/volumeAttributesClassName");
    if old_volume.is_none_or(str::is_empty) {
        restore("/volumeName");
    }
    if munged != old_spec {
        // Upstream appends a cmp.Diff of the Go structs, which has no JSON equivalent.
        causes.push(forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    let (grown, was) = (
        storage(new.pointer("/spec/resources/requests/storage")),
        storage(old.pointer("/spec/resources/requests/storage")),
    );
    if let (Some(grown), Some(was)) = (grown, was) {
        if grown.milli_value() < was.milli_value() {
            causes.push(forbidden(
                "spec.resources.requests.storage",
                "field can not be less than previous value",
            ));
        }
    }
    causes
}

/// Upstream's ValidatePersistentVolumeSpec: access modes, a storage capacity, one source.
pub fn check_volume(object: &Value) -> Vec<Cause> {
    let null = Value::Null;
    let spec = object.get("spec").unwrap_or(&null);
    let mut causes = Vec::new();
    check_access_modes(spec, false, &mut causes);
    let capacity = spec.get("capacity").and_then(Value::as_object);
    match capacity {
        None => causes.push(Cause::required("spec.capacity")),
        Some(map) if map.is_empty() => causes.push(Cause::required("spec.capacity")),
        Some(map) if !map.contains_key("storage") || map.len() > 1 => causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: "Unsupported value: capacity: supported values: \"storage\"".into(),
            field: "spec.capacity".into(),
        }),
        Some(_) => {}
    }
    let named: Vec<&str> = SOURCES
        .iter()
        .copied()
        .filter(|s| spec.get(*s).is_some_and(|v| !v.is_null()))
        .collect();
    match named.as_slice() {
        [] => causes.push(required("spec", "must specify a volume type")),
        [_] => {}
        [_, rest @ ..] => {
            for source in rest {
                causes.push(forbidden(
                    &format!("spec.{source}"),
                    "may not specify more than 1 volume type",
                ));
            }
        }
    }
    causes
}

/// Upstream's ValidatePersistentVolumeUpdate: the source and volume mode stay.
pub fn check_volume_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let source = |o: &Value| -> Vec<Option<Value>> {
        SOURCES
            .iter()
            .map(|s| o.pointer(&format!("/spec/{s}")).cloned())
            .collect()
    };
    if source(new) != source(old) {
        causes.push(forbidden(
            "spec.persistentvolumesource",
            "spec.persistentvolumesource is immutable after creation",
        ));
    }
    let mode = |o: &Value| o.pointer("/spec/volumeMode").cloned();
    if mode(new) != mode(old) {
        causes.push(immutable("volumeMode", new.pointer("/spec/volumeMode")));
    }
    causes
}

/// Upstream's ValidateStorageClass: a provisioner and a known reclaim policy.
pub fn check_class(object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if object
        .get("provisioner")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        causes.push(Cause::required("provisioner"));
    }
    if let Some(policy) = object.get("reclaimPolicy").and_then(Value::as_str) {
        if !["Delete", "Retain"].contains(&policy) {
            causes.push(unsupported("reclaimPolicy", policy, &["Delete", "Retain"]));
        }
    }
    causes
}

/// Upstream's ValidateStorageClassUpdate.
pub fn check_class_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    for key in ["parameters", "provisioner", "reclaimPolicy"] {
        if new.get(key) != old.get(key) {
            causes.push(forbidden(key, &format!("updates to {key} are forbidden.")));
        }
    }
    if new.get("volumeBindingMode") != old.get("volumeBindingMode") {
        causes.push(immutable("volumeBindingMode", new.get("volumeBindingMode")));
    }
    causes
}

fn set_default(object: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    if object.pointer(parent).is_none() && (parent == "/spec" || parent == "/status") {
        object[&parent[1..]] = json!({});
    }
    if let Some(map) = object.pointer_mut(parent).and_then(Value::as_object_mut) {
        if map.get(key).is_none_or(Value::is_null) {
            map.insert(key.into(), value);
        }
    }
}

/// Upstream's SetDefaults of PersistentVolume, PersistentVolumeClaim (also a StatefulSet's
/// claim templates) and StorageClass, so an update that leaves them out changes nothing.
pub fn defaults(kind: &str, object: &mut Value) {
    match kind {
        "PersistentVolume" => {
            set_default(
                object,
                "/spec/persistentVolumeReclaimPolicy",
                json!("Retain"),
            );
            set_default(object, "/spec/volumeMode", json!("Filesystem"));
            set_default(object, "/status/phase", json!("Pending"));
        }
        "PersistentVolumeClaim" => {
            set_default(object, "/spec/volumeMode", json!("Filesystem"));
            set_default(object, "/status/phase", json!("Pending"));
        }
        "StorageClass" => {
            set_default(object, "/reclaimPolicy", json!("Delete"));
            set_default(object, "/volumeBindingMode", json!("Immediate"));
        }
        _ => {}
    }
}

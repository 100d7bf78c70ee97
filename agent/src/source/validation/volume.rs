//! Volumes: names, exactly one supported source, each source's own fields.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Volume;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use crate::config::quantity::Quantity;
use crate::names::dns1123_label_error;
use crate::source::defaults::volume_sources;

use super::Errors;

/// The volume kinds Capstan can mount; other kinds need an API server or a storage driver.
const SUPPORTED_VOLUMES: &[&str] = &[
    "configMap",
    "downwardAPI",
    "emptyDir",
    "hostPath",
    "projected",
    "secret",
];

/// Checks the volumes; returns their names for the mounts to refer to.
pub(super) fn validate_volumes(volumes: &[Volume], e: &mut Errors) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let path = format!("spec.volumes[{i}]");
        if v.name.is_empty() {
            e.required(format!("{path}.name"));
        } else if let Some(why) = dns1123_label_error(&v.name) {
            e.invalid(format!("{path}.name"), &v.name, &why);
        } else if !names.insert(v.name.clone()) {
            e.push(
                format!("{path}.name"),
                format!("Duplicate value: {:?}", v.name),
            );
        }
        let sources = volume_sources(v);
        match sources.as_slice() {
            [] => e.push(path.clone(), "Required value: must specify a volume type"),
            [one] if !SUPPORTED_VOLUMES.contains(&one.as_str()) => {
                // Capstan's rule, not the API server's: these need a storage driver.
                e.unsupported(path.clone(), one, SUPPORTED_VOLUMES);
            }
            [_] => {}
            [_, second, ..] => e.forbidden(
                format!("{path}.{second}"),
                "may not specify more than 1 volume type",
            ),
        }
        if let Some(h) = &v.host_path {
            if h.path.is_empty() {
                e.required(format!("{path}.hostPath.path"));
            }
            e.one_of(
                format!("{path}.hostPath.type"),
                h.type_.as_deref(),
                &[
                    "",
                    "DirectoryOrCreate",
                    "Directory",
                    "FileOrCreate",
                    "File",
                    "Socket",
                    "CharDevice",
                    "BlockDevice",
                ],
            );
        }
        if let Some(d) = &v.empty_dir {
            e.one_of(
                format!("{path}.emptyDir.medium"),
                d.medium.as_deref(),
                &["", "Memory", "HugePages"],
            );
            if let Some(q) = &d.size_limit {
                quantity(format!("{path}.emptyDir.sizeLimit"), q, e);
            }
        }
        if let Some(c) = &v.config_map {
            if c.name.is_empty() {
                e.required(format!("{path}.configMap.name"));
            }
            mode(format!("{path}.configMap.defaultMode"), c.default_mode, e);
            for (j, item) in c.items.iter().flatten().enumerate() {
                key_to_path(
                    &format!("{path}.configMap.items[{j}]"),
                    &item.key,
                    &item.path,
                    e,
                );
            }
        }
        if let Some(s) = &v.secret {
            if s.secret_name.as_deref().unwrap_or_default().is_empty() {
                e.required(format!("{path}.secret.secretName"));
            }
            mode(format!("{path}.secret.defaultMode"), s.default_mode, e);
            for (j, item) in s.items.iter().flatten().enumerate() {
                key_to_path(
                    &format!("{path}.secret.items[{j}]"),
                    &item.key,
                    &item.path,
                    e,
                );
            }
        }
        if let Some(d) = &v.downward_api {
            mode(format!("{path}.downwardAPI.defaultMode"), d.default_mode, e);
            for (j, item) in d.items.iter().flatten().enumerate() {
                relative_path(
                    &format!("{path}.downwardAPI.items[{j}].path"),
                    &item.path,
                    e,
                );
            }
        }
    }
    names
}

fn mode(field: String, value: Option<i32>, e: &mut Errors) {
    if let Some(m) = value.filter(|m| !(0..=0o777).contains(m)) {
        e.invalid(
            field,
            m,
            "must be a number between 0 and 0777 (octal), both inclusive",
        );
    }
}

fn key_to_path(path: &str, key: &str, file: &str, e: &mut Errors) {
    if key.is_empty() {
        e.required(format!("{path}.key"));
    }
    relative_path(&format!("{path}.path"), file, e);
}

pub(super) fn relative_path(field: &str, value: &str, e: &mut Errors) {
    if value.is_empty() {
        e.required(field);
    } else if value.starts_with('/') {
        e.invalid(field, value, "must be a relative path");
    } else if value.split('/').any(|part| part == "..") {
        e.invalid(field, value, "must not contain '..'");
    }
}

pub(super) fn quantity(field: String, q: &ApiQuantity, e: &mut Errors) -> Option<Quantity> {
    match Quantity::parse(&q.0) {
        Ok(v) if v.is_negative() => {
            e.invalid(field, &q.0, "must be greater than or equal to 0");
            None
        }
        Ok(v) => Some(v),
        Err(_) => {
            e.invalid(
                field,
                &q.0,
                "quantities must match the regular expression \
                 '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            );
            None
        }
    }
}

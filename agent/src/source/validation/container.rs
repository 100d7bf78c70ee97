//! Containers: names, image, ports, mounts, env, resources, and their probes and hooks.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, ContainerPort};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use crate::config::quantity::Quantity;
use crate::names::{dns1123_label_error, port_name_error};

use super::Errors;
use super::probe::{validate_handler, validate_probe};
use super::volume::{quantity, relative_path};

pub(super) fn validate_container(
    c: &Container,
    path: &str,
    volumes: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
    host_network: bool,
    e: &mut Errors,
) {
    if c.name.is_empty() {
        e.required(format!("{path}.name"));
    } else if let Some(why) = dns1123_label_error(&c.name) {
        e.invalid(format!("{path}.name"), &c.name, &why);
    } else if !names.insert(c.name.clone()) {
        e.push(
            format!("{path}.name"),
            format!("Duplicate value: {:?}", c.name),
        );
    }
    match c.image.as_deref() {
        None | Some("") => e.required(format!("{path}.image")),
        Some(image) if image.trim() != image => e.invalid(
            format!("{path}.image"),
            image,
            "must not have leading or trailing whitespace",
        ),
        Some(_) => {}
    }
    e.one_of(
        format!("{path}.imagePullPolicy"),
        c.image_pull_policy.as_deref(),
        &["Always", "IfNotPresent", "Never"],
    );
    e.one_of(
        format!("{path}.terminationMessagePolicy"),
        c.termination_message_policy.as_deref(),
        &["File", "FallbackToLogsOnError"],
    );
    for (i, p) in c.ports.iter().flatten().enumerate() {
        validate_port(p, &format!("{path}.ports[{i}]"), host_network, e);
    }
    let mut mount_paths = BTreeSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        if m.name.is_empty() {
            e.required(format!("{mp}.name"));
        } else if !volumes.contains(&m.name) {
            e.push(format!("{mp}.name"), format!("Not found: {:?}", m.name));
        }
        if m.mount_path.is_empty() {
            e.required(format!("{mp}.mountPath"));
        } else if !mount_paths.insert(m.mount_path.clone()) {
            e.invalid(format!("{mp}.mountPath"), &m.mount_path, "must be unique");
        }
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            relative_path(&format!("{mp}.subPath"), sub, e);
        }
    }
    for (i, env) in c.env.iter().flatten().enumerate() {
        let ep = format!("{path}.env[{i}]");
        if env.name.is_empty() {
            e.required(format!("{ep}.name"));
        }
        if let Some(from) = &env.value_from {
            if env.value.as_deref().is_some_and(|v| !v.is_empty()) {
                e.invalid(
                    format!("{ep}.valueFrom"),
                    "",
                    "may not be specified when `value` is not empty",
                );
            }
            let set = [
                from.field_ref.is_some(),
                from.resource_field_ref.is_some(),
                from.config_map_key_ref.is_some(),
                from.secret_key_ref.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            if set != 1 {
                e.invalid(
                    format!("{ep}.valueFrom"),
                    "",
                    "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
                );
            }
        }
    }
    if let Some(r) = &c.resources {
        validate_resources(
            r.requests.as_ref(),
            r.limits.as_ref(),
            &format!("{path}.resources"),
            e,
        );
    }
    for (name, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(p) = probe {
            validate_probe(p, &format!("{path}.{name}"), name != "readinessProbe", e);
        }
    }
    if let Some(l) = &c.lifecycle {
        for (name, handler) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
            if let Some(h) = handler {
                validate_handler(h, &format!("{path}.lifecycle.{name}"), e);
            }
        }
    }
}

fn validate_port(p: &ContainerPort, path: &str, host_network: bool, e: &mut Errors) {
    let range = "must be between 1 and 65535, inclusive";
    if !(1..=65535).contains(&p.container_port) {
        e.invalid(format!("{path}.containerPort"), p.container_port, range);
    }
    if let Some(h) = p.host_port.filter(|h| *h != 0) {
        if !(1..=65535).contains(&h) {
            e.invalid(format!("{path}.hostPort"), h, range);
        } else if host_network && h != p.container_port {
            e.invalid(
                format!("{path}.hostPort"),
                h,
                "must match `containerPort` when `hostNetwork` is true",
            );
        }
    }
    e.one_of(
        format!("{path}.protocol"),
        p.protocol.as_deref(),
        &["SCTP", "TCP", "UDP"],
    );
    if let Some(name) = p.name.as_deref() {
        if let Some(why) = port_name_error(name) {
            e.invalid(format!("{path}.name"), name, why);
        }
    }
}

fn validate_resources(
    requests: Option<&BTreeMap<String, ApiQuantity>>,
    limits: Option<&BTreeMap<String, ApiQuantity>>,
    path: &str,
    e: &mut Errors,
) {
    let parse = |kind: &str, map: Option<&BTreeMap<String, ApiQuantity>>, e: &mut Errors| {
        map.into_iter()
            .flatten()
            .filter_map(|(name, q)| {
                quantity(format!("{path}.{kind}[{name}]"), q, e).map(|v| (name.clone(), v))
            })
            .collect::<BTreeMap<_, _>>()
    };
    // A request copied from an unparsable limit by the defaults is the same mistake: name it once.
    let copied = |name: &String, q: &ApiQuantity| limits.and_then(|l| l.get(name)) == Some(q);
    let requests: BTreeMap<String, ApiQuantity> = requests
        .into_iter()
        .flatten()
        .filter(|(name, q)| !copied(name, q) || Quantity::parse(&q.0).is_ok())
        .map(|(n, q)| (n.clone(), q.clone()))
        .collect();
    let limits = parse("limits", limits, e);
    let requests = parse("requests", Some(&requests), e);
    for (name, request) in &requests {
        if let Some(limit) = limits.get(name).filter(|limit| request > *limit) {
            e.invalid(
                format!("{path}.requests"),
                request.to_string(),
                &format!("must be less than or equal to {name} limit of {limit}"),
            );
        }
    }
}

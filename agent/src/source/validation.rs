//! Pod validation as the API server does it (upstream pkg/apis/core/validation), for pods that
//! never went through one: static pods. Messages and field paths follow the API server's, so
//! an error reads the same as `kubectl apply` would print it. Runs after the defaults.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, LifecycleHandler, Pod, PodSpec, Probe, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::quantity::Quantity;
use crate::names::{dns1123_label_error, dns1123_subdomain_error};

use super::defaults::volume_sources;

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path (`spec.containers[0].image`).
    pub field: String,
    /// What is wrong (`Required value`, `Invalid value: 70000: must be between...`).
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// The volume kinds Capstan can mount; other kinds need an API server or a storage driver.
const SUPPORTED_VOLUMES: &[&str] = &[
    "configMap",
    "downwardAPI",
    "emptyDir",
    "hostPath",
    "projected",
    "secret",
];

/// Collects errors under a growing field path.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }
    fn required(&mut self, field: impl Into<String>) {
        self.push(field, "Required value");
    }
    fn invalid(&mut self, field: impl Into<String>, value: impl fmt::Debug, why: &str) {
        self.push(field, format!("Invalid value: {value:?}: {why}"));
    }
    fn unsupported(&mut self, field: impl Into<String>, value: &str, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        self.push(
            field,
            format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        );
    }
    fn forbidden(&mut self, field: impl Into<String>, why: &str) {
        self.push(field, format!("Forbidden: {why}"));
    }
    fn one_of(&mut self, field: String, value: Option<&str>, supported: &[&str]) {
        if let Some(v) = value {
            if !supported.contains(&v) {
                self.unsupported(field, v, supported);
            }
        }
    }
    fn non_negative(&mut self, field: String, value: Option<i64>) {
        if let Some(v) = value.filter(|v| *v < 0) {
            self.invalid(field, v, "must be greater than or equal to 0");
        }
    }
}

/// Every problem with `pod`, in the API server's words; empty if it is valid.
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut e = Errors::default();
    let meta = &pod.metadata;
    match meta.name.as_deref() {
        None | Some("") => e.push(
            "metadata.name",
            "Required value: name or generateName is required",
        ),
        Some(name) => {
            if let Some(why) = dns1123_subdomain_error(name) {
                e.invalid("metadata.name", name, &why);
            }
        }
    }
    if let Some(ns) = meta.namespace.as_deref() {
        if let Some(why) = dns1123_label_error(ns) {
            e.invalid("metadata.namespace", ns, &why);
        }
    }
    match pod.spec.as_ref() {
        None => e.required("spec"),
        Some(spec) => validate_spec(spec, &mut e),
    }
    e.0
}

fn validate_spec(spec: &PodSpec, e: &mut Errors) {
    let volumes = validate_volumes(spec.volumes.as_deref().unwrap_or_default(), e);
    if spec.containers.is_empty() {
        e.required("spec.containers");
    }
    let mut names = BTreeSet::new();
    let host_network = spec.host_network.unwrap_or(false);
    unique_host_ports(spec, e);
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let path = format!("spec.initContainers[{i}]");
        validate_container(c, &path, &volumes, &mut names, host_network, e);
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        e.one_of(
            format!("{path}.restartPolicy"),
            c.restart_policy.as_deref(),
            &["Always"],
        );
        if !sidecar {
            let why = "may not be set for init containers without restartPolicy=Always";
            for (name, set) in [
                ("lifecycle", c.lifecycle.is_some()),
                ("livenessProbe", c.liveness_probe.is_some()),
                ("readinessProbe", c.readiness_probe.is_some()),
                ("startupProbe", c.startup_probe.is_some()),
            ] {
                if set {
                    e.forbidden(format!("{path}.{name}"), why);
                }
            }
        }
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let path = format!("spec.containers[{i}]");
        validate_container(c, &path, &volumes, &mut names, host_network, e);
        if c.restart_policy.is_some() {
            e.forbidden(
                format!("{path}.restartPolicy"),
                "may not be set for non-init containers",
            );
        }
    }
    e.one_of(
        "spec.restartPolicy".into(),
        spec.restart_policy.as_deref(),
        &["Always", "OnFailure", "Never"],
    );
    e.one_of(
        "spec.dnsPolicy".into(),
        spec.dns_policy.as_deref(),
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    );
    e.non_negative(
        "spec.terminationGracePeriodSeconds".into(),
        spec.termination_grace_period_seconds,
    );
    if let Some(v) = spec.active_deadline_seconds.filter(|v| *v < 1) {
        e.invalid(
            "spec.activeDeadlineSeconds",
            v,
            "must be between 1 and 2147483647, inclusive",
        );
    }
    if spec.dns_policy.as_deref() == Some("None")
        && spec
            .dns_config
            .as_ref()
            .is_none_or(|c| c.nameservers.as_ref().is_none_or(Vec::is_empty))
    {
        e.push(
            "spec.dnsConfig.nameservers",
            "Required value: must provide at least one DNS nameserver when `dnsPolicy` is None",
        );
    }
}

/// No two ports of the pod may claim the same host port and protocol.
fn unique_host_ports(spec: &PodSpec, e: &mut Errors) {
    let mut taken = BTreeSet::new();
    let groups = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("containers", &spec.containers),
    ];
    for (group, containers) in groups {
        for (i, c) in containers.iter().enumerate() {
            for (j, p) in c.ports.iter().flatten().enumerate() {
                let Some(port) = p.host_port.filter(|p| *p != 0) else {
                    continue;
                };
                let key = format!("{port}/{}", p.protocol.as_deref().unwrap_or("TCP"));
                if !taken.insert(key.clone()) {
                    e.push(
                        format!("spec.{group}[{i}].ports[{j}].hostPort"),
                        format!("Duplicate value: {key:?}"),
                    );
                }
            }
        }
    }
}

/// Checks the volumes; returns their names for the mounts to refer to.
fn validate_volumes(volumes: &[Volume], e: &mut Errors) -> BTreeSet<String> {
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

fn relative_path(field: &str, value: &str, e: &mut Errors) {
    if value.is_empty() {
        e.required(field);
    } else if value.starts_with('/') {
        e.invalid(field, value, "must be a relative path");
    } else if value.split('/').any(|part| part == "..") {
        e.invalid(field, value, "must not contain '..'");
    }
}

fn quantity(field: String, q: &ApiQuantity, e: &mut Errors) -> Option<Quantity> {
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

fn validate_container(
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

/// IANA service names: at most 15 lowercase alphanumerics or '-', with a letter, no '--'.
fn port_name_error(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 15 {
        return Some("must be no more than 15 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Some("must contain at least one letter (a-z)");
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Some("must not begin or end with a hyphen, nor contain adjacent hyphens");
    }
    None
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

fn port_or_name(port: &IntOrString, field: String, e: &mut Errors) {
    match port {
        IntOrString::Int(p) if !(1..=65535).contains(p) => {
            e.invalid(field, p, "must be between 1 and 65535, inclusive")
        }
        IntOrString::String(name) => {
            if let Some(why) = port_name_error(name) {
                e.invalid(field, name, why);
            }
        }
        IntOrString::Int(_) => {}
    }
}

fn validate_http(h: &HTTPGetAction, path: &str, e: &mut Errors) {
    port_or_name(&h.port, format!("{path}.port"), e);
    e.one_of(
        format!("{path}.scheme"),
        h.scheme.as_deref(),
        &["HTTP", "HTTPS"],
    );
}

fn validate_probe(p: &Probe, path: &str, success_must_be_one: bool, e: &mut Errors) {
    let handlers = [
        ("exec", p.exec.is_some()),
        ("httpGet", p.http_get.is_some()),
        ("tcpSocket", p.tcp_socket.is_some()),
        ("grpc", p.grpc.is_some()),
    ];
    handler_count(&handlers, path, e);
    if let Some(x) = &p.exec {
        if x.command.as_ref().is_none_or(Vec::is_empty) {
            e.required(format!("{path}.exec.command"));
        }
    }
    if let Some(h) = &p.http_get {
        validate_http(h, &format!("{path}.httpGet"), e);
    }
    if let Some(t) = &p.tcp_socket {
        port_or_name(&t.port, format!("{path}.tcpSocket.port"), e);
    }
    if let Some(g) = &p.grpc {
        if !(1..=65535).contains(&g.port) {
            e.invalid(
                format!("{path}.grpc.port"),
                g.port,
                "must be between 1 and 65535, inclusive",
            );
        }
    }
    for (name, value) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        e.non_negative(format!("{path}.{name}"), value.map(i64::from));
    }
    if success_must_be_one {
        if let Some(v) = p.success_threshold.filter(|v| *v != 1) {
            e.invalid(format!("{path}.successThreshold"), v, "must be 1");
        }
    }
    if let Some(v) = p.termination_grace_period_seconds.filter(|v| *v <= 0) {
        e.invalid(
            format!("{path}.terminationGracePeriodSeconds"),
            v,
            "must be greater than 0",
        );
    }
}

fn validate_handler(h: &LifecycleHandler, path: &str, e: &mut Errors) {
    let handlers = [
        ("exec", h.exec.is_some()),
        ("httpGet", h.http_get.is_some()),
        ("tcpSocket", h.tcp_socket.is_some()),
        ("sleep", h.sleep.is_some()),
    ];
    handler_count(&handlers, path, e);
    if let Some(x) = &h.exec {
        if x.command.as_ref().is_none_or(Vec::is_empty) {
            e.required(format!("{path}.exec.command"));
        }
    }
    if let Some(g) = &h.http_get {
        validate_http(g, &format!("{path}.httpGet"), e);
    }
    if let Some(s) = h.sleep.as_ref().filter(|s| s.seconds < 0) {
        e.invalid(
            format!("{path}.sleep.seconds"),
            s.seconds,
            "must be greater than or equal to 0",
        );
    }
}

/// Exactly one handler: none is "Required", a second one is "Forbidden" on its own field.
fn handler_count(handlers: &[(&str, bool)], path: &str, e: &mut Errors) {
    let mut set = handlers.iter().filter(|(_, set)| *set);
    if set.next().is_none() {
        e.push(path, "Required value: must specify a handler type");
    }
    if let Some((second, _)) = set.next() {
        e.forbidden(
            format!("{path}.{second}"),
            "may not specify more than 1 handler type",
        );
    }
}

#[cfg(test)]
mod tests;

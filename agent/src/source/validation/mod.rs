//! Pod validation as the API server does it (upstream pkg/apis/core/validation), for pods that
//! never went through one: static pods. Messages and field paths follow the API server's, so
//! an error reads the same as `kubectl apply` would print it. Runs after the defaults.

mod container;
mod probe;
mod volume;

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1::{Pod, PodSpec};

use crate::names::{dns1123_label_error, dns1123_subdomain_error};

use container::validate_container;
use volume::validate_volumes;

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

#[cfg(test)]
mod tests;

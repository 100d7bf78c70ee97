//! Probes and lifecycle hooks: exactly one handler, ports, timings.

use k8s_openapi::api::core::v1::{HTTPGetAction, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Errors;
use crate::names::port_name_error;

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

pub(super) fn validate_probe(p: &Probe, path: &str, success_must_be_one: bool, e: &mut Errors) {
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

pub(super) fn validate_handler(h: &LifecycleHandler, path: &str, e: &mut Errors) {
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

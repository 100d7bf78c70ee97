//! The defaults the API server gives a pod (SetDefaults_Pod and friends in upstream
//! pkg/apis/core/v1/defaults.go), applied to pods that never went through one: static pods.
//! Pod workers can then read every field without guessing what its absence means.

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, HTTPGetAction, Lifecycle, LifecycleHandler, Pod,
    PodSecurityContext, Probe, Volume,
};

/// Priority of the built-in class system-node-critical.
pub const SYSTEM_NODE_CRITICAL: i32 = 2_000_001_000;
/// Priority of the built-in class system-cluster-critical.
pub const SYSTEM_CLUSTER_CRITICAL: i32 = 2_000_000_000;

/// Mode of files in configMap, secret, downwardAPI and projected volumes unless given: 0644.
pub const DEFAULT_VOLUME_MODE: i32 = 0o644;

/// Fills in what the API server would: restart policy, grace period, DNS policy, scheduler,
/// service links, container pull policy and termination message, probe timings, port
/// protocols, requests from limits, volume source and modes.
pub fn apply_defaults(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    spec.restart_policy.get_or_insert_with(|| "Always".into());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy.get_or_insert_with(|| "ClusterFirst".into());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".into());
    spec.enable_service_links.get_or_insert(true);
    spec.security_context
        .get_or_insert_with(PodSecurityContext::default);
    // What the API server's Priority admission fills in: the built-in critical classes'
    // values (eviction and shutdown order critical pods last), 0 otherwise.
    if spec.priority.is_none() {
        spec.priority = Some(match spec.priority_class_name.as_deref() {
            Some("system-node-critical") => SYSTEM_NODE_CRITICAL,
            Some("system-cluster-critical") => SYSTEM_CLUSTER_CRITICAL,
            _ => 0,
        });
    }
    spec.preemption_policy
        .get_or_insert_with(|| "PreemptLowerPriority".into());
    let host_network = spec.host_network.unwrap_or(false);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        container_defaults(c, host_network);
    }
    for v in spec.volumes.iter_mut().flatten() {
        volume_defaults(v);
    }
}

/// Always for `:latest` or an image without tag or digest, IfNotPresent otherwise.
pub fn default_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    // A tag is a ':' after the last '/', so a registry port is not mistaken for one.
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
        None if digest => "IfNotPresent",
        None => "Always",
    }
}

fn container_defaults(c: &mut Container, host_network: bool) {
    if c.image_pull_policy.is_none() {
        let policy = default_pull_policy(c.image.as_deref().unwrap_or_default());
        c.image_pull_policy = Some(policy.into());
    }
    c.termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".into());
    c.termination_message_policy
        .get_or_insert_with(|| "File".into());
    for p in c.ports.iter_mut().flatten() {
        p.protocol.get_or_insert_with(|| "TCP".into());
        if host_network && p.host_port.unwrap_or(0) == 0 {
            p.host_port = Some(p.container_port);
        }
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ]
    .into_iter()
    .flatten()
    {
        probe_defaults(probe);
    }
    if let Some(Lifecycle {
        post_start,
        pre_stop,
        ..
    }) = c.lifecycle.as_mut()
    {
        for handler in [post_start, pre_stop].into_iter().flatten() {
            handler_defaults(handler);
        }
    }
    for env in c.env.iter_mut().flatten() {
        if let Some(field) = env.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            field.api_version.get_or_insert_with(|| "v1".into());
        }
    }
    // Limits without requests: the requests are the limits (this is what makes a pod with
    // only limits Guaranteed).
    if let Some(resources) = c.resources.as_mut() {
        if let Some(limits) = &resources.limits {
            let requests = resources.requests.get_or_insert_with(Default::default);
            for (name, value) in limits {
                requests
                    .entry(name.clone())
                    .or_insert_with(|| value.clone());
            }
        }
    }
}

fn http_defaults(h: &mut HTTPGetAction) {
    h.path.get_or_insert_with(|| "/".into());
    h.scheme.get_or_insert_with(|| "HTTP".into());
}

fn probe_defaults(p: &mut Probe) {
    p.timeout_seconds.get_or_insert(1);
    p.period_seconds.get_or_insert(10);
    p.success_threshold.get_or_insert(1);
    p.failure_threshold.get_or_insert(3);
    if let Some(h) = p.http_get.as_mut() {
        http_defaults(h);
    }
}

fn handler_defaults(h: &mut LifecycleHandler) {
    if let Some(h) = h.http_get.as_mut() {
        http_defaults(h);
    }
}

/// Whether a volume names any source at all (there are dozens of kinds; serde sees them all).
pub(crate) fn volume_sources(v: &Volume) -> Vec<String> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(fields)) => fields
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k != "name")
            .collect(),
        _ => Vec::new(),
    }
}

fn volume_defaults(v: &mut Volume) {
    if volume_sources(v).is_empty() {
        v.empty_dir = Some(EmptyDirVolumeSource::default());
    }
    if let Some(h) = v.host_path.as_mut() {
        h.type_.get_or_insert_with(String::new);
    }
    if let Some(s) = v.config_map.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(s) = v.secret.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
    }
    if let Some(s) = v.downward_api.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        for item in s.items.iter_mut().flatten() {
            if let Some(f) = item.field_ref.as_mut() {
                f.api_version.get_or_insert_with(|| "v1".into());
            }
        }
    }
    if let Some(s) = v.projected.as_mut() {
        s.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        for source in s.sources.iter_mut().flatten() {
            for item in source
                .downward_api
                .iter_mut()
                .flat_map(|d| d.items.iter_mut().flatten())
            {
                if let Some(f) = item.field_ref.as_mut() {
                    f.api_version.get_or_insert_with(|| "v1".into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(yaml: &str) -> Pod {
        let mut pod: Pod = serde_yaml_ng::from_str(yaml).expect("test pod parses");
        apply_defaults(&mut pod);
        pod
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(default_pull_policy("nginx"), "Always");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/web"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/web:v1"), "IfNotPresent");
        assert_eq!(default_pull_policy("busybox@sha256:abcd"), "IfNotPresent");
        assert_eq!(default_pull_policy("busybox:latest@sha256:abcd"), "Always");
    }

    #[test]
    fn pod_and_container_defaults() {
        let pod = defaulted(
            r#"
spec:
  containers:
  - name: web
    image: nginx:1.27
    ports: [{containerPort: 80}]
    livenessProbe: {httpGet: {port: 80}}
    readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 3}
    lifecycle: {preStop: {httpGet: {port: 80}}}
    env: [{name: N, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    resources: {limits: {cpu: 500m, memory: 64Mi}, requests: {cpu: 100m}}
  initContainers: [{name: init, image: busybox}]
"#,
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
        assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
        assert_eq!(spec.enable_service_links, Some(true));
        assert_eq!(spec.priority, Some(0));
        assert_eq!(
            spec.preemption_policy.as_deref(),
            Some("PreemptLowerPriority")
        );
        assert!(spec.security_context.is_some());
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            c.termination_message_path.as_deref(),
            Some("/dev/termination-log")
        );
        assert_eq!(c.termination_message_policy.as_deref(), Some("File"));
        assert_eq!(
            c.ports.as_ref().unwrap()[0].protocol.as_deref(),
            Some("TCP")
        );
        assert_eq!(c.ports.as_ref().unwrap()[0].host_port, None);
        let live = c.liveness_probe.as_ref().unwrap();
        assert_eq!(
            (
                live.timeout_seconds,
                live.period_seconds,
                live.success_threshold,
                live.failure_threshold
            ),
            (Some(1), Some(10), Some(1), Some(3))
        );
        let http = live.http_get.as_ref().unwrap();
        assert_eq!(
            (http.path.as_deref(), http.scheme.as_deref()),
            (Some("/"), Some("HTTP"))
        );
        assert_eq!(
            c.readiness_probe.as_ref().unwrap().period_seconds,
            Some(3),
            "given values stay"
        );
        let pre_stop = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert_eq!(
            pre_stop.http_get.as_ref().unwrap().scheme.as_deref(),
            Some("HTTP")
        );
        let field = c.env.as_ref().unwrap()[0]
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap();
        assert_eq!(field.api_version.as_deref(), Some("v1"));
        let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
        assert_eq!(requests["cpu"].0, "100m", "a given request stays");
        assert_eq!(
            requests["memory"].0, "64Mi",
            "a missing request is the limit"
        );
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.image_pull_policy.as_deref(), Some("Always"));
    }

    #[test]
    fn critical_classes_get_their_priority() {
        let pod = defaulted(
            "spec: {priorityClassName: system-node-critical, containers: [{name: a, image: x}]}",
        );
        assert_eq!(pod.spec.unwrap().priority, Some(SYSTEM_NODE_CRITICAL));
        let pod = defaulted(
            "spec: {priorityClassName: system-cluster-critical, containers: [{name: a, image: x}]}",
        );
        assert_eq!(pod.spec.unwrap().priority, Some(SYSTEM_CLUSTER_CRITICAL));
    }

    #[test]
    fn host_network_ports_and_volumes() {
        let pod = defaulted(
            r#"
spec:
  hostNetwork: true
  containers: [{name: a, image: x, ports: [{containerPort: 53, protocol: UDP}]}]
  volumes:
  - name: scratch
  - name: host
    hostPath: {path: /var/log}
  - name: cm
    configMap: {name: settings}
  - name: sec
    secret: {secretName: token, defaultMode: 256}
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
"#,
        );
        let spec = pod.spec.as_ref().unwrap();
        let port = &spec.containers[0].ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.host_port, port.protocol.as_deref()),
            (Some(53), Some("UDP"))
        );
        let v = spec.volumes.as_ref().unwrap();
        assert!(v[0].empty_dir.is_some(), "no source is an emptyDir");
        assert_eq!(v[1].host_path.as_ref().unwrap().type_.as_deref(), Some(""));
        assert_eq!(v[2].config_map.as_ref().unwrap().default_mode, Some(0o644));
        assert_eq!(v[3].secret.as_ref().unwrap().default_mode, Some(0o400));
        let info = v[4].downward_api.as_ref().unwrap();
        assert_eq!(info.default_mode, Some(0o644));
        assert_eq!(
            info.items.as_ref().unwrap()[0]
                .field_ref
                .as_ref()
                .unwrap()
                .api_version
                .as_deref(),
            Some("v1")
        );
    }
}

//! A container's environment as the kubelet builds it: `envFrom` sources, then `env` entries in
//! order (values from literals, the downward API, ConfigMaps and Secrets), with `$(VAR)`
//! references expanded in env values, command and args.

use capstan_proto::KeyValue;
use k8s_openapi::api::core::v1::{Container, Pod, Secret};

use crate::objects::ObjectLookup;
use crate::pods::downward::{self, container_path, find_container};

pub use crate::pods::downward::PodRuntimeInfo;

/// A container's environment and its command line with references expanded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEnv {
    /// The environment, in the order the variables were first defined.
    pub env: Vec<KeyValue>,
    /// `command` with `$(VAR)` expanded.
    pub command: Vec<String>,
    /// `args` with `$(VAR)` expanded.
    pub args: Vec<String>,
}

/// An environment that cannot be built, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct EnvError {
    /// The field, such as `spec.containers[0].env[2].valueFrom.configMapKeyRef`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Expands `$(NAME)` references in `input` the way Kubernetes does: a defined name is
/// replaced by its value, an undefined one is left as written, `$$` is a literal `$` (so
/// `$$(NAME)` yields `$(NAME)`), and any other `$` stays as is.
pub fn expand(input: &str, mut lookup: impl FnMut(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    // An unterminated reference is kept literally.
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            // A lone `$` (including one at the very end) is literal.
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// An ordered environment: a name defined again keeps its first position and takes the new
/// value, as the last definition wins in the kubelet.
#[derive(Default)]
struct OrderedEnv(Vec<KeyValue>);

impl OrderedEnv {
    fn set(&mut self, key: String, value: String) {
        match self.0.iter_mut().find(|kv| kv.key == key) {
            Some(kv) => kv.value = value,
            None => self.0.push(KeyValue { key, value }),
        }
    }
    fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value.clone())
    }
}

/// A variable name the runtime can pass on: not empty, printable ASCII, no `=` (the relaxed
/// rule Kubernetes applies since 1.30).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'=')
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    // stringData is write-only through an API server, which merges it into data; a manifest
    // read from disk may still carry it, and it wins there too.
    if let Some(v) = secret.string_data.as_ref().and_then(|m| m.get(key)) {
        return Some(v.clone());
    }
    secret
        .data
        .as_ref()
        .and_then(|m| m.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
}

fn secret_entries(secret: &Secret) -> Vec<(String, String)> {
    let mut keys: Vec<&String> = secret.data.iter().flat_map(|m| m.keys()).collect();
    keys.extend(secret.string_data.iter().flat_map(|m| m.keys()));
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|k| secret_value(secret, k).map(|v| (k.clone(), v)))
        .collect()
}

/// One key of a ConfigMap or Secret an env var refers to.
struct KeySource<'a> {
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
    key: &'a str,
    optional: bool,
}

impl KeySource<'_> {
    /// The value, given what was found (None: no such object; Some(None): no such key). A
    /// missing optional source gives None, a missing required one an error naming `field`.
    fn value(
        &self,
        found: Option<Option<String>>,
        field: String,
    ) -> Result<Option<String>, EnvError> {
        let (namespace, name) = (self.namespace, self.name);
        let reason = match found {
            Some(Some(value)) => return Ok(Some(value)),
            _ if self.optional => return Ok(None),
            None => format!("{} \"{name}\" not found", self.kind.to_lowercase()),
            Some(None) => format!(
                "couldn't find key {} in {} {namespace}/{name}",
                self.key, self.kind
            ),
        };
        Err(EnvError { field, reason })
    }
}

/// Builds `container`'s environment, command and args.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    info: &PodRuntimeInfo,
    objects: &dyn ObjectLookup,
) -> Result<ContainerEnv, EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let base = container_path(pod, &container.name);
    let err = |field: String, reason: String| EnvError { field, reason };
    let mut env = OrderedEnv::default();

    for (i, source) in container.env_from.iter().flatten().enumerate() {
        let prefix = source.prefix.as_deref().unwrap_or("");
        let field = format!("{base}.envFrom[{i}]");
        let entries: Vec<(String, String)> = if let Some(r) = &source.config_map_ref {
            match objects.config_map(namespace, &r.name) {
                Some(cm) => cm.data.unwrap_or_default().into_iter().collect(),
                None if r.optional == Some(true) => continue,
                None => {
                    return Err(err(
                        format!("{field}.configMapRef"),
                        format!("configmap \"{}\" not found", r.name),
                    ));
                }
            }
        } else if let Some(r) = &source.secret_ref {
            match objects.secret(namespace, &r.name) {
                Some(secret) => secret_entries(&secret),
                None if r.optional == Some(true) => continue,
                None => {
                    return Err(err(
                        format!("{field}.secretRef"),
                        format!("secret \"{}\" not found", r.name),
                    ));
                }
            }
        } else {
            continue;
        };
        for (key, value) in entries {
            let name = format!("{prefix}{key}");
            // The kubelet skips keys that are no valid variable name (with an event) rather
            // than failing the container.
            if valid_name(&name) {
                env.set(name, value);
            } else {
                tracing::warn!(field = %field, key = %name, "skipping invalid environment variable name");
            }
        }
    }

    for (i, var) in container.env.iter().flatten().enumerate() {
        let field = format!("{base}.env[{i}]");
        let value = match &var.value_from {
            None => {
                // Only variables defined before this one are visible to its value.
                let raw = var.value.as_deref().unwrap_or("");
                expand(raw, |name| env.get(name))
            }
            Some(from) => {
                if let Some(r) = &from.field_ref {
                    downward::field_value(pod, info, &r.field_path).map_err(|e| {
                        err(
                            format!("{field}.valueFrom.fieldRef.fieldPath"),
                            e.to_string(),
                        )
                    })?
                } else if let Some(r) = &from.resource_field_ref {
                    let target = match r.container_name.as_deref() {
                        None | Some("") => container,
                        Some(name) => find_container(pod, name).ok_or_else(|| {
                            err(
                                format!("{field}.valueFrom.resourceFieldRef.containerName"),
                                format!("container {name:?} not found in the pod"),
                            )
                        })?,
                    };
                    downward::resource_value(target, &r.resource, r.divisor.as_ref(), info)
                        .map_err(|e| {
                            err(format!("{field}.valueFrom.resourceFieldRef"), e.to_string())
                        })?
                } else if let Some(r) = &from.config_map_key_ref {
                    let found = objects
                        .config_map(namespace, &r.name)
                        .map(|cm| cm.data.as_ref().and_then(|d| d.get(&r.key)).cloned());
                    let source = KeySource {
                        kind: "ConfigMap",
                        namespace,
                        name: &r.name,
                        key: &r.key,
                        optional: r.optional == Some(true),
                    };
                    match source.value(found, format!("{field}.valueFrom.configMapKeyRef"))? {
                        Some(v) => v,
                        None => continue,
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let found = objects
                        .secret(namespace, &r.name)
                        .map(|secret| secret_value(&secret, &r.key));
                    let source = KeySource {
                        kind: "Secret",
                        namespace,
                        name: &r.name,
                        key: &r.key,
                        optional: r.optional == Some(true),
                    };
                    match source.value(found, format!("{field}.valueFrom.secretKeyRef"))? {
                        Some(v) => v,
                        None => continue,
                    }
                } else {
                    return Err(err(
                        format!("{field}.valueFrom"),
                        "no source set (fieldRef, resourceFieldRef, configMapKeyRef or secretKeyRef)"
                            .to_string(),
                    ));
                }
            }
        };
        env.set(var.name.clone(), value);
    }

    // Command and args see the whole environment.
    let expand_all = |list: &Option<Vec<String>>| -> Vec<String> {
        list.iter()
            .flatten()
            .map(|s| expand(s, |name| env.get(name)))
            .collect()
    };
    Ok(ContainerEnv {
        command: expand_all(&container.command),
        args: expand_all(&container.args),
        env: env.0,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).expect("test pod parses")
    }

    #[derive(Default)]
    struct Objects {
        config_maps: BTreeMap<(String, String), ConfigMap>,
        secrets: BTreeMap<(String, String), Secret>,
    }

    impl ObjectLookup for Objects {
        fn config_map(&self, ns: &str, name: &str) -> Option<ConfigMap> {
            self.config_maps.get(&(ns.into(), name.into())).cloned()
        }
        fn secret(&self, ns: &str, name: &str) -> Option<Secret> {
            self.secrets.get(&(ns.into(), name.into())).cloned()
        }
    }

    fn objects() -> Objects {
        let mut o = Objects::default();
        let cm = ConfigMap {
            data: Some(BTreeMap::from([
                ("color".to_string(), "blue".to_string()),
                ("size".to_string(), "L".to_string()),
                ("bad=key".to_string(), "x".to_string()),
            ])),
            ..Default::default()
        };
        o.config_maps.insert(("ns".into(), "settings".into()), cm);
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "password".to_string(),
                ByteString(b"hunter2".to_vec()),
            )])),
            ..Default::default()
        };
        o.secrets.insert(("ns".into(), "creds".into()), secret);
        o
    }

    fn info() -> PodRuntimeInfo {
        PodRuntimeInfo {
            pod_ips: vec!["10.1.0.5".parse().unwrap()],
            host_ips: vec!["192.168.1.2".parse().unwrap()],
            node_allocatable_cpu_millis: 2000,
            node_allocatable_memory_bytes: 1 << 30,
            node_allocatable_ephemeral_storage_bytes: 0,
        }
    }

    fn build(p: &Pod) -> Result<ContainerEnv, EnvError> {
        let c = &p.spec.as_ref().unwrap().containers[0];
        container_env(p, c, &info(), &objects())
    }

    fn get<'a>(e: &'a ContainerEnv, key: &str) -> Option<&'a str> {
        e.env
            .iter()
            .find(|kv| kv.key == key)
            .map(|kv| kv.value.as_str())
    }

    #[test]
    fn expansion_rules() {
        let vars = |name: &str| match name {
            "A" => Some("x".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(expand("$(A)", vars), "x");
        assert_eq!(expand("a$(A)b$(A)", vars), "axbx");
        assert_eq!(expand("$(EMPTY)-", vars), "-");
        assert_eq!(expand("$(UNKNOWN)", vars), "$(UNKNOWN)");
        assert_eq!(expand("$$(A)", vars), "$(A)");
        assert_eq!(expand("$$$(A)", vars), "$x");
        assert_eq!(expand("$$", vars), "$");
        assert_eq!(expand("cost $5", vars), "cost $5");
        assert_eq!(expand("end$", vars), "end$");
        assert_eq!(expand("$(A", vars), "$(A");
        assert_eq!(expand("$()", vars), "$()");
        assert_eq!(expand("é$(A)ü", vars), "éxü");
    }

    #[test]
    fn values_see_only_earlier_variables_and_command_sees_all() {
        let p = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  containers:
  - name: app
    image: x
    command: ["/bin/$(SHELL_NAME)", "$$(SHELL_NAME)"]
    args: ["--late=$(LATE)", "$(NOPE)"]
    env:
    - {name: SHELL_NAME, value: sh}
    - {name: EARLY, value: "$(SHELL_NAME)-$(LATE)"}
    - {name: LATE, value: late}
    - {name: SHELL_NAME, value: bash}
"#);
        let e = build(&p).unwrap();
        assert_eq!(get(&e, "EARLY"), Some("sh-$(LATE)"));
        // Redefinition keeps the first position and takes the last value.
        assert_eq!(e.env[0].key, "SHELL_NAME");
        assert_eq!(get(&e, "SHELL_NAME"), Some("bash"));
        assert_eq!(e.command, vec!["/bin/bash", "$(SHELL_NAME)"]);
        assert_eq!(e.args, vec!["--late=late", "$(NOPE)"]);
    }

    #[test]
    fn field_and_resource_refs() {
        let p = pod(r#"
metadata: {name: web, namespace: ns, uid: u1, labels: {app: w}}
spec:
  nodeName: n1
  containers:
  - name: app
    image: x
    resources: {limits: {cpu: 250m}}
    env:
    - {name: NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: LABEL, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: HOST, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}
    - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
    - {name: CPU, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
    - {name: CPU_M, valueFrom: {resourceFieldRef: {resource: limits.cpu, divisor: 1m}}}
    - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: SIDE, valueFrom: {resourceFieldRef: {containerName: side, resource: limits.cpu, divisor: 1m}}}
  - name: side
    image: x
    resources: {limits: {cpu: 100m}}
"#);
        let e = build(&p).unwrap();
        assert_eq!(get(&e, "NAME"), Some("web"));
        assert_eq!(get(&e, "LABEL"), Some("w"));
        assert_eq!(get(&e, "IP"), Some("10.1.0.5"));
        assert_eq!(get(&e, "HOST"), Some("192.168.1.2"));
        assert_eq!(get(&e, "NODE"), Some("n1"));
        assert_eq!(get(&e, "CPU"), Some("1"));
        assert_eq!(get(&e, "CPU_M"), Some("250"));
        assert_eq!(get(&e, "MEM"), Some("1024"));
        assert_eq!(get(&e, "SIDE"), Some("100"));
    }

    #[test]
    fn config_maps_and_secrets() {
        let p = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  containers:
  - name: app
    image: x
    envFrom:
    - {configMapRef: {name: settings}, prefix: CFG_}
    - {secretRef: {name: creds}}
    - {configMapRef: {name: absent, optional: true}}
    env:
    - {name: COLOR, valueFrom: {configMapKeyRef: {name: settings, key: color}}}
    - {name: PW, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    - {name: OPT, valueFrom: {configMapKeyRef: {name: settings, key: nope, optional: true}}}
    - {name: OPT2, valueFrom: {secretKeyRef: {name: absent, key: nope, optional: true}}}
"#);
        let e = build(&p).unwrap();
        assert_eq!(get(&e, "CFG_color"), Some("blue"));
        assert_eq!(get(&e, "CFG_size"), Some("L"));
        assert_eq!(get(&e, "CFG_bad=key"), None);
        assert_eq!(get(&e, "password"), Some("hunter2"));
        assert_eq!(get(&e, "COLOR"), Some("blue"));
        assert_eq!(get(&e, "PW"), Some("hunter2"));
        assert_eq!(get(&e, "OPT"), None);
        assert_eq!(get(&e, "OPT2"), None);
    }

    #[test]
    fn missing_objects_and_keys_name_the_field() {
        let missing_key = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  containers:
  - name: app
    image: x
    env:
    - {name: A, value: a}
    - {name: COLOR, valueFrom: {configMapKeyRef: {name: settings, key: shade}}}
"#);
        let e = build(&missing_key).unwrap_err();
        assert_eq!(
            e.field,
            "spec.containers[0].env[1].valueFrom.configMapKeyRef"
        );
        assert_eq!(e.reason, "couldn't find key shade in ConfigMap ns/settings");

        let missing_secret = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  containers:
  - name: app
    image: x
    envFrom: [{secretRef: {name: gone}}]
"#);
        let e = build(&missing_secret).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.containers[0].envFrom[0].secretRef: secret \"gone\" not found"
        );

        let bad_field = pod(r#"
metadata: {name: web, namespace: ns}
spec:
  containers:
  - name: app
    image: x
    env: [{name: X, valueFrom: {fieldRef: {fieldPath: spec.bogus}}}]
"#);
        let e = build(&bad_field).unwrap_err();
        assert_eq!(
            e.field,
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath"
        );
    }
}

//! The Pod Security Standards checks, as k8s.io/pod-security-admission words them: baseline
//! ones first, then restricted ones, each list in upstream's (sorted) order, with the
//! restricted checks replacing the baseline ones they tighten.

use std::collections::BTreeSet;

use serde_json::Value;

use super::policy::{Level, LevelVersion};

/// One failed check: its reason and its detail, printed `reason (detail)`.
pub type Violation = (String, String);

fn pluralize<'a>(singular: &'a str, plural: &'a str, count: usize) -> &'a str {
    if count == 1 { singular } else { plural }
}

fn join_quote<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|i| format!("\"{}\"", i.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `container "a"` / `containers "a", "b"`.
fn containers_named(names: &[String]) -> String {
    format!(
        "{} {}",
        pluralize("container", "containers", names.len()),
        join_quote(names)
    )
}

fn sorted(set: &BTreeSet<String>) -> Vec<String> {
    set.iter().cloned().collect()
}

/// What the checks read of a pod: its metadata and spec.
pub struct Pod<'a> {
    /// `metadata` (or a template's).
    pub meta: &'a Value,
    /// `spec` (or a template's).
    pub spec: &'a Value,
}

impl<'a> Pod<'a> {
    /// Init, app and ephemeral containers, in that order, as upstream visits them.
    fn containers(&self) -> impl Iterator<Item = &'a Value> {
        let spec = self.spec;
        ["initContainers", "containers", "ephemeralContainers"]
            .into_iter()
            .flat_map(move |list| {
                spec.get(list)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
    }

    fn pod_context(&self, field: &str) -> Option<&'a Value> {
        self.spec
            .get("securityContext")?
            .get(field)
            .filter(|v| !v.is_null())
    }

    fn annotations(&self) -> impl Iterator<Item = (&'a String, &'a str)> {
        self.meta
            .get("annotations")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k, v.as_str()?)))
    }

    fn is_windows(&self) -> bool {
        self.spec.pointer("/os/name").and_then(Value::as_str) == Some("windows")
    }
}

fn name(container: &Value) -> String {
    container
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn context<'a>(container: &'a Value, field: &str) -> Option<&'a Value> {
    container
        .get("securityContext")?
        .get(field)
        .filter(|v| !v.is_null())
}

fn fail(reason: &str, detail: String) -> Option<Violation> {
    Some((reason.to_string(), detail))
}

fn app_armor(pod: &Pod<'_>) -> Option<Violation> {
    let allowed = |t: &str| matches!(t, "RuntimeDefault" | "Localhost");
    let mut setters = Vec::new();
    let mut bad = BTreeSet::new();
    if let Some(t) = pod.pod_context("appArmorProfile").map(profile_type) {
        if !allowed(&t) {
            setters.push("pod".to_string());
            bad.insert(t);
        }
    }
    let mut containers = Vec::new();
    for c in pod.containers() {
        if let Some(t) = context(c, "appArmorProfile").map(profile_type) {
            if !allowed(&t) {
                containers.push(name(c));
                bad.insert(t);
            }
        }
    }
    if !containers.is_empty() {
        setters.push(containers_named(&containers));
    }
    let mut values = sorted(&bad);
    let mut annotations: Vec<String> = pod
        .annotations()
        .filter(|(k, v)| {
            k.starts_with("container.apparmor.security.beta.kubernetes.io/")
                && !(v.is_empty() || *v == "runtime/default" || v.starts_with("localhost/"))
        })
        .map(|(k, v)| format!("{k}={}", Value::from(v)))
        .collect();
    if !annotations.is_empty() {
        annotations.sort();
        setters.push(pluralize("annotation", "annotations", annotations.len()).to_string());
        values.extend(annotations);
    }
    if setters.is_empty() {
        return None;
    }
    fail(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{} must not set AppArmor profile type to {}",
            setters.join(" and "),
            join_quote(&values)
        ),
    )
}

fn profile_type(profile: &Value) -> String {
    profile
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

const BASELINE_CAPABILITIES: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added_capabilities(container: &Value) -> impl Iterator<Item = &str> {
    context(container, "capabilities")
        .and_then(|c| c.get("add"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn capabilities_baseline(pod: &Pod<'_>) -> Option<Violation> {
    let mut containers = Vec::new();
    let mut bad = BTreeSet::new();
    for c in pod.containers() {
        let mut valid = true;
        for cap in added_capabilities(c) {
            if !BASELINE_CAPABILITIES.contains(&cap) {
                valid = false;
                bad.insert(cap.to_string());
            }
        }
        if !valid {
            containers.push(name(c));
        }
    }
    if containers.is_empty() {
        return None;
    }
    fail(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_named(&containers),
            join_quote(&sorted(&bad))
        ),
    )
}

fn host_namespaces(pod: &Pod<'_>) -> Option<Violation> {
    let set: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|f| pod.spec.get(**f).and_then(Value::as_bool) == Some(true))
        .map(|f| format!("{f}=true"))
        .collect();
    if set.is_empty() {
        return None;
    }
    fail("host namespaces", set.join(", "))
}

fn volumes<'a>(pod: &Pod<'a>) -> impl Iterator<Item = &'a Value> {
    pod.spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn host_path_volumes(pod: &Pod<'_>) -> Option<Violation> {
    let names: Vec<String> = volumes(pod)
        .filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null()))
        .map(name)
        .collect();
    if names.is_empty() {
        return None;
    }
    fail(
        "hostPath volumes",
        format!(
            "{} {}",
            pluralize("volume", "volumes", names.len()),
            join_quote(&names)
        ),
    )
}

fn host_ports(pod: &Pod<'_>) -> Option<Violation> {
    let mut containers = Vec::new();
    let mut ports = BTreeSet::new();
    for c in pod.containers() {
        let used: Vec<i64> = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("hostPort").and_then(Value::as_i64))
            .filter(|p| *p != 0)
            .collect();
        if !used.is_empty() {
            containers.push(name(c));
            ports.extend(used.iter().map(ToString::to_string));
        }
    }
    if containers.is_empty() {
        return None;
    }
    fail(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers_named(&containers),
            pluralize("uses", "use", containers.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            sorted(&ports).join(", ")
        ),
    )
}

fn privileged(pod: &Pod<'_>) -> Option<Violation> {
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| context(c, "privileged").and_then(Value::as_bool) == Some(true))
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    fail(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers_named(&bad)
        ),
    )
}

fn proc_mount(pod: &Pod<'_>) -> Option<Violation> {
    let mut containers = Vec::new();
    let mut types = BTreeSet::new();
    for c in pod.containers() {
        if let Some(mount) = context(c, "procMount").and_then(Value::as_str) {
            if mount != "Default" {
                containers.push(name(c));
                types.insert(mount.to_string());
            }
        }
    }
    if containers.is_empty() {
        return None;
    }
    fail(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers_named(&containers),
            join_quote(&sorted(&types))
        ),
    )
}

fn se_linux(pod: &Pod<'_>, minor: u32) -> Option<Violation> {
    let mut allowed = vec!["", "container_t", "container_init_t", "container_kvm_t"];
    if minor >= 31 {
        allowed.push("container_engine_t");
    }
    let mut bad_types = BTreeSet::new();
    let (mut user, mut role) = (false, false);
    let mut valid = |options: &Value| {
        let field = |f: &str| {
            options
                .get(f)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let mut ok = true;
        let t = field("type");
        if !allowed.contains(&t.as_str()) {
            ok = false;
            bad_types.insert(t);
        }
        if !field("user").is_empty() {
            ok = false;
            user = true;
        }
        if !field("role").is_empty() {
            ok = false;
            role = true;
        }
        ok
    };
    let mut setters = Vec::new();
    if let Some(options) = pod.pod_context("seLinuxOptions") {
        if !valid(options) {
            setters.push("pod".to_string());
        }
    }
    let containers: Vec<String> = pod
        .containers()
        .filter(|c| context(c, "seLinuxOptions").is_some_and(|o| !valid(o)))
        .map(name)
        .collect();
    if !containers.is_empty() {
        setters.push(containers_named(&containers));
    }
    if setters.is_empty() {
        return None;
    }
    let mut data = Vec::new();
    if !bad_types.is_empty() {
        data.push(format!(
            "{} {}",
            pluralize("type", "types", bad_types.len()),
            join_quote(&sorted(&bad_types))
        ));
    }
    if user {
        data.push("user may not be set".to_string());
    }
    if role {
        data.push("role may not be set".to_string());
    }
    fail(
        "seLinuxOptions",
        format!(
            "{} set forbidden securityContext.seLinuxOptions: {}",
            setters.join(" and "),
            data.join("; ")
        ),
    )
}

fn valid_seccomp(t: &str) -> bool {
    matches!(t, "Localhost" | "RuntimeDefault")
}

/// Before 1.19 seccomp was set by annotations.
fn seccomp_annotations(pod: &Pod<'_>) -> Option<Violation> {
    let valid =
        |v: &str| v == "runtime/default" || v == "docker/default" || v.starts_with("localhost/");
    let mut keys = vec!["seccomp.security.alpha.kubernetes.io/pod".to_string()];
    keys.extend(
        pod.containers()
            .map(|c| format!("container.seccomp.security.alpha.kubernetes.io/{}", name(c))),
    );
    let forbidden: BTreeSet<String> = pod
        .annotations()
        .filter(|(k, v)| keys.contains(k) && !valid(v))
        .map(|(k, v)| format!("{k}={}", Value::from(v)))
        .collect();
    if forbidden.is_empty() {
        return None;
    }
    fail(
        "seccompProfile",
        format!(
            "forbidden {} {}",
            pluralize("annotation", "annotations", forbidden.len()),
            sorted(&forbidden).join(", ")
        ),
    )
}

/// The seccomp checks; `restricted` also demands a profile be set somewhere.
fn seccomp(pod: &Pod<'_>, restricted: bool) -> Option<Violation> {
    let mut setters = Vec::new();
    let mut bad = BTreeSet::new();
    let mut pod_set = false;
    if let Some(t) = pod.pod_context("seccompProfile").map(profile_type) {
        if valid_seccomp(&t) {
            pod_set = true;
        } else {
            setters.push("pod".to_string());
            bad.insert(t);
        }
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in pod.containers() {
        match context(c, "seccompProfile").map(profile_type) {
            Some(t) if !valid_seccomp(&t) => {
                explicit.push(name(c));
                bad.insert(t);
            }
            Some(_) => {}
            None if !pod_set => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_named(&explicit));
    }
    if !setters.is_empty() {
        return fail(
            "seccompProfile",
            format!(
                "{} must not set securityContext.seccompProfile.type to {}",
                setters.join(" and "),
                join_quote(&sorted(&bad))
            ),
        );
    }
    if restricted && !implicit.is_empty() {
        return fail(
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_named(&implicit)
            ),
        );
    }
    None
}

fn sysctls(pod: &Pod<'_>, minor: u32) -> Option<Violation> {
    let mut allowed = vec![
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
    ];
    if minor >= 27 {
        allowed.push("net.ipv4.ip_local_reserved_ports");
    }
    if minor >= 29 {
        allowed.extend([
            "net.ipv4.tcp_keepalive_time",
            "net.ipv4.tcp_fin_timeout",
            "net.ipv4.tcp_keepalive_intvl",
            "net.ipv4.tcp_keepalive_probes",
        ]);
    }
    if minor >= 32 {
        allowed.extend(["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"]);
    }
    let forbidden: Vec<String> = pod
        .pod_context("sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(name)
        .filter(|n| !allowed.contains(&n.as_str()))
        .collect();
    if forbidden.is_empty() {
        return None;
    }
    fail("forbidden sysctls", forbidden.join(", "))
}

fn host_process(pod: &Pod<'_>) -> Option<Violation> {
    let set = |options: Option<&Value>| {
        options
            .and_then(|o| o.get("hostProcess"))
            .and_then(Value::as_bool)
            == Some(true)
    };
    let mut setters = Vec::new();
    if set(pod.pod_context("windowsOptions")) {
        setters.push("pod".to_string());
    }
    let containers: Vec<String> = pod
        .containers()
        .filter(|c| set(context(c, "windowsOptions")))
        .map(name)
        .collect();
    if !containers.is_empty() {
        setters.push(containers_named(&containers));
    }
    if setters.is_empty() {
        return None;
    }
    fail(
        "hostProcess",
        format!(
            "{} must not set securityContext.windowsOptions.hostProcess=true",
            setters.join(" and ")
        ),
    )
}

fn allow_privilege_escalation(pod: &Pod<'_>) -> Option<Violation> {
    let bad: Vec<String> = pod
        .containers()
        .filter(|c| context(c, "allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false))
        .map(name)
        .collect();
    if bad.is_empty() {
        return None;
    }
    fail(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers_named(&bad)
        ),
    )
}

fn capabilities_restricted(pod: &Pod<'_>) -> Option<Violation> {
    let mut missing_drop = Vec::new();
    let mut adding = Vec::new();
    let mut forbidden = BTreeSet::new();
    for c in pod.containers() {
        let Some(caps) = context(c, "capabilities") else {
            missing_drop.push(name(c));
            continue;
        };
        let dropped_all = caps
            .get("drop")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|d| d.as_str() == Some("ALL"));
        if !dropped_all {
            missing_drop.push(name(c));
        }
        let mut added_forbidden = false;
        for cap in added_capabilities(c) {
            if cap != "NET_BIND_SERVICE" {
                added_forbidden = true;
                forbidden.insert(cap.to_string());
            }
        }
        if added_forbidden {
            adding.push(name(c));
        }
    }
    let mut details = Vec::new();
    if !missing_drop.is_empty() {
        details.push(format!(
            "{} must set securityContext.capabilities.drop=[\"ALL\"]",
            containers_named(&missing_drop)
        ));
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers_named(&adding),
            join_quote(&sorted(&forbidden))
        ));
    }
    if details.is_empty() {
        return None;
    }
    fail("unrestricted capabilities", details.join("; "))
}

const ALLOWED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

const RESTRICTED_VOLUMES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

fn restricted_volumes(pod: &Pod<'_>) -> Option<Violation> {
    let mut names = Vec::new();
    let mut types = BTreeSet::new();
    for volume in volumes(pod) {
        let has = |t: &&str| volume.get(*t).is_some_and(|v| !v.is_null());
        if ALLOWED_VOLUMES.iter().any(&has) {
            continue;
        }
        names.push(name(volume));
        let t = RESTRICTED_VOLUMES
            .iter()
            .find(|t| has(t))
            .unwrap_or(&"unknown");
        types.insert(t.to_string());
    }
    if names.is_empty() {
        return None;
    }
    fail(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            pluralize("volume", "volumes", names.len()),
            join_quote(&names),
            pluralize("uses", "use", names.len()),
            pluralize(
                "restricted volume type",
                "restricted volume types",
                types.len()
            ),
            join_quote(&sorted(&types))
        ),
    )
}

fn run_as_non_root(pod: &Pod<'_>) -> Option<Violation> {
    let mut setters = Vec::new();
    let mut pod_non_root = false;
    match pod.pod_context("runAsNonRoot").and_then(Value::as_bool) {
        Some(false) => setters.push("pod".to_string()),
        Some(true) => pod_non_root = true,
        None => {}
    }
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for c in pod.containers() {
        match context(c, "runAsNonRoot").and_then(Value::as_bool) {
            Some(false) => explicit.push(name(c)),
            Some(true) => {}
            None if !pod_non_root => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_named(&explicit));
    }
    if !setters.is_empty() {
        return fail(
            "runAsNonRoot != true",
            format!(
                "{} must not set securityContext.runAsNonRoot=false",
                setters.join(" and ")
            ),
        );
    }
    if !implicit.is_empty() {
        return fail(
            "runAsNonRoot != true",
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_named(&implicit)
            ),
        );
    }
    None
}

fn run_as_user(pod: &Pod<'_>) -> Option<Violation> {
    let mut setters = Vec::new();
    if pod.pod_context("runAsUser").and_then(Value::as_i64) == Some(0) {
        setters.push("pod".to_string());
    }
    let containers: Vec<String> = pod
        .containers()
        .filter(|c| context(c, "runAsUser").and_then(Value::as_i64) == Some(0))
        .map(name)
        .collect();
    if !containers.is_empty() {
        setters.push(containers_named(&containers));
    }
    if setters.is_empty() {
        return None;
    }
    fail(
        "runAsUser=0",
        format!("{} must not set runAsUser=0", setters.join(" and ")),
    )
}

/// Every violation of `pod` against `policy`, in upstream's order.
pub fn evaluate(policy: LevelVersion, pod: &Pod<'_>) -> Vec<Violation> {
    if policy.level == Level::Privileged {
        return Vec::new();
    }
    let minor = policy.version.effective_minor();
    let restricted = policy.level == Level::Restricted;
    let windows_exempt = minor >= 25 && pod.is_windows();
    let mut results = vec![
        app_armor(pod),
        if restricted && minor >= 22 {
            None
        } else {
            capabilities_baseline(pod)
        },
        host_namespaces(pod),
        if restricted {
            None
        } else {
            host_path_volumes(pod)
        },
        host_ports(pod),
        privileged(pod),
        proc_mount(pod),
        se_linux(pod, minor),
        match (restricted, minor >= 19) {
            (true, true) => None,
            (_, true) => seccomp(pod, false),
            (_, false) => seccomp_annotations(pod),
        },
        sysctls(pod, minor),
        host_process(pod),
    ];
    if restricted {
        results.extend([
            if minor >= 8 && !windows_exempt {
                allow_privilege_escalation(pod)
            } else {
                None
            },
            if minor >= 22 && !windows_exempt {
                capabilities_restricted(pod)
            } else {
                None
            },
            restricted_volumes(pod),
            run_as_non_root(pod),
            if minor >= 23 { run_as_user(pod) } else { None },
            if minor >= 19 && !windows_exempt {
                seccomp(pod, true)
            } else {
                None
            },
        ]);
    }
    results.into_iter().flatten().collect()
}

/// `reason (detail), reason (detail)`, as upstream's `ForbiddenDetail`.
pub fn describe(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|(reason, detail)| {
            if detail.is_empty() {
                reason.clone()
            } else {
                format!("{reason} ({detail})")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `reason, reason`, as upstream's `ForbiddenReason` (what existing pods are warned with).
pub fn reasons(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|(reason, _)| reason.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::policy::Version;
    use super::*;
    use serde_json::json;

    fn check(level: Level, pod: &Value) -> String {
        let policy = LevelVersion {
            level,
            version: Version::Latest,
        };
        let meta = pod.get("metadata").cloned().unwrap_or_else(|| json!({}));
        describe(&evaluate(
            policy,
            &Pod {
                meta: &meta,
                spec: &pod["spec"],
            },
        ))
    }

    #[test]
    fn a_bare_pod_fails_restricted_in_upstream_words() {
        let pod = json!({"spec": {"containers": [{"name": "c", "image": "x"}]}});
        assert_eq!(check(Level::Baseline, &pod), "");
        assert_eq!(
            check(Level::Restricted, &pod),
            "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), \
             unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), \
             runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), \
             seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
    }

    #[test]
    fn baseline_refuses_host_access() {
        let pod = json!({"spec": {
            "hostNetwork": true, "hostPID": true,
            "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
            "containers": [{"name": "a", "securityContext": {"privileged": true, "capabilities": {"add": ["SYS_ADMIN", "CHOWN"]}, "procMount": "Unmasked", "seLinuxOptions": {"type": "spc_t", "user": "u"}}, "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 81}]},
                           {"name": "b", "securityContext": {"seccompProfile": {"type": "Unconfined"}, "appArmorProfile": {"type": "Unconfined"}}}],
        }});
        assert_eq!(
            check(Level::Baseline, &pod),
            "forbidden AppArmor profile (container \"b\" must not set AppArmor profile type to \"Unconfined\"), \
             non-default capabilities (container \"a\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add), \
             host namespaces (hostNetwork=true, hostPID=true), \
             hostPath volumes (volume \"root\"), \
             hostPort (container \"a\" uses hostPorts 8080, 81), \
             privileged (container \"a\" must not set securityContext.privileged=true), \
             procMount (container \"a\" must not set securityContext.procMount to \"Unmasked\"), \
             seLinuxOptions (container \"a\" set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user may not be set), \
             seccompProfile (container \"b\" must not set securityContext.seccompProfile.type to \"Unconfined\"), \
             forbidden sysctls (kernel.msgmax)"
        );
    }

    #[test]
    fn a_hardened_pod_passes_restricted() {
        let pod = json!({"spec": {
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"name": "data", "emptyDir": {}}],
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
        }});
        assert_eq!(check(Level::Restricted, &pod), "");
        let mut worse = pod.clone();
        worse["spec"]["volumes"] = json!([{"name": "n", "nfs": {"server": "s", "path": "/"}}]);
        worse["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(0);
        assert_eq!(
            check(Level::Restricted, &worse),
            "restricted volume types (volume \"n\" uses restricted volume type \"nfs\"), \
             runAsUser=0 (container \"c\" must not set runAsUser=0)"
        );
    }
}

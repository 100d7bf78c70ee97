//! Core kinds: pods, services, nodes, namespaces, configmaps, secrets, serviceaccounts,
//! events, endpoints, persistent volumes and claims.

use serde_json::{Value, json};

use super::Column;
use super::cells::{age, age_at, i, label_map, list, name, or_none, s};
use crate::kinds::Kind;

const POD: &[Column] = &[
    ("Name", "string", 0),
    ("Ready", "string", 0),
    ("Status", "string", 0),
    ("Restarts", "string", 0),
    ("Age", "string", 0),
    ("IP", "string", 1),
    ("Node", "string", 1),
    ("Nominated Node", "string", 1),
    ("Readiness Gates", "string", 1),
];
const SERVICE: &[Column] = &[
    ("Name", "string", 0),
    ("Type", "string", 0),
    ("Cluster-IP", "string", 0),
    ("External-IP", "string", 0),
    ("Port(s)", "string", 0),
    ("Age", "string", 0),
    ("Selector", "string", 1),
];
const NODE: &[Column] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Roles", "string", 0),
    ("Age", "string", 0),
    ("Version", "string", 0),
    ("Internal-IP", "string", 1),
    ("External-IP", "string", 1),
    ("OS-Image", "string", 1),
    ("Kernel-Version", "string", 1),
    ("Container-Runtime", "string", 1),
];
const NAMESPACE: &[Column] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Age", "string", 0),
];
const CONFIGMAP: &[Column] = &[
    ("Name", "string", 0),
    ("Data", "integer", 0),
    ("Age", "string", 0),
];
const SECRET: &[Column] = &[
    ("Name", "string", 0),
    ("Type", "string", 0),
    ("Data", "integer", 0),
    ("Age", "string", 0),
];
const SERVICEACCOUNT: &[Column] = &[
    ("Name", "string", 0),
    ("Secrets", "string", 0),
    ("Age", "string", 0),
];
const EVENT: &[Column] = &[
    ("Last Seen", "string", 0),
    ("Type", "string", 0),
    ("Reason", "string", 0),
    ("Object", "string", 0),
    ("Subobject", "string", 1),
    ("Source", "string", 1),
    ("Message", "string", 0),
    ("First Seen", "string", 1),
    ("Count", "string", 1),
    ("Name", "string", 1),
];
const ENDPOINTS: &[Column] = &[
    ("Name", "string", 0),
    ("Endpoints", "string", 0),
    ("Age", "string", 0),
];
const PV: &[Column] = &[
    ("Name", "string", 0),
    ("Capacity", "string", 0),
    ("Access Modes", "string", 0),
    ("Reclaim Policy", "string", 0),
    ("Status", "string", 0),
    ("Claim", "string", 0),
    ("StorageClass", "string", 0),
    ("VolumeAttributesClass", "string", 0),
    ("Reason", "string", 0),
    ("Age", "string", 0),
    ("VolumeMode", "string", 1),
];
const PVC: &[Column] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Volume", "string", 0),
    ("Capacity", "string", 0),
    ("Access Modes", "string", 0),
    ("StorageClass", "string", 0),
    ("VolumeAttributesClass", "string", 0),
    ("Age", "string", 0),
    ("VolumeMode", "string", 1),
];

/// The columns of the core kinds printed here.
pub fn columns(kind: &Kind) -> Option<&'static [Column]> {
    Some(match (kind.group, kind.kind) {
        ("", "Pod") => POD,
        ("", "Service") => SERVICE,
        ("", "Node") => NODE,
        ("", "Namespace") => NAMESPACE,
        ("", "ConfigMap") => CONFIGMAP,
        ("", "Secret") => SECRET,
        ("", "ServiceAccount") => SERVICEACCOUNT,
        ("" | "events.k8s.io", "Event") => EVENT,
        ("", "Endpoints") => ENDPOINTS,
        ("", "PersistentVolume") => PV,
        ("", "PersistentVolumeClaim") => PVC,
        _ => return None,
    })
}

/// The cells of a core kind printed here.
pub fn cells(kind: &Kind, o: &Value) -> Option<Vec<Value>> {
    Some(match (kind.group, kind.kind) {
        ("", "Pod") => pod(o),
        ("", "Service") => service(o),
        ("", "Node") => node(o),
        ("", "Namespace") => vec![name(o), json!(s(o, "/status/phase")), age(o)],
        ("", "ConfigMap") => {
            let count = ["data", "binaryData"]
                .iter()
                .filter_map(|f| o.get(*f).and_then(Value::as_object))
                .map(|m| m.len())
                .sum::<usize>();
            vec![name(o), json!(count), age(o)]
        }
        ("", "Secret") => {
            let count = o
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            vec![name(o), json!(s(o, "/type")), json!(count), age(o)]
        }
        ("", "ServiceAccount") => vec![
            name(o),
            json!(list(o, "/secrets").len().to_string()),
            age(o),
        ],
        ("", "Event") => event(o, false),
        ("events.k8s.io", "Event") => event(o, true),
        ("", "Endpoints") => vec![name(o), endpoints(o), age(o)],
        ("", "PersistentVolume") => pv(o),
        ("", "PersistentVolumeClaim") => pvc(o),
        _ => return None,
    })
}

fn pod(o: &Value) -> Vec<Value> {
    let statuses = list(o, "/status/containerStatuses");
    let total = list(o, "/spec/containers").len();
    let ready = statuses
        .iter()
        .filter(|c| c.get("ready") == Some(&json!(true)))
        .count();
    let restarts: i64 = statuses.iter().map(|c| i(c, "/restartCount")).sum();
    let mut reason = s(o, "/status/reason").to_string();
    if reason.is_empty() {
        reason = s(o, "/status/phase").to_string();
    }
    let inits = list(o, "/status/initContainerStatuses");
    let init_total = list(o, "/spec/initContainers").len();
    let mut initializing = false;
    for (n, status) in inits.iter().enumerate() {
        let terminated = status.pointer("/state/terminated");
        if terminated.is_some_and(|t| i(t, "/exitCode") == 0) {
            continue;
        }
        initializing = true;
        reason = match (terminated, s(status, "/state/waiting/reason")) {
            (Some(t), _) if !s(t, "/reason").is_empty() => format!("Init:{}", s(t, "/reason")),
            (Some(t), _) => format!("Init:ExitCode:{}", i(t, "/exitCode")),
            (None, waiting) if !waiting.is_empty() && waiting != "PodInitializing" => {
                format!("Init:{waiting}")
            }
            _ => format!("Init:{n}/{init_total}"),
        };
        break;
    }
    if !initializing {
        for status in statuses.iter().rev() {
            let waiting = s(status, "/state/waiting/reason");
            let terminated = status.pointer("/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = terminated {
                reason = match s(t, "/reason") {
                    "" if i(t, "/signal") != 0 => format!("Signal:{}", i(t, "/signal")),
                    "" => format!("ExitCode:{}", i(t, "/exitCode")),
                    r => r.to_string(),
                };
            }
        }
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() && s(o, "/status/reason") != "NodeLost" {
        reason = "Terminating".into();
    }
    let gates = list(o, "/spec/readinessGates");
    let gates_cell = if gates.is_empty() {
        json!("<none>")
    } else {
        let conditions = list(o, "/status/conditions");
        let met = gates
            .iter()
            .filter(|g| {
                conditions
                    .iter()
                    .any(|c| s(c, "/type") == s(g, "/conditionType") && s(c, "/status") == "True")
            })
            .count();
        json!(format!("{met}/{}", gates.len()))
    };
    vec![
        name(o),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts.to_string()),
        age(o),
        or_none(s(o, "/status/podIP")),
        or_none(s(o, "/spec/nodeName")),
        or_none(s(o, "/status/nominatedNodeName")),
        gates_cell,
    ]
}

fn service(o: &Value) -> Vec<Value> {
    let kind = match s(o, "/spec/type") {
        "" => "ClusterIP",
        t => t,
    };
    let mut external: Vec<String> = list(o, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    let external = match kind {
        "ExternalName" => or_none(s(o, "/spec/externalName")),
        "LoadBalancer" => {
            for ingress in list(o, "/status/loadBalancer/ingress") {
                let address = if s(ingress, "/ip").is_empty() {
                    s(ingress, "/hostname")
                } else {
                    s(ingress, "/ip")
                };
                external.push(address.to_string());
            }
            if external.is_empty() {
                json!("<pending>")
            } else {
                json!(external.join(","))
            }
        }
        _ => or_none(external.join(",")),
    };
    let ports: Vec<String> = list(o, "/spec/ports")
        .iter()
        .map(|p| {
            let protocol = match s(p, "/protocol") {
                "" => "TCP",
                proto => proto,
            };
            match i(p, "/nodePort") {
                0 => format!("{}/{protocol}", i(p, "/port")),
                node => format!("{}:{node}/{protocol}", i(p, "/port")),
            }
        })
        .collect();
    vec![
        name(o),
        json!(kind),
        or_none(s(o, "/spec/clusterIP")),
        external,
        or_none(ports.join(",")),
        age(o),
        label_map(o, "/spec/selector"),
    ]
}

fn node(o: &Value) -> Vec<Value> {
    let ready = list(o, "/status/conditions")
        .iter()
        .find(|c| s(c, "/type") == "Ready")
        .map(|c| s(c, "/status") == "True");
    let mut status = match ready {
        Some(true) => "Ready".to_string(),
        Some(false) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .filter(|r| !r.is_empty())
                        .map(str::to_string)
                        .or_else(|| {
                            (k == "kubernetes.io/role")
                                .then(|| v.as_str().unwrap_or("").to_string())
                        })
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let address = |kind: &str| {
        or_none(
            list(o, "/status/addresses")
                .iter()
                .find(|a| s(a, "/type") == kind)
                .map(|a| s(a, "/address"))
                .unwrap_or(""),
        )
    };
    vec![
        name(o),
        json!(status),
        or_none(roles.join(",")),
        age(o),
        json!(s(o, "/status/nodeInfo/kubeletVersion")),
        address("InternalIP"),
        address("ExternalIP"),
        json!(match s(o, "/status/nodeInfo/osImage") {
            "" => "<unknown>",
            image => image,
        }),
        json!(match s(o, "/status/nodeInfo/kernelVersion") {
            "" => "<unknown>",
            kernel => kernel,
        }),
        json!(match s(o, "/status/nodeInfo/containerRuntimeVersion") {
            "" => "<unknown>",
            runtime => runtime,
        }),
    ]
}

fn event(o: &Value, new_api: bool) -> Vec<Value> {
    let (object, source, note, last, first, count) = if new_api {
        let last = if !s(o, "/series/lastObservedTime").is_empty() {
            age_at(o, "/series/lastObservedTime")
        } else if !s(o, "/deprecatedLastTimestamp").is_empty() {
            age_at(o, "/deprecatedLastTimestamp")
        } else {
            age_at(o, "/eventTime")
        };
        let count = match i(o, "/series/count") {
            0 => i(o, "/deprecatedCount").max(1),
            n => n,
        };
        (
            "/regarding",
            s(o, "/reportingController").to_string(),
            s(o, "/note"),
            last,
            age_at(o, "/deprecatedFirstTimestamp"),
            count,
        )
    } else {
        let last = if s(o, "/lastTimestamp").is_empty() {
            age_at(o, "/eventTime")
        } else {
            age_at(o, "/lastTimestamp")
        };
        let source = match (s(o, "/source/component"), s(o, "/source/host")) {
            ("", _) => s(o, "/reportingComponent").to_string(),
            (c, "") => c.to_string(),
            (c, h) => format!("{c}, {h}"),
        };
        (
            "/involvedObject",
            source,
            s(o, "/message"),
            last,
            age_at(o, "/firstTimestamp"),
            i(o, "/count").max(1),
        )
    };
    let target = format!(
        "{}/{}",
        s(o, &format!("{object}/kind")).to_lowercase(),
        s(o, &format!("{object}/name"))
    );
    vec![
        json!(last),
        json!(s(o, "/type")),
        json!(s(o, "/reason")),
        json!(target),
        json!(s(o, &format!("{object}/fieldPath"))),
        json!(source),
        json!(note.trim()),
        json!(first),
        json!(count.to_string()),
        name(o),
    ]
}

fn endpoints(o: &Value) -> Value {
    let mut all = Vec::new();
    for subset in list(o, "/subsets") {
        let ports = list(subset, "/ports");
        for address in list(subset, "/addresses") {
            let ip = s(address, "/ip");
            if ports.is_empty() {
                all.push(ip.to_string());
            }
            for port in ports {
                all.push(format!("{ip}:{}", i(port, "/port")));
            }
        }
    }
    let shown = all.len().min(3);
    let mut text = all[..shown].join(",");
    if all.len() > shown {
        text.push_str(&format!(" + {} more...", all.len() - shown));
    }
    or_none(text)
}

/// Access modes abbreviated as kubectl prints them.
pub fn access_modes(o: &Value, pointer: &str) -> Value {
    let modes: Vec<&str> = list(o, pointer)
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect();
    json!(modes.join(","))
}

fn pv(o: &Value) -> Vec<Value> {
    let claim = match (
        s(o, "/spec/claimRef/namespace"),
        s(o, "/spec/claimRef/name"),
    ) {
        (_, "") => String::new(),
        (ns, n) => format!("{ns}/{n}"),
    };
    let status = if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else {
        s(o, "/status/phase")
    };
    vec![
        name(o),
        json!(s(o, "/spec/capacity/storage")),
        access_modes(o, "/spec/accessModes"),
        json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
        json!(status),
        json!(claim),
        or_none(s(o, "/spec/storageClassName")),
        or_none(s(o, "/spec/volumeAttributesClassName")),
        json!(s(o, "/status/reason")),
        age(o),
        json!(match s(o, "/spec/volumeMode") {
            "" => "Filesystem",
            mode => mode,
        }),
    ]
}

fn pvc(o: &Value) -> Vec<Value> {
    let status = if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else {
        s(o, "/status/phase")
    };
    let bound = !s(o, "/spec/volumeName").is_empty();
    vec![
        name(o),
        json!(status),
        json!(s(o, "/spec/volumeName")),
        json!(if bound {
            s(o, "/status/capacity/storage")
        } else {
            ""
        }),
        if bound {
            access_modes(o, "/status/accessModes")
        } else {
            json!("")
        },
        or_none(s(o, "/spec/storageClassName")),
        or_none(s(o, "/status/currentVolumeAttributesClassName")),
        age(o),
        json!(match s(o, "/spec/volumeMode") {
            "" => "Filesystem",
            mode => mode,
        }),
    ]
}

//! Workloads: deployments, replicasets, statefulsets, daemonsets, replication controllers,
//! jobs and cronjobs, with the containers, images and selector of `-o wide`.

use serde_json::{Value, json};

use super::Column;
use super::cells::{age, age_at, containers, i, label_map, list, name, or_none, s, selector};
use crate::kinds::Kind;

const WIDE: [Column; 3] = [
    ("Containers", "string", 1),
    ("Images", "string", 1),
    ("Selector", "string", 1),
];

const DEPLOYMENT: &[Column] = &[
    ("Name", "string", 0),
    ("Ready", "string", 0),
    ("Up-to-date", "integer", 0),
    ("Available", "integer", 0),
    ("Age", "string", 0),
    WIDE[0],
    WIDE[1],
    WIDE[2],
];
const REPLICASET: &[Column] = &[
    ("Name", "string", 0),
    ("Desired", "integer", 0),
    ("Current", "integer", 0),
    ("Ready", "integer", 0),
    ("Age", "string", 0),
    WIDE[0],
    WIDE[1],
    WIDE[2],
];
const STATEFULSET: &[Column] = &[
    ("Name", "string", 0),
    ("Ready", "string", 0),
    ("Age", "string", 0),
    WIDE[0],
    WIDE[1],
];
const DAEMONSET: &[Column] = &[
    ("Name", "string", 0),
    ("Desired", "integer", 0),
    ("Current", "integer", 0),
    ("Ready", "integer", 0),
    ("Up-to-date", "integer", 0),
    ("Available", "integer", 0),
    ("Node Selector", "string", 0),
    ("Age", "string", 0),
    WIDE[0],
    WIDE[1],
    WIDE[2],
];
const JOB: &[Column] = &[
    ("Name", "string", 0),
    ("Status", "string", 0),
    ("Completions", "string", 0),
    ("Duration", "string", 0),
    ("Age", "string", 0),
    WIDE[0],
    WIDE[1],
    WIDE[2],
];
const CRONJOB: &[Column] = &[
    ("Name", "string", 0),
    ("Schedule", "string", 0),
    ("Timezone", "string", 0),
    ("Suspend", "boolean", 0),
    ("Active", "integer", 0),
    ("Last Schedule", "string", 0),
    ("Age", "string", 0),
    WIDE[0],
    WIDE[1],
    WIDE[2],
];

/// The columns of the workload kinds.
pub fn columns(kind: &Kind) -> Option<&'static [Column]> {
    Some(match (kind.group, kind.kind) {
        ("apps", "Deployment") => DEPLOYMENT,
        ("apps", "ReplicaSet") | ("", "ReplicationController") => REPLICASET,
        ("apps", "StatefulSet") => STATEFULSET,
        ("apps", "DaemonSet") => DAEMONSET,
        ("batch", "Job") => JOB,
        ("batch", "CronJob") => CRONJOB,
        _ => return None,
    })
}

fn wide(o: &Value, template: &str, with_selector: bool) -> Vec<Value> {
    let (names, images) = containers(o, template);
    let mut cells = vec![names, images];
    if with_selector {
        cells.push(selector(o, "/spec/selector"));
    }
    cells
}

/// The cells of a workload.
pub fn cells(kind: &Kind, o: &Value) -> Option<Vec<Value>> {
    let template = "/spec/template/spec";
    let mut row = match (kind.group, kind.kind) {
        ("apps", "Deployment") => vec![
            name(o),
            json!(format!(
                "{}/{}",
                i(o, "/status/readyReplicas"),
                i(o, "/spec/replicas")
            )),
            json!(i(o, "/status/updatedReplicas")),
            json!(i(o, "/status/availableReplicas")),
            age(o),
        ],
        ("apps", "ReplicaSet") | ("", "ReplicationController") => vec![
            name(o),
            json!(i(o, "/spec/replicas")),
            json!(i(o, "/status/replicas")),
            json!(i(o, "/status/readyReplicas")),
            age(o),
        ],
        ("apps", "StatefulSet") => vec![
            name(o),
            json!(format!(
                "{}/{}",
                i(o, "/status/readyReplicas"),
                i(o, "/spec/replicas")
            )),
            age(o),
        ],
        ("apps", "DaemonSet") => vec![
            name(o),
            json!(i(o, "/status/desiredNumberScheduled")),
            json!(i(o, "/status/currentNumberScheduled")),
            json!(i(o, "/status/numberReady")),
            json!(i(o, "/status/updatedNumberScheduled")),
            json!(i(o, "/status/numberAvailable")),
            label_map(o, "/spec/template/spec/nodeSelector"),
            age(o),
        ],
        ("batch", "Job") => job(o),
        ("batch", "CronJob") => {
            let last = if s(o, "/status/lastScheduleTime").is_empty() {
                "<none>".to_string()
            } else {
                age_at(o, "/status/lastScheduleTime")
            };
            let mut row = vec![
                name(o),
                json!(s(o, "/spec/schedule")),
                or_none(s(o, "/spec/timeZone")),
                json!(o.pointer("/spec/suspend") == Some(&json!(true))),
                json!(list(o, "/status/active").len()),
                json!(last),
                age(o),
            ];
            row.extend(wide(o, "/spec/jobTemplate/spec/template/spec", false));
            row.push(selector(o, "/spec/jobTemplate/spec/selector"));
            return Some(row);
        }
        _ => return None,
    };
    let with_selector = !matches!((kind.group, kind.kind), ("apps", "StatefulSet"));
    row.extend(wide(o, template, with_selector));
    Some(row)
}

fn job(o: &Value) -> Vec<Value> {
    let completions = match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(n) => format!("{}/{n}", i(o, "/status/succeeded")),
        None => {
            let parallelism = i(o, "/spec/parallelism");
            if parallelism > 1 {
                format!("{}/1 of {parallelism}", i(o, "/status/succeeded"))
            } else {
                format!("{}/1", i(o, "/status/succeeded"))
            }
        }
    };
    let condition = |kind: &str| {
        list(o, "/status/conditions")
            .iter()
            .any(|c| s(c, "/type") == kind && s(c, "/status") == "True")
    };
    let status = if condition("Complete") {
        "Complete"
    } else if condition("Failed") {
        "Failed"
    } else if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if condition("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if condition("FailureTarget") {
        "FailureTarget"
    } else if condition("Suspended") {
        "Suspended"
    } else {
        "Running"
    };
    let start = s(o, "/status/startTime");
    let duration = match (
        chrono::DateTime::parse_from_rfc3339(start),
        s(o, "/status/completionTime"),
    ) {
        (Ok(begin), "") => crate::table::human_age(
            (chrono::Utc::now() - begin.with_timezone(&chrono::Utc)).num_seconds(),
        ),
        (Ok(begin), end) => match chrono::DateTime::parse_from_rfc3339(end) {
            Ok(end) => crate::table::human_age((end - begin).num_seconds()),
            Err(_) => String::new(),
        },
        (Err(_), _) => String::new(),
    };
    vec![
        name(o),
        json!(status),
        json!(completions),
        json!(duration),
        age(o),
    ]
}

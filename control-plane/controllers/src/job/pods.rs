//! The Job's pods: built from the template, and read back (finished, failed, index).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

pub use crate::podutil::{is_active, is_ready, is_terminal};

/// The finalizer that keeps a finished pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation (and label) carrying an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
const JOB_NAME: &str = "batch.kubernetes.io/job-name";

/// A pod for `job` from its template; `index` for Indexed Jobs.
pub fn from_template(job: &Job, index: Option<i32>) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    // The API server puts these in the template already; set them again for Jobs with a
    // manual selector and templates written before they existed.
    for (key, value) in [
        (CONTROLLER_UID, &uid),
        (JOB_NAME, &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        labels.entry(key.into()).or_insert_with(|| value.clone());
    }
    let mut spec = template.spec.unwrap_or_default();
    let generate_name = match index {
        Some(index) => {
            annotations.insert(COMPLETION_INDEX.into(), index.to_string());
            labels.insert(COMPLETION_INDEX.into(), index.to_string());
            if spec.hostname.is_none() {
                spec.hostname = Some(format!("{name}-{index}"));
            }
            add_index_env(&mut spec);
            format!("{name}-{index}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(vec![TRACKING_FINALIZER.into()]),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name,
                uid,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// `JOB_COMPLETION_INDEX` from the annotation, in every container, as upstream adds it.
fn add_index_env(spec: &mut k8s_openapi::api::core::v1::PodSpec) {
    let env = EnvVar {
        name: "JOB_COMPLETION_INDEX".into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: format!("metadata.labels['{COMPLETION_INDEX}']"),
            }),
            ..EnvVarSource::default()
        }),
    };
    let containers = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten());
    for container in containers {
        let vars = container.env.get_or_insert_with(Vec::new);
        if !vars.iter().any(|v| v.name == env.name) {
            vars.push(env.clone());
        }
    }
}

/// The pod's phase, empty when unknown.
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Being deleted but not finished.
pub fn is_terminating(pod: &Pod) -> bool {
    !is_terminal(pod) && pod.metadata.deletion_timestamp.is_some()
}

/// Whether the node is done with a deleted pod: the kubelet (or a hollow node) has asked for
/// its removal with grace 0, so only the finalizer keeps it. Upstream's kubelet would have
/// set the Failed phase first; here the pod counts as failed from that point.
pub fn deletion_finished(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        && pod.metadata.deletion_grace_period_seconds == Some(0)
        && !is_terminal(pod)
}

/// Whether the pod carries the tracking finalizer.
pub fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == TRACKING_FINALIZER))
}

/// The completion index from the annotation, when valid.
pub fn index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse::<i32>()
        .ok()
        .filter(|i| *i >= 0)
}

/// The sum of the restarts of the pod's containers (restartPolicy OnFailure's failures).
pub fn restarts(pod: &Pod) -> i32 {
    let Some(status) = pod.status.as_ref() else {
        return 0;
    };
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum()
}

/// Whether the pod's controller owner is the Job with `uid`.
pub fn owned_by(pod: &Pod, uid: &str) -> bool {
    pod.metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|o| o.controller == Some(true) && o.uid == uid))
}

/// The pod's finalizers without the tracking one (for the patch that releases it).
pub fn finalizers_without_tracking(pod: &Pod) -> Vec<String> {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != TRACKING_FINALIZER)
        .cloned()
        .collect()
}

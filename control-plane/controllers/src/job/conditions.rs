//! The Job's conditions as upstream writes them: set with both timestamps, changed only when
//! status, reason or message change.

use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The reason and message of a finished (or finishing) Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// `SuccessCriteriaMet` or `FailureTarget` (then `Complete` or `Failed`).
    pub interim: &'static str,
    /// The reason.
    pub reason: String,
    /// The message.
    pub message: String,
}

impl Finish {
    /// Success by completions.
    pub fn completions_reached() -> Finish {
        Finish {
            interim: "SuccessCriteriaMet",
            reason: "CompletionsReached".into(),
            message: "Reached expected number of succeeded pods".into(),
        }
    }

    /// A failure with `reason` and `message`.
    pub fn failure(reason: &str, message: &str) -> Finish {
        Finish {
            interim: "FailureTarget",
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// The terminal condition type that follows the interim one.
    pub fn terminal(&self) -> &'static str {
        if self.interim == "SuccessCriteriaMet" {
            "Complete"
        } else {
            "Failed"
        }
    }
}

/// The condition of `kind` when it is True.
pub fn true_condition<'a>(status: &'a JobStatus, kind: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == kind && c.status == "True")
}

/// Whether the Job is Complete or Failed.
pub fn is_finished(status: &JobStatus) -> bool {
    true_condition(status, "Complete").is_some() || true_condition(status, "Failed").is_some()
}

/// The interim condition already recorded, if any.
pub fn recorded_finish(status: &JobStatus) -> Option<Finish> {
    for interim in ["FailureTarget", "SuccessCriteriaMet"] {
        if let Some(c) = true_condition(status, interim) {
            return Some(Finish {
                interim: if interim == "FailureTarget" {
                    "FailureTarget"
                } else {
                    "SuccessCriteriaMet"
                },
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            });
        }
    }
    None
}

/// Sets condition `kind`; a condition already so is left alone (its times kept).
pub fn set(
    status: &mut JobStatus,
    kind: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: &Time,
) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == kind) {
        if existing.status == value
            && existing.reason.as_deref() == Some(reason)
            && existing.message.as_deref() == Some(message)
        {
            return;
        }
        if existing.status != value {
            existing.last_transition_time = Some(now.clone());
        }
        existing.status = value.into();
        existing.reason = Some(reason.into());
        existing.message = Some(message.into());
        existing.last_probe_time = Some(now.clone());
        return;
    }
    conditions.push(JobCondition {
        type_: kind.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    });
}

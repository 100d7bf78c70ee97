//! A Deployment's status and conditions (upstream's calculateStatus, syncRolloutStatus and the
//! progress-deadline checks).

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus, ReplicaSet};

use super::rollout::Run;
use super::util::{self, rs_actual, rs_available, rs_ready, rs_replicas};
use crate::replicaset::SyncError;

impl Run<'_> {
    /// The status the ReplicaSets give, with the Available condition.
    pub(crate) fn calculate_status(
        &self,
        old: &[ReplicaSet],
        new_rs: Option<&ReplicaSet>,
    ) -> DeploymentStatus {
        let all: Vec<&ReplicaSet> = old.iter().chain(new_rs).collect();
        let available: i32 = all.iter().map(|rs| rs_available(rs)).sum();
        let total: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
        let current = self.d.status.clone().unwrap_or_default();
        let mut status = DeploymentStatus {
            observed_generation: Some(self.d.metadata.generation.unwrap_or(0)),
            replicas: Some(all.iter().map(|rs| rs_actual(rs)).sum()),
            updated_replicas: Some(new_rs.map(rs_actual).unwrap_or(0)),
            ready_replicas: Some(all.iter().map(|rs| rs_ready(rs)).sum()),
            available_replicas: Some(available),
            unavailable_replicas: Some((total - available).max(0)),
            collision_count: current.collision_count,
            conditions: current.conditions.clone(),
            terminating_replicas: current.terminating_replicas,
        };
        let desired = util::replicas(&self.d);
        let condition = if available >= desired - util::max_unavailable(&self.d) {
            util::new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            )
        } else {
            util::new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            )
        };
        util::set_condition(&mut status, condition);
        status
    }

    /// Every replica updated and available, for the latest generation.
    pub(crate) fn complete(&self, status: &DeploymentStatus) -> bool {
        let desired = util::replicas(&self.d);
        status.updated_replicas == Some(desired)
            && status.replicas == Some(desired)
            && status.available_replicas == Some(desired)
            && status.observed_generation.unwrap_or(0) >= self.d.metadata.generation.unwrap_or(0)
    }

    fn progressing(&self, status: &DeploymentStatus) -> bool {
        let old = self.d.status.clone().unwrap_or_default();
        let get = |v: Option<i32>| v.unwrap_or(0);
        let old_old = get(old.replicas) - get(old.updated_replicas);
        let new_old = get(status.replicas) - get(status.updated_replicas);
        get(status.updated_replicas) > get(old.updated_replicas)
            || new_old < old_old
            || get(status.ready_replicas) > get(old.ready_replicas)
            || get(status.available_replicas) > get(old.available_replicas)
    }

    fn timed_out(&self, status: &DeploymentStatus) -> bool {
        let Some(deadline) = util::progress_deadline(&self.d) else {
            return false;
        };
        let Some(condition) = util::condition(status, "Progressing") else {
            return false;
        };
        match condition.reason.as_deref() {
            Some("NewReplicaSetAvailable") => false,
            Some("ProgressDeadlineExceeded") => true,
            _ => condition.last_update_time.as_ref().is_some_and(|t| {
                t.0 + jiff::SignedDuration::from_secs(i64::from(deadline)) < jiff::Timestamp::now()
            }),
        }
    }

    /// Status only (scaling, paused, deleting): upstream's syncDeploymentStatus.
    pub(crate) async fn sync_status(
        &mut self,
        old: &[ReplicaSet],
        new_rs: Option<&ReplicaSet>,
    ) -> Result<(), SyncError> {
        let status = self.calculate_status(old, new_rs);
        if self.d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        self.write_status(status).await
    }

    /// Status with the Progressing condition; returns when to check the deadline again.
    pub(crate) async fn sync_rollout_status(
        &mut self,
        old: &[ReplicaSet],
        new_rs: Option<&ReplicaSet>,
    ) -> Result<Option<Duration>, SyncError> {
        let mut status = self.calculate_status(old, new_rs);
        let deadline = util::progress_deadline(&self.d);
        if deadline.is_none() {
            util::remove_condition(&mut status, "Progressing");
        }
        let current = self
            .d
            .status
            .as_ref()
            .and_then(|s| util::condition(s, "Progressing"))
            .cloned();
        let completed_before = status.replicas == status.updated_replicas
            && current.as_ref().and_then(|c| c.reason.as_deref()) == Some("NewReplicaSetAvailable");
        let subject = match new_rs.and_then(|rs| rs.metadata.name.clone()) {
            Some(name) => format!("ReplicaSet {name:?}"),
            None => format!("Deployment {:?}", self.name()),
        };
        if deadline.is_some() && !completed_before {
            if self.complete(&status) {
                util::set_condition(
                    &mut status,
                    util::new_condition(
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        format!("{subject} has successfully progressed."),
                    ),
                );
            } else if self.progressing(&status) {
                let mut condition = util::new_condition(
                    "Progressing",
                    "True",
                    "ReplicaSetUpdated",
                    format!("{subject} is progressing."),
                );
                // Progress moves lastUpdateTime, even with the same reason.
                if let Some(current) = &current {
                    if current.status == "True" {
                        condition.last_transition_time = current.last_transition_time.clone();
                    }
                    util::remove_condition(&mut status, "Progressing");
                }
                util::set_condition(&mut status, condition);
            } else if self.timed_out(&status) {
                util::set_condition(
                    &mut status,
                    util::new_condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        format!("{subject} has timed out progressing."),
                    ),
                );
            }
        }
        match replica_failure(old, new_rs) {
            Some(failure) => util::set_condition(&mut status, failure),
            None => util::remove_condition(&mut status, "ReplicaFailure"),
        }
        if self.d.status.as_ref() == Some(&status) {
            return Ok(self.requeue_stuck(&status));
        }
        self.write_status(status).await?;
        Ok(None)
    }

    /// When a rollout that made no progress must be looked at again for its deadline.
    fn requeue_stuck(&self, status: &DeploymentStatus) -> Option<Duration> {
        let deadline = util::progress_deadline(&self.d)?;
        let current = self
            .d
            .status
            .as_ref()
            .and_then(|s| util::condition(s, "Progressing"))?;
        if self.complete(status) || current.reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return None;
        }
        let updated = current.last_update_time.as_ref()?.0;
        let due = updated + jiff::SignedDuration::from_secs(i64::from(deadline));
        let after = due.duration_since(jiff::Timestamp::now());
        if after < jiff::SignedDuration::from_secs(1) {
            return Some(Duration::from_millis(100));
        }
        Some(Duration::try_from(after).unwrap_or_default() + Duration::from_secs(1))
    }
}

/// The new ReplicaSet's ReplicaFailure condition, else an old one's, as a Deployment condition.
fn replica_failure(old: &[ReplicaSet], new_rs: Option<&ReplicaSet>) -> Option<DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "ReplicaFailure")
            .map(|c| DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.clone(),
                last_update_time: c.last_transition_time.clone(),
            })
    };
    new_rs
        .and_then(failure)
        .or_else(|| old.iter().find_map(failure))
}

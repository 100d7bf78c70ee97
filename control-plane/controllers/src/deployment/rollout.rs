//! One sync of a Deployment (upstream's syncDeployment and its rollout strategies).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::util::{self, rs_actual, rs_available, rs_replicas};
use super::{Controller, reference, selector_of};
use crate::replicaset::SyncError;
use crate::replicaset::claim::not_found;
use crate::replicaset::podutil;

/// The state of one sync: the Deployment as this sync changes it.
pub(crate) struct Run<'a> {
    pub(crate) ctl: &'a Controller,
    pub(crate) d: Deployment,
}

fn uid(rs: &ReplicaSet) -> Option<&str> {
    rs.metadata.uid.as_deref()
}

/// ReplicaSets with replicas (spec) above zero (FilterActiveReplicaSets).
pub(crate) fn active(rss: &[ReplicaSet]) -> Vec<ReplicaSet> {
    rss.iter()
        .filter(|rs| rs_replicas(rs) > 0)
        .cloned()
        .collect()
}

impl<'a> Run<'a> {
    pub(crate) fn new(ctl: &'a Controller, d: Deployment) -> Run<'a> {
        Run { ctl, d }
    }

    pub(crate) fn namespace(&self) -> String {
        self.d.metadata.namespace.clone().unwrap_or_default()
    }

    pub(crate) fn name(&self) -> String {
        self.d.metadata.name.clone().unwrap_or_default()
    }

    fn rs_api(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.ctl.client.clone(), &self.namespace())
    }

    pub(crate) fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.ctl.client.clone(), &self.namespace())
    }

    fn spec(&self) -> k8s_openapi::api::apps::v1::DeploymentSpec {
        self.d.spec.clone().unwrap_or_default()
    }

    /// Returns when to look again (progress deadline), if ever.
    pub(crate) async fn sync(&mut self) -> Result<Option<Duration>, SyncError> {
        let Some(selector) = selector_of(&self.d) else {
            return Err(SyncError::Invalid(format!(
                "{}: invalid selector",
                self.name()
            )));
        };
        if selector.is_empty() {
            self.ctl.events.warning(
                reference(&self.d),
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            let generation = self.d.metadata.generation.unwrap_or(0);
            let status = self.d.status.clone().unwrap_or_default();
            if status.observed_generation.unwrap_or(0) < generation {
                let mut status = status;
                status.observed_generation = Some(generation);
                self.write_status(status).await?;
            }
            return Ok(None);
        }
        let rss = self.ctl.claim_replica_sets(&self.d, &selector).await?;
        let pods = self.ctl.pod_map(&self.d, &selector, &rss);
        if self.d.metadata.deletion_timestamp.is_some() {
            let (new_rs, old) = self.all_replica_sets(&rss, false).await?;
            self.sync_status(&old, new_rs.as_ref()).await?;
            return Ok(None);
        }
        self.check_paused_conditions().await?;
        if self.spec().paused == Some(true) {
            return self.sync_scaling(&rss).await;
        }
        if self.is_scaling_event(&rss).await? {
            return self.sync_scaling(&rss).await;
        }
        if util::is_recreate(&self.d) {
            self.rollout_recreate(&rss, &pods).await
        } else {
            self.rollout_rolling(&rss).await
        }
    }

    /// Writes the status (a merge patch of the whole status).
    pub(crate) async fn write_status(
        &mut self,
        status: k8s_openapi::api::apps::v1::DeploymentStatus,
    ) -> Result<(), SyncError> {
        let patch = json!({"status": status});
        match self
            .deployments()
            .patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                self.d.status = Some(status);
                Ok(())
            }
            Err(error) if not_found(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// Sets the Deployment's revision annotation through the status subresource, as upstream
    /// does (the Deployment status strategy lets annotations through): a write of the
    /// controller's own bookkeeping, not an edit of the user's Deployment.
    async fn write_revision(&mut self, revision: &str) -> Result<(), SyncError> {
        let current = self
            .d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(util::REVISION));
        if current.map(String::as_str) == Some(revision) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {util::REVISION: revision}}});
        self.deployments()
            .patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        self.d
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(util::REVISION.into(), revision.into());
        Ok(())
    }

    /// Paused and resumed rollouts get an Unknown Progressing condition, so that time spent
    /// paused never counts against the deadline.
    async fn check_paused_conditions(&mut self) -> Result<(), SyncError> {
        if util::progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let mut status = self.d.status.clone().unwrap_or_default();
        let reason = util::condition(&status, "Progressing").and_then(|c| c.reason.clone());
        if reason.as_deref() == Some("ProgressDeadlineExceeded") {
            return Ok(());
        }
        let paused_now = reason.as_deref() == Some("DeploymentPaused");
        let paused = self.spec().paused == Some(true);
        let condition = if paused && !paused_now {
            util::new_condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            )
        } else if !paused && paused_now {
            util::new_condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            )
        } else {
            return Ok(());
        };
        util::set_condition(&mut status, condition);
        self.write_status(status).await
    }

    /// (new ReplicaSet, every old ReplicaSet), creating the new one when asked to.
    pub(crate) async fn all_replica_sets(
        &mut self,
        rss: &[ReplicaSet],
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), SyncError> {
        let template = self.spec().template;
        let mut sorted = rss.to_vec();
        sorted.sort_by(util::by_creation);
        let found = sorted
            .iter()
            .find(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| util::equal_ignore_hash(t, &template))
            })
            .cloned();
        let old: Vec<ReplicaSet> = rss
            .iter()
            .filter(|rs| found.as_ref().is_none_or(|n| uid(n) != uid(rs)))
            .cloned()
            .collect();
        let new_rs = self.new_replica_set(found, &old, create).await?;
        Ok((new_rs, old))
    }

    /// Upstream's getNewReplicaSet: syncs the existing new ReplicaSet's annotations and the
    /// Deployment's revision, or creates it.
    async fn new_replica_set(
        &mut self,
        existing: Option<ReplicaSet>,
        old: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>, SyncError> {
        let new_revision = util::max_revision(old) + 1;
        let spec = self.spec();
        let min_ready = spec.min_ready_seconds;
        if let Some(existing) = existing {
            let mut copy = existing.clone();
            let annotations_changed =
                util::set_new_rs_annotations(&self.d, &mut copy, new_revision, true);
            let rs_spec = copy.spec.get_or_insert_with(Default::default);
            let min_ready_changed =
                rs_spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0);
            if annotations_changed || min_ready_changed {
                rs_spec.min_ready_seconds = min_ready;
                let name = copy.metadata.name.clone().unwrap_or_default();
                let updated = self
                    .rs_api()
                    .replace(&name, &PostParams::default(), &copy)
                    .await?;
                return Ok(Some(updated));
            }
            let revision = copy
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(util::REVISION))
                .cloned()
                .unwrap_or_default();
            self.write_revision(&revision).await?;
            let mut status = self.d.status.clone().unwrap_or_default();
            if util::progress_deadline(&self.d).is_some()
                && util::condition(&status, "Progressing").is_none()
            {
                let message = format!(
                    "Found new replica set {:?}",
                    copy.metadata.name.clone().unwrap_or_default()
                );
                util::set_condition(
                    &mut status,
                    util::new_condition("Progressing", "True", "FoundNewReplicaSet", message),
                );
                self.write_status(status).await?;
            }
            return Ok(Some(copy));
        }
        if !create {
            return Ok(None);
        }
        let mut template = spec.template.clone();
        let collision_count = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = util::compute_hash(&spec.template, collision_count);
        let labels = {
            let meta = template.metadata.get_or_insert_with(Default::default);
            let labels = meta.labels.get_or_insert_with(Default::default);
            labels.insert(util::HASH_LABEL.into(), hash.clone());
            labels.clone()
        };
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(util::HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", self.name());
        let mut new_rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace()),
                owner_references: Some(vec![podutil::controller_ref(
                    "apps/v1",
                    "Deployment",
                    &self.d.metadata,
                )]),
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: min_ready,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let mut all: Vec<ReplicaSet> = old.to_vec();
        all.push(new_rs.clone());
        let count = self.new_rs_replicas(&all, &new_rs)?;
        if let Some(spec) = new_rs.spec.as_mut() {
            spec.replicas = Some(count);
        }
        util::set_new_rs_annotations(&self.d, &mut new_rs, new_revision, false);
        let created = match self.rs_api().create(&PostParams::default(), &new_rs).await {
            Ok(created) => {
                if count > 0 {
                    self.ctl.events.normal(
                        reference(&self.d),
                        "ScalingReplicaSet",
                        format!("Scaled up replica set {name} from 0 to {count}"),
                    );
                }
                created
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let fresh = self.rs_api().get(&name).await?;
                let ours = podutil::controller_of(&fresh.metadata)
                    .is_some_and(|r| Some(r.uid.as_str()) == self.d.metadata.uid.as_deref());
                let same = fresh
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| util::equal_ignore_hash(t, &spec.template));
                if ours && same {
                    return Ok(Some(fresh));
                }
                // A hash collision: the next sync tries the next hash.
                let mut status = self.d.status.clone().unwrap_or_default();
                status.collision_count = Some(collision_count.unwrap_or(0) + 1);
                self.write_status(status).await?;
                return Err(SyncError::Invalid(format!(
                    "hash collision for replica set {name}; collisionCount raised"
                )));
            }
            Err(error) => {
                let error = SyncError::from(error);
                let message = format!(
                    "Failed to create new replica set {name:?}: {}",
                    crate::replicaset::manage::message(&error)
                );
                if util::progress_deadline(&self.d).is_some() {
                    let mut status = self.d.status.clone().unwrap_or_default();
                    util::set_condition(
                        &mut status,
                        util::new_condition(
                            "Progressing",
                            "False",
                            "ReplicaSetCreateError",
                            message.clone(),
                        ),
                    );
                    let _ = self.write_status(status).await;
                }
                self.ctl
                    .events
                    .warning(reference(&self.d), "ReplicaSetCreateError", message);
                return Err(error);
            }
        };
        self.write_revision(&new_revision.to_string()).await?;
        if util::progress_deadline(&self.d).is_some() {
            let mut status = self.d.status.clone().unwrap_or_default();
            util::set_condition(
                &mut status,
                util::new_condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    format!("Created new replica set {name:?}"),
                ),
            );
            self.write_status(status).await?;
        }
        Ok(Some(created))
    }

    /// How many replicas the new ReplicaSet may have now (upstream's NewRSNewReplicas).
    ///
    /// Unlike upstream, a ReplicaSet counts with the larger of its spec and its actual pods:
    /// pods of a ReplicaSet just scaled down still run until its controller deletes them, and
    /// counting them keeps the pods ever running within replicas + maxSurge.
    fn new_rs_replicas(&self, all: &[ReplicaSet], new_rs: &ReplicaSet) -> Result<i32, SyncError> {
        let desired = util::replicas(&self.d);
        let current_new = rs_replicas(new_rs);
        if !util::is_rolling(&self.d) {
            return Ok(desired);
        }
        let max_total = desired + util::max_surge(&self.d);
        let current: i32 = all
            .iter()
            .map(|rs| rs_replicas(rs).max(rs_actual(rs)))
            .sum();
        if current >= max_total {
            return Ok(current_new);
        }
        let up = (max_total - current).min(desired - current_new);
        Ok(current_new + up.max(0))
    }

    /// Sets a ReplicaSet's replicas (and replica annotations); returns whether the size changed
    /// and the ReplicaSet as stored.
    pub(crate) async fn scale_replica_set(
        &self,
        rs: &ReplicaSet,
        size: i32,
    ) -> Result<(bool, ReplicaSet), SyncError> {
        let desired = util::replicas(&self.d);
        let max = desired + util::max_surge(&self.d);
        let current = rs_replicas(rs);
        let size_changed = current != size;
        if !size_changed && !util::replicas_annotations_need_update(rs, desired, max) {
            return Ok((false, rs.clone()));
        }
        let mut copy = rs.clone();
        copy.spec.get_or_insert_with(Default::default).replicas = Some(size);
        util::set_replicas_annotations(&mut copy, desired, max);
        let name = copy.metadata.name.clone().unwrap_or_default();
        let updated = self
            .rs_api()
            .replace(&name, &PostParams::default(), &copy)
            .await?;
        if size_changed {
            let direction = if current < size { "up" } else { "down" };
            self.ctl.events.normal(
                reference(&self.d),
                "ScalingReplicaSet",
                format!("Scaled {direction} replica set {name} from {current} to {size}"),
            );
        }
        Ok((size_changed, updated))
    }

    async fn is_scaling_event(&mut self, rss: &[ReplicaSet]) -> Result<bool, SyncError> {
        let (new_rs, mut all) = self.all_replica_sets(rss, false).await?;
        all.extend(new_rs);
        let desired = util::replicas(&self.d);
        Ok(active(&all).iter().any(|rs| {
            util::int_annotation(rs, util::DESIRED_REPLICAS).is_some_and(|d| d != desired)
        }))
    }

    /// Scaling only (paused, or replicas changed): upstream's `sync`.
    async fn sync_scaling(&mut self, rss: &[ReplicaSet]) -> Result<Option<Duration>, SyncError> {
        let (new_rs, old) = self.all_replica_sets(rss, false).await?;
        let (new_rs, old) = self.scale(new_rs, old).await?;
        if self.spec().paused == Some(true) {
            self.cleanup(&old).await?;
        }
        self.sync_status(&old, new_rs.as_ref()).await?;
        Ok(None)
    }

    /// Upstream's scale: the only active ReplicaSet takes all replicas; a saturated new one
    /// leaves none to the old; otherwise (a rollout being resized) every active ReplicaSet gets
    /// its proportion of the change, the leftover going to the largest.
    async fn scale(
        &self,
        new_rs: Option<ReplicaSet>,
        old: Vec<ReplicaSet>,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), SyncError> {
        let desired = util::replicas(&self.d);
        let mut all: Vec<ReplicaSet> = old.clone();
        all.extend(new_rs.clone());
        let actives = active(&all);
        let only = match actives.len() {
            0 => new_rs.clone().or_else(|| {
                let mut sorted = old.clone();
                sorted.sort_by(|a, b| util::by_creation(b, a));
                sorted.into_iter().next()
            }),
            1 => actives.first().cloned(),
            _ => None,
        };
        let mut updated: HashMap<String, ReplicaSet> = HashMap::new();
        if let Some(rs) = only {
            if rs_replicas(&rs) != desired {
                let (_, rs) = self.scale_replica_set(&rs, desired).await?;
                updated.insert(uid(&rs).unwrap_or_default().into(), rs);
            }
        } else if new_rs.as_ref().is_some_and(|n| self.is_saturated(n)) {
            for rs in active(&old) {
                let (_, rs) = self.scale_replica_set(&rs, 0).await?;
                updated.insert(uid(&rs).unwrap_or_default().into(), rs);
            }
        } else if util::is_rolling(&self.d) {
            let mut actives = actives;
            let total: i32 = actives.iter().map(rs_replicas).sum();
            let allowed = if desired > 0 {
                desired + util::max_surge(&self.d)
            } else {
                0
            };
            let to_add = allowed - total;
            if to_add > 0 {
                actives.sort_by(util::by_size_newer);
            } else if to_add < 0 {
                actives.sort_by(util::by_size_older);
            }
            let mut added = 0;
            let mut sizes: Vec<i32> = Vec::new();
            for rs in &actives {
                if to_add != 0 {
                    let proportion = self.proportion(rs, to_add, added);
                    sizes.push(rs_replicas(rs) + proportion);
                    added += proportion;
                } else {
                    sizes.push(rs_replicas(rs));
                }
            }
            for (i, rs) in actives.iter().enumerate() {
                if i == 0 && to_add != 0 {
                    sizes[0] = (sizes[0] + to_add - added).max(0);
                }
                let (_, rs) = self.scale_replica_set(rs, sizes[i]).await?;
                updated.insert(uid(&rs).unwrap_or_default().into(), rs);
            }
        }
        let refresh = |rs: ReplicaSet| {
            updated
                .get(uid(&rs).unwrap_or_default())
                .cloned()
                .unwrap_or(rs)
        };
        Ok((new_rs.map(refresh), old.into_iter().map(refresh).collect()))
    }

    /// A ReplicaSet's share of `to_add` (upstream's GetProportion).
    fn proportion(&self, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
        if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
            return 0;
        }
        let fraction = self.fraction(rs);
        let allowed = to_add - added;
        if to_add > 0 {
            fraction.min(allowed)
        } else {
            fraction.max(allowed)
        }
    }

    fn fraction(&self, rs: &ReplicaSet) -> i32 {
        let desired = util::replicas(&self.d);
        if desired == 0 {
            return -rs_replicas(rs);
        }
        let max = desired + util::max_surge(&self.d);
        let before = match util::int_annotation(rs, util::MAX_REPLICAS).filter(|m| *m != 0) {
            Some(before) => before,
            None => {
                let replicas = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                if replicas == 0 {
                    return 0;
                }
                replicas
            }
        };
        let size = f64::from(rs_replicas(rs)) * f64::from(max) / f64::from(before);
        size.round() as i32 - rs_replicas(rs)
    }

    fn is_saturated(&self, rs: &ReplicaSet) -> bool {
        let desired = util::replicas(&self.d);
        util::int_annotation(rs, util::DESIRED_REPLICAS) == Some(desired)
            && rs_replicas(rs) == desired
            && rs_available(rs) == desired
    }

    /// RollingUpdate: scale the new ReplicaSet up within maxSurge, then the old ones down
    /// within maxUnavailable (unhealthy replicas first).
    async fn rollout_rolling(&mut self, rss: &[ReplicaSet]) -> Result<Option<Duration>, SyncError> {
        let (new_rs, mut old) = self.all_replica_sets(rss, true).await?;
        let Some(mut new_rs) = new_rs else {
            return Ok(None);
        };
        let desired = util::replicas(&self.d);
        // Scale up, if we can.
        let mut all = old.clone();
        all.push(new_rs.clone());
        let current = rs_replicas(&new_rs);
        if current != desired {
            let target = if current > desired {
                desired
            } else {
                self.new_rs_replicas(&all, &new_rs)?
            };
            let (scaled, updated) = self.scale_replica_set(&new_rs, target).await?;
            if scaled {
                return self.sync_rollout_status(&old, Some(&updated)).await;
            }
            new_rs = updated;
        }
        // Scale down, if we can.
        let (scaled_down, updated_old) = self.reconcile_old(old.clone(), &new_rs).await?;
        old = updated_old;
        if scaled_down {
            return self.sync_rollout_status(&old, Some(&new_rs)).await;
        }
        let status = self.calculate_status(&old, Some(&new_rs));
        if self.complete(&status) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(&old, Some(&new_rs)).await
    }

    /// Upstream's reconcileOldReplicaSets.
    async fn reconcile_old(
        &self,
        mut old: Vec<ReplicaSet>,
        new_rs: &ReplicaSet,
    ) -> Result<(bool, Vec<ReplicaSet>), SyncError> {
        let old_pods: i32 = active(&old).iter().map(rs_replicas).sum();
        if old_pods == 0 {
            return Ok((false, old));
        }
        let all_pods: i32 = old.iter().map(rs_replicas).sum::<i32>() + rs_replicas(new_rs);
        let min_available = util::replicas(&self.d) - util::max_unavailable(&self.d);
        let new_unavailable = rs_replicas(new_rs) - rs_available(new_rs);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok((false, old));
        }
        // Unhealthy replicas first: removing them costs no availability.
        old.sort_by(util::by_creation);
        let mut cleaned = 0;
        for rs in old.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let replicas = rs_replicas(rs);
            let unhealthy = replicas - rs_available(rs).min(replicas);
            if replicas == 0 || unhealthy == 0 {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(unhealthy);
            let (_, updated) = self.scale_replica_set(rs, replicas - down).await?;
            *rs = updated;
            cleaned += down;
        }
        let scaled = self.scale_down_old(&mut old, new_rs).await?;
        Ok((cleaned + scaled > 0, old))
    }

    /// Upstream's scaleDownOldReplicaSetsForRollingUpdate. Availability counts each
    /// ReplicaSet's available replicas at most up to its spec: a ReplicaSet just scaled down
    /// reports the pods it is about to delete as available until its controller has run.
    async fn scale_down_old(
        &self,
        old: &mut [ReplicaSet],
        new_rs: &ReplicaSet,
    ) -> Result<i32, SyncError> {
        let min_available = util::replicas(&self.d) - util::max_unavailable(&self.d);
        let counted = |rs: &ReplicaSet| rs_available(rs).min(rs_replicas(rs));
        let available: i32 = old.iter().map(counted).sum::<i32>() + counted(new_rs);
        if available <= min_available {
            return Ok(0);
        }
        old.sort_by(util::by_creation);
        let total = available - min_available;
        let mut scaled = 0;
        for rs in old.iter_mut() {
            if scaled >= total {
                break;
            }
            let replicas = rs_replicas(rs);
            if replicas == 0 {
                continue;
            }
            let down = replicas.min(total - scaled);
            let (_, updated) = self.scale_replica_set(rs, replicas - down).await?;
            *rs = updated;
            scaled += down;
        }
        Ok(scaled)
    }

    /// Recreate: every old pod gone before the new ReplicaSet gets any.
    async fn rollout_recreate(
        &mut self,
        rss: &[ReplicaSet],
        pods: &HashMap<String, Vec<Arc<Pod>>>,
    ) -> Result<Option<Duration>, SyncError> {
        let (new_rs, mut old) = self.all_replica_sets(rss, false).await?;
        let mut scaled_down = false;
        for rs in old.iter_mut() {
            if rs_replicas(rs) == 0 {
                continue;
            }
            let (scaled, updated) = self.scale_replica_set(rs, 0).await?;
            scaled_down |= scaled;
            *rs = updated;
        }
        if scaled_down {
            return self.sync_rollout_status(&old, new_rs.as_ref()).await;
        }
        if old_pods_running(new_rs.as_ref(), &old, pods) {
            return self.sync_rollout_status(&old, new_rs.as_ref()).await;
        }
        let (new_rs, old) = match new_rs {
            Some(new_rs) => (Some(new_rs), old),
            None => self.all_replica_sets(rss, true).await?,
        };
        let Some(mut new_rs) = new_rs else {
            return Ok(None);
        };
        let desired = util::replicas(&self.d);
        if rs_replicas(&new_rs) != desired {
            let (_, updated) = self.scale_replica_set(&new_rs, desired).await?;
            new_rs = updated;
        }
        let status = self.calculate_status(&old, Some(&new_rs));
        if self.complete(&status) {
            self.cleanup(&old).await?;
        }
        self.sync_rollout_status(&old, Some(&new_rs)).await
    }

    /// Deletes the oldest scaled-down ReplicaSets beyond revisionHistoryLimit.
    async fn cleanup(&self, old: &[ReplicaSet]) -> Result<(), SyncError> {
        let Some(limit) = self.spec().revision_history_limit else {
            return Ok(());
        };
        let mut cleanable: Vec<ReplicaSet> = old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        let excess = cleanable.len() as i64 - i64::from(limit);
        if excess <= 0 {
            return Ok(());
        }
        cleanable.sort_by(util::by_revision);
        for rs in cleanable.iter().take(excess as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if rs_actual(rs) != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            let name = rs.metadata.name.clone().unwrap_or_default();
            tracing::info!(replicaset = %name, "deleting old replica set beyond the history limit");
            match self.rs_api().delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(error) if not_found(&error) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
}

/// Whether an old ReplicaSet still has pods that are not finished, terminating ones included.
fn old_pods_running(
    new_rs: Option<&ReplicaSet>,
    old: &[ReplicaSet],
    pods: &HashMap<String, Vec<Arc<Pod>>>,
) -> bool {
    if old.iter().map(rs_actual).sum::<i32>() > 0 {
        return true;
    }
    let new_uid = new_rs.and_then(uid);
    pods.iter()
        .filter(|(rs_uid, _)| Some(rs_uid.as_str()) != new_uid)
        .flat_map(|(_, pods)| pods)
        .any(|pod| !matches!(podutil::phase(pod), "Failed" | "Succeeded"))
}

//! The kubelet's cgroup layout: `kubepods/` (Guaranteed pods), `kubepods/burstable/`,
//! `kubepods/besteffort/`, then `pod<uid>/`, below a configurable root.

use capstan_cgroups::{CgroupError, Hierarchy, Limits};
use k8s_openapi::api::core::v1::Pod;

use crate::pods::resources::{self, MIN_SHARES, QosClass};

/// Pod cgroups below one root.
#[derive(Debug, Clone)]
pub struct PodCgroups {
    hierarchy: Hierarchy,
    kubepods: String,
    memory_qos: bool,
    pids_limit: Option<i64>,
}

impl PodCgroups {
    /// Pods go below `root`/kubepods (`root` absolute within the hierarchy, e.g. the agent's own
    /// cgroup when the host's root is not delegated to it).
    pub fn new(
        hierarchy: Hierarchy,
        root: &str,
        memory_qos: bool,
        pids_limit: Option<i64>,
    ) -> Self {
        PodCgroups {
            hierarchy,
            kubepods: format!("{}/kubepods", root.trim_end_matches('/')),
            memory_qos,
            pids_limit,
        }
    }

    /// The hierarchy.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// The kubepods cgroup path.
    pub fn kubepods(&self) -> &str {
        &self.kubepods
    }

    /// Creates kubepods and its QoS children and sizes kubepods to the allocatable resources.
    pub fn ensure_tree(
        &self,
        allocatable_cpu_millis: i64,
        allocatable_memory: i64,
    ) -> Result<(), CgroupError> {
        self.hierarchy.create(&self.kubepods)?;
        self.hierarchy.apply(
            &self.kubepods,
            &Limits {
                cpu_shares: Some(resources::millis_to_shares(allocatable_cpu_millis)),
                memory_limit: (allocatable_memory > 0).then_some(allocatable_memory),
                ..Default::default()
            },
        )?;
        for qos in [QosClass::Burstable, QosClass::BestEffort] {
            let path = self.qos_path(qos);
            self.hierarchy.create(&path)?;
            if qos == QosClass::BestEffort {
                self.hierarchy.apply(
                    &path,
                    &Limits {
                        cpu_shares: Some(MIN_SHARES),
                        ..Default::default()
                    },
                )?;
            }
        }
        Ok(())
    }

    /// The cgroup of a QoS class.
    pub fn qos_path(&self, qos: QosClass) -> String {
        match qos {
            QosClass::Guaranteed => self.kubepods.clone(),
            QosClass::Burstable => format!("{}/burstable", self.kubepods),
            QosClass::BestEffort => format!("{}/besteffort", self.kubepods),
        }
    }

    /// The cgroup of `pod`.
    pub fn pod_path(&self, pod: &Pod) -> String {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        format!("{}/pod{uid}", self.qos_path(resources::qos_class(pod)))
    }

    /// Creates the pod's cgroup with its values and returns its path.
    pub fn ensure_pod(&self, pod: &Pod) -> Result<String, CgroupError> {
        let path = self.pod_path(pod);
        self.hierarchy.create(&path)?;
        let mut limits = resources::pod_cgroup_limits(pod, self.memory_qos);
        limits.pids_max = self.pids_limit;
        self.hierarchy.apply(&path, &limits)?;
        Ok(path)
    }

    /// Sets the burstable class's cpu.shares to the sum of its pods' requests, as the kubelet's
    /// QoS manager does.
    pub fn size_burstable(&self, requested_cpu_millis: i64) -> Result<(), CgroupError> {
        self.hierarchy.apply(
            &self.qos_path(QosClass::Burstable),
            &Limits {
                cpu_shares: Some(resources::millis_to_shares(requested_cpu_millis)),
                ..Default::default()
            },
        )
    }

    /// Removes the pod's cgroup (its containers' cgroups are gone with them).
    pub fn remove_pod(&self, pod: &Pod) -> Result<(), CgroupError> {
        self.hierarchy.remove(&self.pod_path(pod))
    }
}

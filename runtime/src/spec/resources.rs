//! Cgroup limits from `LinuxContainerResources`. CRI uses 0 for "not set" throughout, so zero
//! fields stay out of the spec and the container inherits its parent's setting.
//!
//! `cpu.shares` goes into the spec as shares on both hierarchies: libcontainer turns it into
//! `cpu.weight` on v2 with the same corrected mapping as [`crate::cgroups::cpu_shares_to_weight`].

use std::collections::BTreeSet;

use capstan_proto::LinuxContainerResources;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
    LinuxResources, LinuxResourcesBuilder,
};

use super::{SpecError, SpecInputs};

const FIELD: &str = "linux.resources";

/// The optional controllers the request (and the pod's pids limit) has limits for, by their
/// cgroup names. The runtime compares them with what the host has to log the ones it skips.
pub fn controllers_used(
    r: Option<&LinuxContainerResources>,
    inputs: &SpecInputs,
) -> BTreeSet<&'static str> {
    let mut used = BTreeSet::new();
    if inputs.pids_limit.is_some() {
        used.insert("pids");
    }
    let Some(r) = r else { return used };
    if r.cpu_shares != 0 || r.cpu_period != 0 || r.cpu_quota != 0 {
        used.insert("cpu");
    }
    if !r.cpuset_cpus.is_empty() || !r.cpuset_mems.is_empty() {
        used.insert("cpuset");
    }
    if r.memory_limit_in_bytes != 0 || r.memory_swap_limit_in_bytes != 0 {
        used.insert("memory");
    }
    if !r.hugepage_limits.is_empty() {
        used.insert("hugetlb");
    }
    used
}

/// Whether the container's cgroup can use `controller`; limits of one it cannot are left out,
/// as runc leaves out controllers the host has not mounted, because libcontainer refuses the
/// whole container for them (v1) or fails writing a file that is not there (v2).
fn has(inputs: &SpecInputs, controller: &str) -> bool {
    inputs
        .cgroup_controllers
        .as_ref()
        .is_none_or(|available| available.contains(controller))
}

pub(super) fn resources(
    r: Option<&LinuxContainerResources>,
    inputs: &SpecInputs,
) -> Result<LinuxResources, SpecError> {
    let mut out = LinuxResourcesBuilder::default();
    if let Some(limit) = inputs.pids_limit.filter(|_| has(inputs, "pids")) {
        out = out.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }
    let Some(r) = r else {
        return Ok(out.build()?);
    };

    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if r.cpu_shares != 0 {
        let shares = u64::try_from(r.cpu_shares).map_err(|_| {
            SpecError::invalid(format!("{FIELD}.cpu_shares"), "must not be negative")
        })?;
        cpu = cpu.shares(shares);
        any_cpu = true;
    }
    if r.cpu_period != 0 {
        let period = u64::try_from(r.cpu_period).map_err(|_| {
            SpecError::invalid(format!("{FIELD}.cpu_period"), "must not be negative")
        })?;
        cpu = cpu.period(period);
        any_cpu = true;
    }
    if r.cpu_quota != 0 {
        // -1 is the kernel's "no limit"; anything lower is nonsense.
        if r.cpu_quota < -1 {
            return Err(SpecError::invalid(
                format!("{FIELD}.cpu_quota"),
                format!("{} is below -1", r.cpu_quota),
            ));
        }
        cpu = cpu.quota(r.cpu_quota);
        any_cpu = true;
    }
    // Validated whether or not the host has the controller: a bad request stays bad.
    if !has(inputs, "cpu") && any_cpu {
        cpu = LinuxCpuBuilder::default();
        any_cpu = false;
    }
    let with_cpuset = has(inputs, "cpuset");
    if !r.cpuset_cpus.is_empty() {
        let cpus = cpuset(&r.cpuset_cpus, "cpuset_cpus")?;
        if with_cpuset {
            cpu = cpu.cpus(cpus);
            any_cpu = true;
        }
    }
    if !r.cpuset_mems.is_empty() {
        let mems = cpuset(&r.cpuset_mems, "cpuset_mems")?;
        if with_cpuset {
            cpu = cpu.mems(mems);
            any_cpu = true;
        }
    }
    if any_cpu {
        out = out.cpu(cpu.build()?);
    }

    let mut memory = LinuxMemoryBuilder::default();
    let mut any_memory = false;
    if r.memory_limit_in_bytes != 0 {
        if r.memory_limit_in_bytes < 0 {
            return Err(SpecError::invalid(
                format!("{FIELD}.memory_limit_in_bytes"),
                "must not be negative",
            ));
        }
        memory = memory.limit(r.memory_limit_in_bytes);
        any_memory = true;
    }
    // Only when asked: on v1 writing memsw fails on hosts without swap accounting, so containerd's
    // "swap = limit" default would make such hosts unusable.
    if r.memory_swap_limit_in_bytes != 0 {
        if r.memory_swap_limit_in_bytes < -1 {
            return Err(SpecError::invalid(
                format!("{FIELD}.memory_swap_limit_in_bytes"),
                "must be -1 (unlimited) or positive",
            ));
        }
        memory = memory.swap(r.memory_swap_limit_in_bytes);
        any_memory = true;
    }
    if any_memory && has(inputs, "memory") {
        out = out.memory(memory.build()?);
    }

    let mut hugepages = Vec::new();
    for (i, h) in r.hugepage_limits.iter().enumerate() {
        if h.page_size.is_empty() {
            return Err(SpecError::invalid(
                format!("{FIELD}.hugepage_limits[{i}].page_size"),
                "must name a page size such as 2MB",
            ));
        }
        if let Some(sizes) = &inputs.hugepage_sizes
            && !sizes.contains(&h.page_size)
        {
            continue;
        }
        let limit = i64::try_from(h.limit).map_err(|_| {
            SpecError::invalid(format!("{FIELD}.hugepage_limits[{i}].limit"), "too large")
        })?;
        hugepages.push(
            LinuxHugepageLimitBuilder::default()
                .page_size(h.page_size.clone())
                .limit(limit)
                .build()?,
        );
    }
    if !hugepages.is_empty() && has(inputs, "hugetlb") {
        out = out.hugepage_limits(hugepages);
    }

    if !r.unified.is_empty() {
        if !inputs.cgroup_v2 {
            return Err(SpecError::invalid(
                format!("{FIELD}.unified"),
                "cgroup v2 settings on a host without the unified hierarchy",
            ));
        }
        out = out.unified(r.unified.clone());
    }
    Ok(out.build()?)
}

/// The kernel accepts -1000..=1000; kubelet computes it from the pod's QoS class.
pub(super) fn oom_score_adj(r: Option<&LinuxContainerResources>) -> Result<Option<i32>, SpecError> {
    let Some(r) = r else { return Ok(None) };
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return Err(SpecError::invalid(
            format!("{FIELD}.oom_score_adj"),
            format!("{} is outside -1000..=1000", r.oom_score_adj),
        ));
    }
    Ok(Some(r.oom_score_adj as i32))
}

/// A cpuset list such as `0-3,8`: checked here so the error names the field instead of
/// surfacing as a failed write deep in libcontainer.
fn cpuset(list: &str, field: &str) -> Result<String, SpecError> {
    let ok = list.split(',').all(|part| {
        let mut ends = part.trim().splitn(2, '-');
        let lo = ends.next().and_then(|s| s.parse::<u32>().ok());
        match (lo, ends.next()) {
            (Some(_), None) => true,
            (Some(lo), Some(hi)) => hi.parse::<u32>().is_ok_and(|hi| hi >= lo),
            _ => false,
        }
    });
    if !ok {
        return Err(SpecError::invalid(
            format!("{FIELD}.{field}"),
            format!("{list:?} is not a CPU/node list like 0-3,8"),
        ));
    }
    Ok(list.replace(' ', ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_proto::HugepageLimit;

    fn full() -> LinuxContainerResources {
        LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: 999,
            cpuset_cpus: "0-1,3".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![
                HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 4 << 20,
                },
                HugepageLimit {
                    page_size: "1GB".into(),
                    limit: 0,
                },
            ],
            unified: [("memory.high".to_string(), "50000000".to_string())].into(),
            memory_swap_limit_in_bytes: 0,
        }
    }

    fn v2() -> SpecInputs {
        SpecInputs {
            cgroup_v2: true,
            min_oom_score_adj: None,
            pids_limit: Some(1024),
            ..Default::default()
        }
    }

    #[test]
    fn maps_every_field() {
        let out = resources(Some(&full()), &v2()).unwrap();
        let cpu = out.cpu().clone().unwrap();
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1,3"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let mem = out.memory().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.swap(), None);
        assert_eq!(out.pids().as_ref().map(|p| p.limit()), Some(1024));
        let huge = out.hugepage_limits().clone().unwrap();
        assert_eq!(huge.len(), 2);
        assert_eq!(huge[0].page_size(), "2MB");
        assert_eq!(huge[0].limit(), 4 << 20);
        assert_eq!(out.unified().as_ref().unwrap()["memory.high"], "50000000");
        assert_eq!(oom_score_adj(Some(&full())).unwrap(), Some(999));
    }

    #[test]
    fn zero_means_unset() {
        let out = resources(
            Some(&LinuxContainerResources::default()),
            &SpecInputs::default(),
        )
        .unwrap();
        assert!(out.cpu().is_none());
        assert!(out.memory().is_none());
        assert!(out.pids().is_none());
        assert!(out.hugepage_limits().is_none());
        assert!(out.unified().is_none());
    }

    #[test]
    fn hugepage_sizes_the_host_lacks_are_dropped() {
        let inputs = SpecInputs {
            hugepage_sizes: Some(vec!["2MB".into()]),
            ..v2()
        };
        let huge = resources(Some(&full()), &inputs)
            .unwrap()
            .hugepage_limits()
            .clone()
            .unwrap();
        assert_eq!(huge.len(), 1);
        assert_eq!(huge[0].page_size(), "2MB");
    }

    #[test]
    fn limits_of_controllers_the_host_lacks_are_left_out() {
        // A hybrid host without a hugetlb hierarchy, as the kubelet's requests meet it: a zero
        // limit for every page size.
        let inputs = SpecInputs {
            cgroup_controllers: Some(["cpu", "memory"].into_iter().map(String::from).collect()),
            ..v2()
        };
        let mut r = full();
        r.unified.clear();
        let out = resources(Some(&r), &inputs).unwrap();
        assert!(out.hugepage_limits().is_none());
        assert!(out.pids().is_none());
        let cpu = out.cpu().clone().unwrap();
        assert_eq!((cpu.shares(), cpu.cpus().as_deref()), (Some(512), None));
        assert_eq!(out.memory().unwrap().limit(), Some(64 << 20));
        assert_eq!(
            controllers_used(Some(&r), &inputs),
            ["cpu", "cpuset", "hugetlb", "memory", "pids"].into()
        );
        // Bad values are still named when their controller is missing.
        r.cpuset_cpus = "3-1".into();
        let err = resources(Some(&r), &inputs).unwrap_err();
        assert!(err.to_string().contains("cpuset_cpus"), "{err}");
        // Nothing available: only an empty resources object is left.
        let none = SpecInputs {
            cgroup_controllers: Some(BTreeSet::new()),
            ..v2()
        };
        let out = resources(Some(&full()), &none).unwrap();
        assert!(out.cpu().is_none() && out.memory().is_none() && out.hugepage_limits().is_none());
    }

    #[test]
    fn unified_needs_v2() {
        let err = resources(Some(&full()), &SpecInputs::default()).unwrap_err();
        assert!(
            err.to_string().starts_with("linux.resources.unified: "),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        type Mutate = fn(&mut LinuxContainerResources);
        let cases: [(Mutate, &str); 6] = [
            (|r| r.cpu_shares = -2, "cpu_shares"),
            (|r| r.cpu_quota = -5, "cpu_quota"),
            (|r| r.memory_limit_in_bytes = -1, "memory_limit_in_bytes"),
            (|r| r.cpuset_cpus = "3-1".into(), "cpuset_cpus"),
            (|r| r.cpuset_mems = "a".into(), "cpuset_mems"),
            (
                |r| r.hugepage_limits[0].page_size.clear(),
                "hugepage_limits[0].page_size",
            ),
        ];
        for (mutate, field) in cases {
            let mut r = full();
            mutate(&mut r);
            let err = resources(Some(&r), &v2()).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("{FIELD}.{field}: ")),
                "{err}"
            );
        }
        let r = LinuxContainerResources {
            oom_score_adj: 1001,
            ..Default::default()
        };
        assert!(
            oom_score_adj(Some(&r))
                .unwrap_err()
                .to_string()
                .contains("oom_score_adj")
        );
    }

    #[test]
    fn unlimited_quota_and_swap_pass() {
        let r = LinuxContainerResources {
            cpu_quota: -1,
            memory_swap_limit_in_bytes: -1,
            ..Default::default()
        };
        let out = resources(Some(&r), &SpecInputs::default()).unwrap();
        assert_eq!(out.cpu().as_ref().and_then(|c| c.quota()), Some(-1));
        assert_eq!(out.memory().as_ref().and_then(|m| m.swap()), Some(-1));
    }
}

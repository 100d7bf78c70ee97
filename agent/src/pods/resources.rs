//! A pod's resources the way the kubelet reads them: quantities, effective requests and limits,
//! the QoS class, and the cgroup and CRI values that follow from them.

use std::collections::BTreeMap;

use capstan_cgroups::Limits;
use capstan_proto::LinuxContainerResources;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use crate::config::quantity::Quantity;

/// The CFS period the kubelet uses for every quota.
pub const CFS_PERIOD_US: u64 = 100_000;
/// The smallest cpu.shares (what BestEffort gets).
pub const MIN_SHARES: u64 = 2;

/// Kubernetes QoS classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QosClass {
    /// Every container has equal cpu and memory requests and limits.
    Guaranteed,
    /// Some request or limit, but not Guaranteed.
    Burstable,
    /// No request or limit at all.
    BestEffort,
}

impl QosClass {
    /// The name in PodStatus.qosClass.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// A non-negative quantity ("100m", "1.5", "1Gi", "500M", "1e3") in milli-units.
pub fn milli_value(text: &str) -> Option<i64> {
    let q = Quantity::parse(text).ok().filter(|q| !q.is_negative())?;
    Some(q.milli_value())
}

/// A non-negative quantity in whole units, a fraction rounded up as the API server does.
pub fn whole_value(text: &str) -> Option<i64> {
    let q = Quantity::parse(text).ok().filter(|q| !q.is_negative())?;
    Some(q.value())
}

/// CPU of a quantity in millicores.
pub fn cpu_millis(q: &ApiQuantity) -> i64 {
    milli_value(&q.0).unwrap_or(0)
}

/// Bytes of a quantity.
pub fn bytes(q: &ApiQuantity) -> i64 {
    whole_value(&q.0).unwrap_or(0)
}

/// cpu and memory of one requests or limits map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuMemory {
    /// Millicores, if set.
    pub cpu_millis: Option<i64>,
    /// Bytes, if set.
    pub memory: Option<i64>,
}

impl CpuMemory {
    fn from_map(map: Option<&BTreeMap<String, ApiQuantity>>) -> Self {
        CpuMemory {
            cpu_millis: map.and_then(|m| m.get("cpu")).map(cpu_millis),
            memory: map.and_then(|m| m.get("memory")).map(bytes),
        }
    }
}

/// A container's requests (defaulting to its limits, as the API server does) and limits.
pub fn container_requests_limits(container: &Container) -> (CpuMemory, CpuMemory) {
    let resources = container.resources.as_ref();
    let limits = CpuMemory::from_map(resources.and_then(|r| r.limits.as_ref()));
    let mut requests = CpuMemory::from_map(resources.and_then(|r| r.requests.as_ref()));
    requests.cpu_millis = requests.cpu_millis.or(limits.cpu_millis);
    requests.memory = requests.memory.or(limits.memory);
    (requests, limits)
}

fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

/// The containers of `pod` that count for its resources: app containers and sidecars run
/// together; plain init containers run one at a time before them.
fn all_containers(pod: &Pod) -> (Vec<&Container>, Vec<&Container>) {
    let spec = pod.spec.as_ref();
    let inits: Vec<&Container> = spec
        .and_then(|s| s.init_containers.as_ref())
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let mut running: Vec<&Container> = spec
        .map(|s| s.containers.iter().collect())
        .unwrap_or_default();
    running.extend(inits.iter().copied().filter(|c| is_sidecar(c)));
    let plain_inits = inits.into_iter().filter(|c| !is_sidecar(c)).collect();
    (running, plain_inits)
}

/// The pod's effective requests: the larger of what its long-running containers need together
/// and what its largest init container needs alone.
pub fn pod_requests(pod: &Pod) -> CpuMemory {
    let (running, inits) = all_containers(pod);
    let sum = |f: fn(&CpuMemory) -> Option<i64>| -> i64 {
        running
            .iter()
            .map(|c| f(&container_requests_limits(c).0).unwrap_or(0))
            .sum()
    };
    let max_init = |f: fn(&CpuMemory) -> Option<i64>| -> i64 {
        inits
            .iter()
            .map(|c| f(&container_requests_limits(c).0).unwrap_or(0))
            .max()
            .unwrap_or(0)
    };
    CpuMemory {
        cpu_millis: Some(sum(|r| r.cpu_millis).max(max_init(|r| r.cpu_millis))),
        memory: Some(sum(|r| r.memory).max(max_init(|r| r.memory))),
    }
}

/// The pod's limits, where every long-running container has one (otherwise unlimited).
pub fn pod_limits(pod: &Pod) -> CpuMemory {
    let (running, _) = all_containers(pod);
    let total = |f: fn(&CpuMemory) -> Option<i64>| -> Option<i64> {
        running
            .iter()
            .map(|c| f(&container_requests_limits(c).1))
            .sum()
    };
    CpuMemory {
        cpu_millis: total(|l| l.cpu_millis),
        memory: total(|l| l.memory),
    }
}

/// The QoS class of `pod`, by the kubelet's rules.
pub fn qos_class(pod: &Pod) -> QosClass {
    let spec = pod.spec.as_ref();
    let containers = spec
        .map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = true;
    for container in containers {
        let resources = container.resources.as_ref();
        let limits = CpuMemory::from_map(resources.and_then(|r| r.limits.as_ref()));
        let (requests, _) = container_requests_limits(container);
        let set = |v: Option<i64>| v.is_some_and(|v| v > 0);
        if set(requests.cpu_millis)
            || set(requests.memory)
            || set(limits.cpu_millis)
            || set(limits.memory)
        {
            any = true;
        }
        if !(set(limits.cpu_millis) && set(limits.memory))
            || requests.cpu_millis != limits.cpu_millis
            || requests.memory != limits.memory
        {
            guaranteed = false;
        }
    }
    match (any, guaranteed) {
        (false, _) => QosClass::BestEffort,
        (true, true) => QosClass::Guaranteed,
        (true, false) => QosClass::Burstable,
    }
}

/// cpu.shares for a cpu request in millicores (the kubelet's MilliCPUToShares).
pub fn millis_to_shares(millis: i64) -> u64 {
    if millis <= 0 {
        return MIN_SHARES;
    }
    ((millis as u64) * 1024 / 1000).max(MIN_SHARES)
}

/// CFS quota for a cpu limit in millicores (the kubelet's MilliCPUToQuota; at least 1 ms).
pub fn millis_to_quota(millis: i64) -> i64 {
    (millis * CFS_PERIOD_US as i64 / 1000).max(1000)
}

/// The values of the pod's own cgroup (`pod<uid>`).
pub fn pod_cgroup_limits(pod: &Pod, memory_qos: bool) -> Limits {
    let qos = qos_class(pod);
    let requests = pod_requests(pod);
    let limits = pod_limits(pod);
    let cpu_shares = match qos {
        QosClass::BestEffort => MIN_SHARES,
        _ => millis_to_shares(requests.cpu_millis.unwrap_or(0)),
    };
    Limits {
        cpu_shares: Some(cpu_shares),
        cpu_quota: limits
            .cpu_millis
            .map(|m| (millis_to_quota(m), CFS_PERIOD_US)),
        memory_limit: limits.memory,
        memory_min: if memory_qos && qos != QosClass::BestEffort {
            requests.memory
        } else {
            None
        },
        pids_max: None,
    }
}

/// The CRI resources of one container: shares, quota and memory limit from its spec, and the
/// OOM score adjustment of its QoS class relative to the node's memory.
pub fn container_resources(
    pod: &Pod,
    container: &Container,
    node_memory: i64,
) -> LinuxContainerResources {
    let (requests, limits) = container_requests_limits(container);
    let qos = qos_class(pod);
    let oom_score_adj = match qos {
        QosClass::Guaranteed => -997,
        QosClass::BestEffort => 1000,
        QosClass::Burstable => {
            let request = requests.memory.unwrap_or(0);
            let adj = if node_memory > 0 {
                1000 - (1000 * request as i128 / node_memory as i128) as i64
            } else {
                999
            };
            adj.clamp(2, 999)
        }
    };
    LinuxContainerResources {
        cpu_shares: millis_to_shares(requests.cpu_millis.unwrap_or(0)) as i64,
        cpu_period: if limits.cpu_millis.is_some() {
            CFS_PERIOD_US as i64
        } else {
            0
        },
        cpu_quota: limits.cpu_millis.map(millis_to_quota).unwrap_or(0),
        memory_limit_in_bytes: limits.memory.unwrap_or(0),
        oom_score_adj,
        ..Default::default()
    }
}

/// Memory QoS (cgroup v2): what a container's memory.min and memory.high become.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryQos {
    /// memory.high sits this far from the request towards the limit (`memoryThrottlingFactor`).
    pub throttling_factor: f64,
    /// Stands in for the limit of a container without one.
    pub allocatable_memory: i64,
}

const PAGE_SIZE: i64 = 4096;

/// The cgroup v2 files Memory QoS sets for a container: memory.min = its memory request, and
/// memory.high = request + factor × (limit − request), rounded down to a page, as the kubelet
/// computes them. Guaranteed containers (request = limit) get no memory.high.
pub fn memory_qos_files(container: &Container, qos: MemoryQos) -> Vec<(String, String)> {
    let (requests, limits) = container_requests_limits(container);
    let request = requests.memory.unwrap_or(0);
    let mut files = Vec::new();
    if request > 0 {
        files.push(("memory.min".to_string(), request.to_string()));
    }
    let limit = limits.memory.unwrap_or(qos.allocatable_memory);
    if limit > 0 && request < limit {
        let high = request as f64 + qos.throttling_factor * (limit - request) as f64;
        let high = (high as i64 / PAGE_SIZE) * PAGE_SIZE;
        if high > request {
            files.push(("memory.high".to_string(), high.to_string()));
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).expect("test pod parses")
    }

    #[test]
    fn quantities_parse_like_the_api_server() {
        assert_eq!(milli_value("100m"), Some(100));
        assert_eq!(milli_value("1.5"), Some(1500));
        assert_eq!(milli_value("2"), Some(2000));
        assert_eq!(whole_value("1Gi"), Some(1 << 30));
        assert_eq!(whole_value("500M"), Some(500_000_000));
        assert_eq!(whole_value("1e3"), Some(1000));
        assert_eq!(whole_value("64Ki"), Some(65536));
        assert_eq!(whole_value("1x"), None);
        assert_eq!(whole_value("-1"), None);
    }

    #[test]
    fn qos_classes() {
        let best = pod("spec: {containers: [{name: a, image: x}]}");
        assert_eq!(qos_class(&best), QosClass::BestEffort);
        let guaranteed = pod(
            "spec: {containers: [{name: a, image: x, resources: {limits: {cpu: 500m, memory: 64Mi}}}]}",
        );
        assert_eq!(qos_class(&guaranteed), QosClass::Guaranteed);
        let burstable = pod(
            "spec: {containers: [{name: a, image: x, resources: {requests: {cpu: 100m}, limits: {cpu: 500m, memory: 64Mi}}}]}",
        );
        assert_eq!(qos_class(&burstable), QosClass::Burstable);
        let mixed = pod(
            "spec: {containers: [{name: a, image: x, resources: {limits: {cpu: 1, memory: 1Gi}}}, {name: b, image: x}]}",
        );
        assert_eq!(qos_class(&mixed), QosClass::Burstable);
    }

    #[test]
    fn pod_cgroup_values() {
        let p = pod(
            "spec: {containers: [{name: a, image: x, resources: {limits: {cpu: 500m, memory: 64Mi}}}, {name: b, image: x, resources: {limits: {cpu: 250m, memory: 32Mi}}}]}",
        );
        let limits = pod_cgroup_limits(&p, true);
        assert_eq!(limits.cpu_shares, Some(768));
        assert_eq!(limits.cpu_quota, Some((75_000, 100_000)));
        assert_eq!(limits.memory_limit, Some(96 << 20));
        assert_eq!(limits.memory_min, Some(96 << 20));
        let unlimited = pod(
            "spec: {containers: [{name: a, image: x, resources: {requests: {cpu: 100m}}}, {name: b, image: x, resources: {limits: {memory: 32Mi}}}]}",
        );
        let limits = pod_cgroup_limits(&unlimited, false);
        assert_eq!(limits.cpu_shares, Some(102));
        assert_eq!(limits.cpu_quota, None);
        assert_eq!(
            limits.memory_limit, None,
            "one container has no memory limit"
        );
    }

    #[test]
    fn init_containers_count_by_their_maximum() {
        let p = pod(
            "spec: {initContainers: [{name: i, image: x, resources: {requests: {cpu: '2'}}}], containers: [{name: a, image: x, resources: {requests: {cpu: 500m, memory: 1Gi}}}]}",
        );
        let r = pod_requests(&p);
        assert_eq!(r.cpu_millis, Some(2000));
        assert_eq!(r.memory, Some(1 << 30));
    }

    #[test]
    fn memory_qos_follows_the_kubelets_formula() {
        let p = pod(
            "spec: {containers: [{name: a, image: x, resources: {requests: {memory: 100Mi}, limits: {memory: 200Mi}}}]}",
        );
        let c = &p.spec.as_ref().unwrap().containers[0];
        let qos = MemoryQos {
            throttling_factor: 0.9,
            allocatable_memory: 1 << 30,
        };
        let files = memory_qos_files(c, qos);
        assert_eq!(
            files[0],
            ("memory.min".to_string(), (100i64 << 20).to_string())
        );
        // 100Mi + 0.9 × 100Mi = 190Mi, a whole number of pages.
        assert_eq!(
            files[1],
            ("memory.high".to_string(), (190i64 << 20).to_string())
        );
        let guaranteed = pod(
            "spec: {containers: [{name: a, image: x, resources: {limits: {memory: 64Mi, cpu: 1}}}]}",
        );
        let files = memory_qos_files(&guaranteed.spec.as_ref().unwrap().containers[0], qos);
        assert_eq!(
            files,
            vec![("memory.min".to_string(), (64i64 << 20).to_string())]
        );
        let best = pod("spec: {containers: [{name: a, image: x}]}");
        let files = memory_qos_files(&best.spec.as_ref().unwrap().containers[0], qos);
        assert_eq!(files[0].0, "memory.high", "limit defaults to allocatable");
        assert_eq!(
            files[0].1,
            ((((1i64 << 30) as f64 * 0.9) as i64 / 4096) * 4096).to_string()
        );
    }

    #[test]
    fn oom_score_adjustments() {
        let g = pod(
            "spec: {containers: [{name: a, image: x, resources: {limits: {cpu: 1, memory: 1Gi}}}]}",
        );
        let c = &g.spec.as_ref().unwrap().containers[0];
        assert_eq!(container_resources(&g, c, 4 << 30).oom_score_adj, -997);
        let b =
            pod("spec: {containers: [{name: a, image: x, resources: {requests: {memory: 1Gi}}}]}");
        let c = &b.spec.as_ref().unwrap().containers[0];
        let r = container_resources(&b, c, 4 << 30);
        assert_eq!(r.oom_score_adj, 750);
        assert_eq!(r.memory_limit_in_bytes, 0);
        assert_eq!(r.cpu_shares, 2);
    }
}

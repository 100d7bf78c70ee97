//! ListMetricDescriptors and ListPodSandboxMetrics: cgroup, network and writable-layer readings
//! turned into cAdvisor-named samples, which the kubelet (feature gate
//! PodAndContainerStatsFromCRI) serves on /metrics/cadvisor as they are.
//!
//! The kubelet builds one Prometheus descriptor per MetricDescriptor and converts each sample's
//! value to a float without scaling it, so every value here is already in the unit its name
//! promises. Only the families this module really fills are listed: a descriptor without samples
//! would hide from dashboards that the runtime cannot measure it.

use MetricType::{Counter, Gauge};
use capstan_proto::{
    ContainerMetadata, ContainerMetrics, Metric, MetricDescriptor, MetricType, PodSandboxMetadata,
    PodSandboxMetrics, UInt64Value,
};

use super::PodManager;
use super::cgroup_stats::{self, CgroupUsage};
use super::container::has_exited;
use super::net_dev::{self, InterfaceCounters};
use super::record::{ContainerRecord, SandboxRecord, now_nanos};
use super::sandbox::sandbox_cgroup_parent;

/// Label keys of every sample, as the kubelet's cAdvisor labels its container metrics.
const BASE_LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// The label a family has beyond [`BASE_LABELS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extra {
    None,
    /// The network interface, for the pod-level network counters.
    Interface,
    /// The filesystem, for the writable layer's usage.
    Device,
}

impl Extra {
    fn key(self) -> Option<&'static str> {
        match self {
            Extra::None => None,
            Extra::Interface => Some("interface"),
            Extra::Device => Some("device"),
        }
    }
}

/// One metric family the runtime fills.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    extra: Extra,
}

const fn family(name: &'static str, help: &'static str, kind: MetricType, extra: Extra) -> Family {
    Family {
        name,
        help,
        kind,
        extra,
    }
}

const CPU_USAGE: Family = family(
    "container_cpu_usage_seconds_total",
    "Cumulative cpu time consumed in seconds.",
    Counter,
    Extra::None,
);
const CPU_USER: Family = family(
    "container_cpu_user_seconds_total",
    "Cumulative user cpu time consumed in seconds.",
    Counter,
    Extra::None,
);
const CPU_SYSTEM: Family = family(
    "container_cpu_system_seconds_total",
    "Cumulative system cpu time consumed in seconds.",
    Counter,
    Extra::None,
);
const MEMORY_USAGE: Family = family(
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed.",
    Gauge,
    Extra::None,
);
const MEMORY_WORKING_SET: Family = family(
    "container_memory_working_set_bytes",
    "Current working set in bytes.",
    Gauge,
    Extra::None,
);
const MEMORY_RSS: Family = family(
    "container_memory_rss",
    "Size of RSS in bytes.",
    Gauge,
    Extra::None,
);
const MEMORY_CACHE: Family = family(
    "container_memory_cache",
    "Number of bytes of page cache memory.",
    Gauge,
    Extra::None,
);
const OOM_EVENTS: Family = family(
    "container_oom_events_total",
    "Count of out of memory events observed for the container.",
    Counter,
    Extra::None,
);
const MEMORY_LIMIT: Family = family(
    "container_spec_memory_limit_bytes",
    "Memory limit for the container, 0 for none.",
    Gauge,
    Extra::None,
);
const PROCESSES: Family = family(
    "container_processes",
    "Number of processes running inside the container.",
    Gauge,
    Extra::None,
);
const LAST_SEEN: Family = family(
    "container_last_seen",
    "Last time a container was seen by the exporter.",
    Gauge,
    Extra::None,
);
const START_TIME: Family = family(
    "container_start_time_seconds",
    "Start time of the container since unix epoch in seconds.",
    Gauge,
    Extra::None,
);
const FS_USAGE: Family = family(
    "container_fs_usage_bytes",
    "Number of bytes that are consumed by the container on this filesystem.",
    Gauge,
    Extra::Device,
);
const RX_BYTES: Family = family(
    "container_network_receive_bytes_total",
    "Cumulative count of bytes received.",
    Counter,
    Extra::Interface,
);
const TX_BYTES: Family = family(
    "container_network_transmit_bytes_total",
    "Cumulative count of bytes transmitted.",
    Counter,
    Extra::Interface,
);
const RX_PACKETS: Family = family(
    "container_network_receive_packets_total",
    "Cumulative count of packets received.",
    Counter,
    Extra::Interface,
);
const TX_PACKETS: Family = family(
    "container_network_transmit_packets_total",
    "Cumulative count of packets transmitted.",
    Counter,
    Extra::Interface,
);
const RX_ERRORS: Family = family(
    "container_network_receive_errors_total",
    "Cumulative count of errors encountered while receiving.",
    Counter,
    Extra::Interface,
);
const TX_ERRORS: Family = family(
    "container_network_transmit_errors_total",
    "Cumulative count of errors encountered while transmitting.",
    Counter,
    Extra::Interface,
);

/// Every family, in the order ListMetricDescriptors returns them.
const FAMILIES: [&Family; 19] = [
    &CPU_USAGE,
    &CPU_USER,
    &CPU_SYSTEM,
    &MEMORY_USAGE,
    &MEMORY_WORKING_SET,
    &MEMORY_RSS,
    &MEMORY_CACHE,
    &OOM_EVENTS,
    &MEMORY_LIMIT,
    &PROCESSES,
    &LAST_SEEN,
    &START_TIME,
    &FS_USAGE,
    &RX_BYTES,
    &TX_BYTES,
    &RX_PACKETS,
    &TX_PACKETS,
    &RX_ERRORS,
    &TX_ERRORS,
];

/// The descriptors of every family this module fills (ListMetricDescriptors).
pub fn descriptors() -> Vec<MetricDescriptor> {
    FAMILIES
        .iter()
        .map(|f| MetricDescriptor {
            name: f.name.to_string(),
            help: f.help.to_string(),
            label_keys: BASE_LABELS
                .iter()
                .copied()
                .chain(f.extra.key())
                .map(str::to_string)
                .collect(),
        })
        .collect()
}

/// What a sample is about: the values of [`BASE_LABELS`], in their order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject([String; 6]);

impl Subject {
    /// A container of a pod: `name` is the container's name in the `k8s_` form the kubelet's
    /// dockershim gave containers, which cAdvisor reported and dashboards still match on.
    pub fn container(
        id: &str,
        metadata: Option<&ContainerMetadata>,
        image: &str,
        pod: Option<&PodSandboxMetadata>,
    ) -> Self {
        let (container, attempt) = metadata.map_or(("", 0), |m| (m.name.as_str(), m.attempt));
        Subject([
            container.to_string(),
            id.to_string(),
            image.to_string(),
            runtime_name(container, pod, attempt),
            pod.map(|p| p.namespace.clone()).unwrap_or_default(),
            pod.map(|p| p.name.clone()).unwrap_or_default(),
        ])
    }

    /// The pod itself: no container and no image, as cAdvisor labels a pod's own cgroup.
    pub fn pod(id: &str, pod: Option<&PodSandboxMetadata>) -> Self {
        Subject([
            String::new(),
            id.to_string(),
            String::new(),
            runtime_name("POD", pod, pod.map_or(0, |p| p.attempt)),
            pod.map(|p| p.namespace.clone()).unwrap_or_default(),
            pod.map(|p| p.name.clone()).unwrap_or_default(),
        ])
    }
}

fn runtime_name(container: &str, pod: Option<&PodSandboxMetadata>, attempt: u32) -> String {
    let (name, namespace, uid) = pod.map_or(("", "", ""), |p| {
        (p.name.as_str(), p.namespace.as_str(), p.uid.as_str())
    });
    format!("k8s_{container}_{name}_{namespace}_{uid}_{attempt}")
}

impl Family {
    /// A live sample (timestamp 0: the kubelet then stamps it with the scrape time).
    fn sample(&self, subject: &Subject, extra: Option<&str>, value: u64) -> Metric {
        Metric {
            name: self.name.to_string(),
            timestamp: 0,
            metric_type: self.kind as i32,
            label_values: subject
                .0
                .iter()
                .cloned()
                .chain(extra.map(str::to_string))
                .collect(),
            value: Some(UInt64Value { value }),
        }
    }
}

/// Whole seconds of `nanos`, truncated.
///
/// CRI carries values as integers and the kubelet does not scale them, so a `_seconds_total`
/// counter can only hold whole seconds: CRI-O divides its nanosecond counters by 10^9 the same
/// way, and Capstan follows it so both runtimes' series agree. `rate()` over the usual scrape
/// windows stays meaningful; sub-second precision is in CPU stats (ListContainerStats).
pub fn seconds(nanos: u64) -> u64 {
    nanos / NANOS_PER_SECOND
}

fn unix_seconds(nanos: i64) -> u64 {
    u64::try_from(nanos).map_or(0, seconds)
}

/// Samples of one cgroup (a container's or a pod's), plus when it was last seen (`now`) and
/// started, both Unix nanoseconds. Readings the cgroup does not have are left out.
pub fn cgroup_samples(
    subject: &Subject,
    usage: &CgroupUsage,
    started_at: i64,
    now: i64,
) -> Vec<Metric> {
    let readings = [
        (&CPU_USAGE, usage.cpu_nanos.map(seconds)),
        (&CPU_USER, usage.cpu_user_nanos.map(seconds)),
        (&CPU_SYSTEM, usage.cpu_system_nanos.map(seconds)),
        (&MEMORY_USAGE, usage.memory_bytes),
        (&MEMORY_WORKING_SET, usage.working_set_bytes),
        (&MEMORY_RSS, usage.rss_bytes),
        (&MEMORY_CACHE, usage.cache_bytes),
        (&OOM_EVENTS, usage.oom_kills),
        // cAdvisor reports an unlimited cgroup as 0; without a memory reading at all the cgroup
        // is gone or unreadable and there is no limit to speak of.
        (
            &MEMORY_LIMIT,
            usage.memory_bytes.map(|_| usage.limit_bytes.unwrap_or(0)),
        ),
        (&PROCESSES, usage.processes),
        (&LAST_SEEN, Some(unix_seconds(now))),
        (&START_TIME, Some(unix_seconds(started_at))),
    ];
    readings
        .into_iter()
        .filter_map(|(family, value)| value.map(|v| family.sample(subject, None, v)))
        .collect()
}

/// The writable layer's usage; `device` names the layer's directory, the filesystem cAdvisor
/// would name being shared by every container of the node.
pub fn layer_samples(subject: &Subject, device: &str, bytes: u64) -> Vec<Metric> {
    vec![FS_USAGE.sample(subject, Some(device), bytes)]
}

/// The counters of each of a pod's interfaces.
pub fn network_samples(subject: &Subject, interfaces: &[InterfaceCounters]) -> Vec<Metric> {
    interfaces
        .iter()
        .flat_map(|i| {
            [
                (&RX_BYTES, i.rx_bytes),
                (&TX_BYTES, i.tx_bytes),
                (&RX_PACKETS, i.rx_packets),
                (&TX_PACKETS, i.tx_packets),
                (&RX_ERRORS, i.rx_errors),
                (&TX_ERRORS, i.tx_errors),
            ]
            .map(|(family, value)| family.sample(subject, Some(&i.name), value))
        })
        .collect()
}

impl PodManager {
    /// ListPodSandboxMetrics: every ready sandbox with its pod-level samples (pod cgroup,
    /// network) and those of its running containers.
    pub async fn list_sandbox_metrics(&self) -> Vec<PodSandboxMetrics> {
        let pods: Vec<(SandboxRecord, Vec<ContainerRecord>)> = {
            let state = self.state.lock().await;
            state
                .sandboxes
                .values()
                .filter(|s| s.ready)
                .map(|s| {
                    let containers = state
                        .containers
                        .values()
                        .filter(|c| c.sandbox_id == s.id)
                        .cloned()
                        .collect();
                    (s.clone(), containers)
                })
                .collect()
        };
        pods.iter()
            .map(|(sandbox, containers)| self.sandbox_metrics_of(sandbox, containers))
            .collect()
    }

    fn sandbox_metrics_of(
        &self,
        sandbox: &SandboxRecord,
        containers: &[ContainerRecord],
    ) -> PodSandboxMetrics {
        let now = now_nanos();
        let pod = sandbox.config.metadata.as_ref();
        let subject = Subject::pod(&sandbox.id, pod);
        let cgroup = sandbox_cgroup_parent(&sandbox.config)
            .unwrap_or_else(|| self.default_pod_cgroup(&sandbox.id));
        let mut metrics = cgroup_samples(
            &subject,
            &cgroup_stats::read(&cgroup),
            sandbox.created_at,
            now,
        );
        if let Some(interfaces) = net_dev::read(sandbox) {
            metrics.extend(network_samples(&subject, &interfaces));
        }
        let container_metrics = containers
            .iter()
            // Stopped containers have no cgroup left to read and cAdvisor forgets them too.
            .filter(|c| c.started_at != 0 && !has_exited(c))
            .map(|c| ContainerMetrics {
                container_id: c.id.clone(),
                metrics: container_samples(c, pod, now),
            })
            .collect();
        PodSandboxMetrics {
            pod_sandbox_id: sandbox.id.clone(),
            metrics,
            container_metrics,
        }
    }
}

fn container_samples(
    container: &ContainerRecord,
    pod: Option<&PodSandboxMetadata>,
    now: i64,
) -> Vec<Metric> {
    let subject = Subject::container(
        &container.id,
        container.config.metadata.as_ref(),
        &container.image_name,
        pod,
    );
    let usage = if container.cgroups_path.is_empty() {
        CgroupUsage::default()
    } else {
        cgroup_stats::read(&container.cgroups_path)
    };
    let mut metrics = cgroup_samples(&subject, &usage, container.started_at, now);
    let upper = container.state_dir.join("upper");
    let layer = crate::images::usage::measure(&upper);
    metrics.extend(layer_samples(
        &subject,
        &upper.display().to_string(),
        layer.bytes,
    ));
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_metadata() -> PodSandboxMetadata {
        PodSandboxMetadata {
            name: "web".into(),
            namespace: "shop".into(),
            uid: "u1".into(),
            attempt: 2,
        }
    }

    fn full_usage() -> CgroupUsage {
        CgroupUsage {
            cpu_nanos: Some(2_999_999_999),
            cpu_user_nanos: Some(2_000_000_000),
            cpu_system_nanos: Some(999_999_999),
            memory_bytes: Some(50),
            working_set_bytes: Some(40),
            rss_bytes: Some(30),
            cache_bytes: Some(20),
            oom_kills: Some(1),
            limit_bytes: Some(1000),
            processes: Some(3),
        }
    }

    fn eth0() -> InterfaceCounters {
        InterfaceCounters {
            name: "eth0".into(),
            rx_bytes: 1,
            rx_packets: 2,
            rx_errors: 3,
            tx_bytes: 4,
            tx_packets: 5,
            tx_errors: 6,
        }
    }

    fn value_of<'a>(metrics: &'a [Metric], name: &str) -> Option<&'a Metric> {
        metrics.iter().find(|m| m.name == name)
    }

    fn all_samples() -> Vec<Metric> {
        let pod = pod_metadata();
        let subject = Subject::container("c1", None, "img", Some(&pod));
        let mut samples = cgroup_samples(&subject, &full_usage(), 5_000_000_000, 9_000_000_000);
        samples.extend(layer_samples(&subject, "/upper", 7));
        samples.extend(network_samples(&Subject::pod("p1", Some(&pod)), &[eth0()]));
        samples
    }

    #[test]
    fn every_sample_is_described_with_as_many_labels_as_keys() {
        let descriptors = descriptors();
        for sample in all_samples() {
            let descriptor = descriptors
                .iter()
                .find(|d| d.name == sample.name)
                .unwrap_or_else(|| panic!("{} has no descriptor", sample.name));
            assert_eq!(
                descriptor.label_keys.len(),
                sample.label_values.len(),
                "labels of {}",
                sample.name
            );
        }
    }

    #[test]
    fn every_descriptor_is_filled_by_a_full_reading() {
        let samples = all_samples();
        for descriptor in descriptors() {
            assert!(
                value_of(&samples, &descriptor.name).is_some(),
                "{} is listed but never filled",
                descriptor.name
            );
        }
    }

    #[test]
    fn descriptor_names_are_unique_and_network_ones_carry_the_interface() {
        let descriptors = descriptors();
        let names: std::collections::HashSet<_> = descriptors.iter().map(|d| &d.name).collect();
        assert_eq!(names.len(), descriptors.len());
        let rx = descriptors
            .iter()
            .find(|d| d.name == "container_network_receive_bytes_total")
            .unwrap();
        assert_eq!(
            rx.label_keys,
            [
                "container",
                "id",
                "image",
                "name",
                "namespace",
                "pod",
                "interface"
            ]
        );
    }

    #[test]
    fn cpu_seconds_are_truncated_and_counters_typed_as_counters() {
        let samples = all_samples();
        let cpu = value_of(&samples, "container_cpu_usage_seconds_total").unwrap();
        assert_eq!(cpu.value.unwrap().value, 2);
        assert_eq!(cpu.metric_type, MetricType::Counter as i32);
        let system = value_of(&samples, "container_cpu_system_seconds_total").unwrap();
        assert_eq!(system.value.unwrap().value, 0);
        let memory = value_of(&samples, "container_memory_working_set_bytes").unwrap();
        assert_eq!(memory.value.unwrap().value, 40);
        assert_eq!(memory.metric_type, MetricType::Gauge as i32);
        let start = value_of(&samples, "container_start_time_seconds").unwrap();
        assert_eq!(start.value.unwrap().value, 5);
        let seen = value_of(&samples, "container_last_seen").unwrap();
        assert_eq!(seen.value.unwrap().value, 9);
    }

    #[test]
    fn container_labels_follow_the_keys() {
        let pod = pod_metadata();
        let metadata = ContainerMetadata {
            name: "app".into(),
            attempt: 1,
        };
        let subject = Subject::container("c1", Some(&metadata), "nginx:1", Some(&pod));
        let sample = &layer_samples(&subject, "/upper", 7)[0];
        assert_eq!(
            sample.label_values,
            [
                "app",
                "c1",
                "nginx:1",
                "k8s_app_web_shop_u1_1",
                "shop",
                "web",
                "/upper"
            ]
        );
        let pod_sample = &network_samples(&Subject::pod("p1", Some(&pod)), &[eth0()])[0];
        assert_eq!(
            pod_sample.label_values,
            ["", "p1", "", "k8s_POD_web_shop_u1_2", "shop", "web", "eth0"]
        );
        assert_eq!(pod_sample.value.unwrap().value, 1);
    }

    #[test]
    fn missing_readings_are_left_out_and_no_limit_reads_as_zero() {
        let subject = Subject::pod("p1", None);
        let unlimited = CgroupUsage {
            memory_bytes: Some(10),
            ..CgroupUsage::default()
        };
        let samples = cgroup_samples(&subject, &unlimited, 0, 0);
        let limit = value_of(&samples, "container_spec_memory_limit_bytes").unwrap();
        assert_eq!(limit.value.unwrap().value, 0);
        assert!(value_of(&samples, "container_cpu_usage_seconds_total").is_none());

        let gone = cgroup_samples(&subject, &CgroupUsage::default(), 0, 0);
        let names: Vec<_> = gone.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["container_last_seen", "container_start_time_seconds"]
        );
    }
}

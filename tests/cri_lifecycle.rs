//! Container events, log reopening, and containers that keep running and logging while the
//! runtime is SIGKILLed and restarted, and the stats and cAdvisor-style metrics of running pods.

mod common;

use std::time::{Duration, Instant};

use capstan_proto::{
    ContainerConfig, ContainerEventType, ContainerMetadata, ContainerState, GetEventsRequest,
    ImageSpec, PodSandboxConfig, PodSandboxMetadata, PullImageRequest, RemoveContainerRequest,
    RemovePodSandboxRequest, ReopenContainerLogRequest, RunPodSandboxRequest,
};
use capstan_testkit::cri::CriClient;
use capstan_testkit::images::{ManifestFormat, catalog};
use capstan_testkit::registry::LocalRegistry;
use capstan_testkit::require_root;
use common::{CniSetup, RuntimeProcess, container_status as status};
use tokio_stream::StreamExt;

struct Fixture {
    _registry: LocalRegistry,
    _cni: CniSetup,
    dir: tempfile::TempDir,
    config: String,
    image: String,
}

fn fixture() -> Fixture {
    let registry = LocalRegistry::start().unwrap();
    registry
        .client()
        .push_image("shell", "1", &catalog().unwrap().shell, ManifestFormat::Oci)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cni = CniSetup::new(dir.path(), None);
    let config = format!(
        "[registry]\ninsecure = [\"{}\"]\n{}",
        registry.host(),
        cni.toml()
    );
    let image = format!("{}/shell:1", registry.host());
    Fixture {
        _registry: registry,
        _cni: cni,
        dir,
        config,
        image,
    }
}

async fn pod_with_image(cri: &mut CriClient, fixture: &Fixture, name: &str) -> String {
    cri.images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: fixture.image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    cri.runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: name.into(),
                    namespace: "default".into(),
                    uid: name.into(),
                    attempt: 0,
                }),
                log_directory: fixture
                    .dir
                    .path()
                    .join("logs")
                    .join(name)
                    .display()
                    .to_string(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id
}

async fn start(cri: &mut CriClient, pod: &str, image: &str, name: &str, script: &str) -> String {
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        ..Default::default()
    };
    common::create_and_start(cri, pod, config).await
}

#[tokio::test(flavor = "multi_thread")]
async fn events_follow_a_container_from_creation_to_deletion() {
    require_root();
    let fixture = fixture();
    let runtime = RuntimeProcess::start(fixture.dir.path(), &fixture.config);
    let mut cri = runtime.client().await;
    let pod = pod_with_image(&mut cri, &fixture, "events").await;
    let mut events = cri
        .runtime
        .get_container_events(GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();

    let id = start(&mut cri, &pod, &fixture.image, "short", "sleep 0.3; exit 4").await;
    let mut seen = Vec::new();
    let mut stopped_event = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 3 && Instant::now() < deadline {
        let next = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
        let Ok(Some(Ok(event))) = next else { break };
        if event.container_id == id {
            seen.push(event.container_event_type);
            if event.container_event_type == ContainerEventType::ContainerStoppedEvent as i32 {
                stopped_event = Some(event);
            }
        }
    }
    assert_eq!(
        seen,
        [
            ContainerEventType::ContainerCreatedEvent as i32,
            ContainerEventType::ContainerStartedEvent as i32,
            ContainerEventType::ContainerStoppedEvent as i32
        ],
        "the exit must be pushed, not found by polling"
    );
    assert_eq!(status(&mut cri, &id).await.exit_code, 4);
    // Events carry the pod's status and its containers', as the kubelet's evented PLEG reads.
    let stopped_event = stopped_event.expect("a stopped event");
    let sandbox = stopped_event
        .pod_sandbox_status
        .expect("pod_sandbox_status");
    assert_eq!(
        (sandbox.id.as_str(), sandbox.state),
        (
            pod.as_str(),
            capstan_proto::PodSandboxState::SandboxReady as i32
        )
    );
    let mine = stopped_event
        .containers_statuses
        .iter()
        .find(|c| c.id == id)
        .expect("the container's status in its event");
    assert_eq!(
        (mine.state, mine.exit_code),
        (capstan_proto::ContainerState::ContainerExited as i32, 4)
    );
    cri.runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (next.container_id, next.container_event_type),
        (id, ContainerEventType::ContainerDeletedEvent as i32)
    );
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_keep_running_and_logging_through_a_runtime_sigkill() {
    require_root();
    let fixture = fixture();
    let mut runtime = RuntimeProcess::start(fixture.dir.path(), &fixture.config);
    let mut cri = runtime.client().await;
    let pod = pod_with_image(&mut cri, &fixture, "durable").await;
    let ticker = start(
        &mut cri,
        &pod,
        &fixture.image,
        "ticker",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done",
    )
    .await;
    let finisher = start(
        &mut cri,
        &pod,
        &fixture.image,
        "finisher",
        "sleep 1.5; exit 5",
    )
    .await;
    let log = status(&mut cri, &ticker).await.log_path;
    drop(cri);

    runtime.stop_with("KILL");
    let lines_at_kill = std::fs::read_to_string(&log).unwrap().lines().count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines_later = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(
        lines_later > lines_at_kill + 5,
        "the container stopped logging without its runtime ({lines_at_kill} -> {lines_later})"
    );

    let runtime = RuntimeProcess::start(fixture.dir.path(), &fixture.config);
    let mut cri = runtime.client().await;
    let ticking = status(&mut cri, &ticker).await;
    assert_eq!(
        ticking.state,
        ContainerState::ContainerRunning as i32,
        "a restart must not disturb a running container"
    );
    let finished = status(&mut cri, &finisher).await;
    assert_eq!(
        (finished.state, finished.exit_code),
        (ContainerState::ContainerExited as i32, 5),
        "exits while the runtime was down keep their real code"
    );

    // ReopenContainerLog: after the log is moved away, new lines go to a new file at the path.
    let moved = format!("{log}.moved");
    std::fs::rename(&log, &moved).unwrap();
    cri.runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: ticker.clone(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        fresh.lines().count() > 2 && fresh.lines().all(|l| l.contains(" stdout F tick ")),
        "{fresh}"
    );
    let error = cri
        .runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: finisher.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition);

    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
    assert!(capstan_testkit::mounts::mounted_under(fixture.dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_over_its_cgroup_memory_limit_is_reported_oom_killed() {
    require_root();
    let fixture = fixture();
    let runtime = RuntimeProcess::start(fixture.dir.path(), &fixture.config);
    let mut cri = runtime.client().await;
    let pod = pod_with_image(&mut cri, &fixture, "hungry").await;
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "hog".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: fixture.image.clone(),
            ..Default::default()
        }),
        // A shell variable that keeps growing: 200 MiB against a 32 MiB limit.
        command: vec![
            "sh".into(),
            "-c".into(),
            "x=$(head -c 209715200 /dev/zero | tr '\\0' a); echo survived".into(),
        ],
        linux: Some(capstan_proto::LinuxContainerConfig {
            resources: Some(capstan_proto::LinuxContainerResources {
                memory_limit_in_bytes: 32 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        log_path: "hog.log".into(),
        ..Default::default()
    };
    let id = common::create_and_start(&mut cri, &pod, config).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let ended = loop {
        let now = status(&mut cri, &id).await;
        if now.state == ContainerState::ContainerExited as i32 {
            break now;
        }
        assert!(Instant::now() < deadline, "the hog was never stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        ended.reason, "OOMKilled",
        "exit {} with reason {:?}",
        ended.exit_code, ended.reason
    );
    assert_ne!(ended.exit_code, 0);
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_report_cgroup_cpu_memory_and_the_writable_layer() {
    require_root();
    let fixture = fixture();
    let runtime = RuntimeProcess::start(fixture.dir.path(), &fixture.config);
    let mut cri = runtime.client().await;
    let pod = pod_with_image(&mut cri, &fixture, "measured").await;
    // 20 MiB in a tmpfs is charged to the container's memory cgroup and cannot be reclaimed.
    let script = "dd if=/dev/zero of=/scratch.bin bs=1M count=3 2>/dev/null; dd if=/dev/zero of=/dev/shm/fill bs=1M count=20 2>/dev/null; echo ready; sleep 60";
    let id = start(&mut cri, &pod, &fixture.image, "busy", script).await;
    let log = status(&mut cri, &id).await.log_path;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(Instant::now() < deadline, "the container never got ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stats = cri
        .runtime
        .container_stats(capstan_proto::ContainerStatsRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let working_set = stats.memory.unwrap().working_set_bytes.unwrap().value;
    assert!(
        working_set > 15_000_000,
        "working set {working_set} does not show the 20 MiB in /dev/shm"
    );
    assert!(stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    let layer = stats.writable_layer.unwrap().used_bytes.unwrap().value;
    assert!(
        layer >= 3 << 20,
        "writable layer {layer} misses the 3 MiB file"
    );

    let listed = cri
        .runtime
        .list_container_stats(capstan_proto::ListContainerStatsRequest {
            filter: Some(capstan_proto::ContainerStatsFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);
    let rate = listed[0].cpu.unwrap().usage_nano_cores;
    assert!(rate.is_some(), "a second sample gives a CPU rate");
    let pod_stats = cri
        .runtime
        .pod_sandbox_stats(capstan_proto::PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap()
        .linux
        .unwrap();
    assert_eq!(pod_stats.containers.len(), 1);
    let network = pod_stats.network.clone().expect("pod network stats");
    assert_eq!(
        network.default_interface.map(|i| i.name).as_deref(),
        Some("eth0"),
        "the pod's own interface, read inside its namespace"
    );
    let pod_memory = pod_stats.memory.unwrap().working_set_bytes.unwrap().value;
    assert!(
        pod_memory >= working_set / 2,
        "pod working set {pod_memory} below its container's"
    );
    assert!(pod_stats.process.unwrap().process_count.unwrap().value >= 1);
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

async fn sandbox_metrics(cri: &mut CriClient) -> Vec<capstan_proto::PodSandboxMetrics> {
    cri.runtime
        .list_pod_sandbox_metrics(capstan_proto::ListPodSandboxMetricsRequest {})
        .await
        .unwrap()
        .into_inner()
        .pod_metrics
}

/// The value of the sample of family `name` whose last label is `last_label` (any when `None`).
fn sample_value(
    metrics: &[capstan_proto::Metric],
    name: &str,
    last_label: Option<&str>,
) -> Option<u64> {
    metrics
        .iter()
        .find(|m| {
            m.name == name
                && last_label.is_none_or(|l| m.label_values.last().map(String::as_str) == Some(l))
        })
        .and_then(|m| m.value.map(|v| v.value))
}

#[tokio::test(flavor = "multi_thread")]
async fn cgroup_and_network_metrics_of_running_pods_are_listed() {
    require_root();
    let fixture = fixture();
    let runtime = RuntimeProcess::start(fixture.dir.path(), &fixture.config);
    let mut cri = runtime.client().await;
    let descriptors = cri
        .runtime
        .list_metric_descriptors(capstan_proto::ListMetricDescriptorsRequest {})
        .await
        .unwrap()
        .into_inner()
        .descriptors;
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_fs_usage_bytes",
    ] {
        assert!(
            descriptors.iter().any(|d| d.name == name),
            "{name} is not described"
        );
    }
    assert!(descriptors.iter().all(|d| !d.help.is_empty()));

    let pod = pod_with_image(&mut cri, &fixture, "metered").await;
    // Two busy loops burn CPU seconds fast enough to see the whole-second counter move; 24 MiB in
    // a tmpfs is charged to the container's memory cgroup and cannot be reclaimed.
    const ALLOCATED: u64 = 24 << 20;
    let script = "dd if=/dev/zero of=/dev/shm/fill bs=1M count=24 2>/dev/null; \
        (while :; do :; done) & (while :; do :; done) & echo ready; wait";
    let id = start(&mut cri, &pod, &fixture.image, "burner", script).await;
    let log = status(&mut cri, &id).await.log_path;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(Instant::now() < deadline, "the container never got ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A connection to a closed port is a SYN in and a RST out on the pod's eth0.
    let ip = common::sandbox_status(&mut cri, &pod)
        .await
        .unwrap()
        .network
        .unwrap()
        .ip;
    let address = std::net::SocketAddr::new(ip.parse().unwrap(), 9);
    let _ = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1));

    // Waits for a first whole CPU second, then for the counter to move past it.
    let cpu_of = |pods: &[capstan_proto::PodSandboxMetrics]| {
        let ours = pods.iter().find(|p| p.pod_sandbox_id == pod)?;
        let container = ours
            .container_metrics
            .iter()
            .find(|c| c.container_id == id)?;
        sample_value(
            &container.metrics,
            "container_cpu_usage_seconds_total",
            None,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let pods = sandbox_metrics(&mut cri).await;
        match cpu_of(&pods) {
            Some(cpu) if cpu > 0 => break cpu,
            _ => {}
        }
        assert!(Instant::now() < deadline, "no CPU second in {pods:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let pods = loop {
        let later = sandbox_metrics(&mut cri).await;
        if cpu_of(&later).is_some_and(|cpu| cpu > first) {
            break later;
        }
        assert!(
            Instant::now() < deadline,
            "CPU usage stuck at {first} s: {later:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let ours = pods.iter().find(|p| p.pod_sandbox_id == pod).unwrap();
    assert_eq!(ours.container_metrics.len(), 1);
    let container = &ours.container_metrics[0].metrics;
    let working_set = sample_value(container, "container_memory_working_set_bytes", None).unwrap();
    assert!(
        working_set > ALLOCATED,
        "working set {working_set} does not cover the {ALLOCATED} bytes in /dev/shm"
    );
    let processes = sample_value(container, "container_processes", None).unwrap();
    assert!(
        processes >= 3,
        "{processes} processes: the shell and two loops"
    );
    let rx = sample_value(
        &ours.metrics,
        "container_network_receive_bytes_total",
        Some("eth0"),
    );
    let tx = sample_value(
        &ours.metrics,
        "container_network_transmit_bytes_total",
        Some("eth0"),
    );
    assert!(rx.is_some_and(|b| b > 0), "eth0 received {rx:?} bytes");
    assert!(tx.is_some_and(|b| b > 0), "eth0 sent {tx:?} bytes");

    // The listing and the samples agree both ways, and every sample has a value per label key.
    let samples: Vec<&capstan_proto::Metric> =
        ours.metrics.iter().chain(container.iter()).collect();
    for descriptor in &descriptors {
        assert!(
            samples.iter().any(|m| m.name == descriptor.name),
            "{} is described but has no sample",
            descriptor.name
        );
    }
    for sample in &samples {
        let descriptor = descriptors
            .iter()
            .find(|d| d.name == sample.name)
            .unwrap_or_else(|| panic!("{} is not described", sample.name));
        assert_eq!(descriptor.label_keys.len(), sample.label_values.len());
    }
    let cpu_sample = container
        .iter()
        .find(|m| m.name == "container_cpu_usage_seconds_total")
        .unwrap();
    assert_eq!(
        &cpu_sample.label_values[..2],
        ["burner".to_string(), id.clone()],
        "container and id labels"
    );

    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    let after = sandbox_metrics(&mut cri).await;
    assert!(
        after.iter().all(|p| p.pod_sandbox_id != pod),
        "a removed pod is still listed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cgroup_limits_of_a_running_container_can_be_updated() {
    require_root();
    let fixture = fixture();
    let runtime = RuntimeProcess::start(fixture.dir.path(), &fixture.config);
    let mut cri = runtime.client().await;
    let pod = pod_with_image(&mut cri, &fixture, "resized").await;
    let id = start(&mut cri, &pod, &fixture.image, "sleeper", "sleep 60").await;
    cri.runtime
        .update_container_resources(capstan_proto::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(capstan_proto::LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                cpu_shares: 512,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    // Read back from the cgroup files of the host's driver.
    let container_cgroup = format!(
        "{}/pod-{}/{}",
        runtime.pods_cgroup().trim_start_matches('/'),
        &pod[..12],
        id
    );
    let read = |path: String| {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .to_string()
    };
    match capstan_testkit::cgroups::driver() {
        capstan_testkit::cgroups::Driver::V1 => {
            assert_eq!(
                read(format!(
                    "/sys/fs/cgroup/memory/{container_cgroup}/memory.limit_in_bytes"
                )),
                (96u64 << 20).to_string()
            );
            assert_eq!(
                read(format!(
                    "/sys/fs/cgroup/cpu/{container_cgroup}/cpu.cfs_quota_us"
                )),
                "50000"
            );
            assert_eq!(
                read(format!("/sys/fs/cgroup/cpu/{container_cgroup}/cpu.shares")),
                "512"
            );
        }
        capstan_testkit::cgroups::Driver::V2 => {
            assert_eq!(
                read(format!("/sys/fs/cgroup/{container_cgroup}/memory.max")),
                (96u64 << 20).to_string()
            );
            assert_eq!(
                read(format!("/sys/fs/cgroup/{container_cgroup}/cpu.max")),
                "50000 100000"
            );
            let weight = capstan_runtime::cgroups::cpu_shares_to_weight(512).to_string();
            assert_eq!(
                read(format!("/sys/fs/cgroup/{container_cgroup}/cpu.weight")),
                weight
            );
        }
    }
    // ContainerStatus reports the limits in force (the kubelet's in-place resize reads them).
    let reported = common::container_status(&mut cri, &id)
        .await
        .resources
        .and_then(|r| r.linux)
        .expect("status.resources.linux");
    assert_eq!(
        (
            reported.memory_limit_in_bytes,
            reported.cpu_quota,
            reported.cpu_period,
            reported.cpu_shares
        ),
        (96 << 20, 50_000, 100_000, 512)
    );
    let error = cri
        .runtime
        .update_container_resources(capstan_proto::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(capstan_proto::LinuxContainerResources {
                memory_limit_in_bytes: -5,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert!(
        error.message().contains("memory_limit_in_bytes"),
        "{}",
        error.message()
    );
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn container_logs_rotate_at_the_configured_size_and_count() {
    require_root();
    let fixture = fixture();
    let config = format!(
        "{}\n[logs]\nmax_size = 4096\nmax_files = 3\n",
        fixture.config
    );
    let runtime = RuntimeProcess::start(fixture.dir.path(), &config);
    let mut cri = runtime.client().await;
    let pod = pod_with_image(&mut cri, &fixture, "rotating").await;
    // ~40 KiB of numbered lines in bursts, so the file is sampled while it is being written.
    let chatty = start(
        &mut cri,
        &pod,
        &fixture.image,
        "chatty",
        "i=0; while [ $i -lt 400 ]; do \
           echo \"line $i padding-padding-padding-padding-padding-padding-padding-padding\"; \
           i=$((i+1)); if [ $((i % 25)) -eq 0 ]; then sleep 0.05; fi; \
         done; echo last-line",
    )
    .await;
    let log = std::path::PathBuf::from(status(&mut cri, &chatty).await.log_path);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut samples = 0;
    loop {
        if let Ok(meta) = std::fs::metadata(&log) {
            samples += 1;
            assert!(
                meta.len() <= 4096,
                "the live log grew to {} bytes, over logs.max_size",
                meta.len()
            );
        }
        if status(&mut cri, &chatty).await.state == ContainerState::ContainerExited as i32 {
            break;
        }
        assert!(Instant::now() < deadline, "the container did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(samples > 10, "only {samples} samples taken while writing");

    let dir = log.parent().unwrap();
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("chatty.log"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["chatty.log", "chatty.log.1", "chatty.log.2"],
        "max_files = 3 keeps the live file and two rotated ones"
    );
    let live = std::fs::read_to_string(&log).unwrap();
    assert!(std::fs::metadata(&log).unwrap().len() <= 4096);
    assert!(
        live.lines()
            .last()
            .is_some_and(|l| l.ends_with(" stdout F last-line")),
        "the newest output is in the live file:\n{live}"
    );
    let number = |text: &str| {
        text.lines()
            .filter_map(|l| {
                l.split(" line ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .max()
            .unwrap_or(0)
    };
    let rotated = std::fs::read_to_string(dir.join("chatty.log.1")).unwrap();
    let older = std::fs::read_to_string(dir.join("chatty.log.2")).unwrap();
    assert!(
        number(&older) < number(&rotated) && number(&rotated) <= 399,
        "rotated files are numbered newest first"
    );
    assert!(
        !rotated.contains(" line 0 "),
        "the oldest lines were dropped with the files beyond max_files"
    );

    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
    assert!(capstan_testkit::mounts::mounted_under(fixture.dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_socket_directory_is_made_private() {
    require_root();
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let runtime = RuntimeProcess::start(dir.path(), "");
    let _cri = runtime.client().await;
    let mode = std::fs::metadata(&run).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode,
        0o700,
        "the socket directory keeps mode {mode:o}:\n{}",
        runtime.log()
    );
}

/// The directories of cgroup `path` (absolute in its hierarchy): one on v2, one per v1
/// controller hierarchy.
fn cgroup_dirs_of(path: &str) -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(path.trim_start_matches('/'))];
    }
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.len() > 3 && fields[2] == "cgroup" && !fields[3].contains("name="))
                .then(|| std::path::Path::new(fields[1]).join(path.trim_start_matches('/')))
        })
        .collect()
}

/// Makes cgroup `path` in every hierarchy (its parent must exist), ready to take processes.
fn make_cgroup(path: &str) {
    for dir in cgroup_dirs_of(path) {
        std::fs::create_dir_all(&dir).unwrap();
        // A new v1 cpuset is empty, and an empty cpuset takes no process.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let parent = dir.parent().unwrap().join(file);
            if let Ok(value) = std::fs::read_to_string(&parent)
                && std::fs::read_to_string(dir.join(file)).is_ok_and(|v| v.trim().is_empty())
            {
                std::fs::write(dir.join(file), value.trim()).unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_sweeps_orphan_pod_state_and_control_groups_but_keeps_live_pods() {
    require_root();
    let fixture = fixture();
    let mut runtime = RuntimeProcess::start(fixture.dir.path(), &fixture.config);
    let mut cri = runtime.client().await;
    let live = pod_with_image(&mut cri, &fixture, "live").await;
    let sleeper = start(&mut cri, &live, &fixture.image, "sleeper", "sleep 1000").await;
    drop(cri);
    runtime.stop_with("KILL");

    // What a crash between creating a sandbox's directories and saving its record leaves: a
    // state directory with a mounted rootfs below it, and a pod cgroup with a container cgroup
    // still holding a process.
    let orphan_id = "0badc0de".repeat(8);
    let orphan_dir = fixture.dir.path().join("state/pods").join(&orphan_id);
    let rootfs = orphan_dir
        .join("containers")
        .join("f".repeat(64))
        .join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::write(orphan_dir.join("monitor.log"), "started\n").unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &rootfs,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k"),
    )
    .unwrap();
    std::fs::write(rootfs.join("file"), "debris").unwrap();
    let pods_parent = runtime.pods_cgroup();
    let orphan_pod = format!("{pods_parent}/pod-{}", &orphan_id[..12]);
    let orphan_container = format!("{orphan_pod}/{}", "e".repeat(64));
    make_cgroup(&orphan_pod);
    make_cgroup(&orphan_container);
    let mut stray = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    for dir in cgroup_dirs_of(&orphan_container) {
        std::fs::write(dir.join("cgroup.procs"), stray.id().to_string()).unwrap();
    }
    let live_pod_cgroup = format!("{pods_parent}/pod-{}", &live[..12]);
    let live_cgroups = cgroup_dirs_of(&live_pod_cgroup);
    assert!(live_cgroups.iter().all(|d| d.exists()), "{live_cgroups:?}");

    runtime.respawn();
    let mut cri = runtime.client().await;
    let log = runtime.log();
    assert!(
        !orphan_dir.exists(),
        "the orphan state directory was not swept:\n{log}"
    );
    assert!(capstan_testkit::mounts::mounted_under(&orphan_dir).is_empty());
    for dir in cgroup_dirs_of(&orphan_pod) {
        assert!(!dir.exists(), "{} was not swept:\n{log}", dir.display());
    }
    let exit = stray.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(9),
        "the process left in the orphan cgroup must be killed"
    );
    assert!(
        log.contains("swept a pod state directory without a sandbox record")
            && log.contains(&orphan_id),
        "the state directory sweep must be logged:\n{log}"
    );
    assert!(
        log.contains("swept a cgroup without a record") && log.contains(&orphan_pod),
        "the cgroup sweep must be logged:\n{log}"
    );

    // The live pod is untouched: its state, its cgroup, its running container.
    assert!(fixture.dir.path().join("state/pods").join(&live).is_dir());
    assert!(live_cgroups.iter().all(|d| d.exists()), "{live_cgroups:?}");
    assert_eq!(
        status(&mut cri, &sleeper).await.state,
        ContainerState::ContainerRunning as i32
    );
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: live,
        })
        .await
        .unwrap();
    assert!(capstan_testkit::mounts::mounted_under(fixture.dir.path()).is_empty());
}

/// The pid in the verbose `info` of sandbox (`sandbox`) or container `id`: the monitor's or
/// the container process's.
async fn verbose_pid(cri: &mut CriClient, id: &str, sandbox: bool) -> i32 {
    let info = if sandbox {
        cri.runtime
            .pod_sandbox_status(capstan_proto::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner()
            .info
    } else {
        cri.runtime
            .container_status(capstan_proto::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner()
            .info
    };
    let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    info["pid"].as_i64().unwrap_or(0) as i32
}

/// Whether process `pid` runs (a zombie waiting for PID 1 to reap it does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = stat[stat.rfind(')')? + 1..].trim_start().to_string();
            after.chars().next()
        })
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// A running pod of the test: its sandbox, monitor pid, container pid and pod cgroup dirs.
struct LivePod {
    id: String,
    monitor: i32,
    container: i32,
    cgroups: Vec<std::path::PathBuf>,
}

async fn live_pod(cri: &mut CriClient, fixture: &Fixture, name: &str) -> LivePod {
    let id = pod_with_image(cri, fixture, name).await;
    let sleeper = start(cri, &id, &fixture.image, "sleeper", "sleep 1000").await;
    let monitor = verbose_pid(cri, &id, true).await;
    let container = verbose_pid(cri, &sleeper, false).await;
    assert!(monitor > 0 && container > 0, "{monitor} {container}");
    assert!(alive(monitor) && alive(container));
    let pod_cgroup = format!(
        "{}/pod-{}",
        common::pods_cgroup(fixture.dir.path()),
        &id[..12]
    );
    let cgroups = cgroup_dirs_of(&pod_cgroup);
    assert!(cgroups.iter().all(|d| d.exists()), "{cgroups:?}");
    LivePod {
        id,
        monitor,
        container,
        cgroups,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_stops_live_monitors_whose_sandbox_record_is_gone() {
    require_root();
    let fixture = fixture();
    let mut runtime = RuntimeProcess::start(fixture.dir.path(), &fixture.config);
    let mut cri = runtime.client().await;
    let unrecorded = live_pod(&mut cri, &fixture, "unrecorded").await;
    let unreachable = live_pod(&mut cri, &fixture, "unreachable").await;
    drop(cri);
    runtime.stop_with("KILL");

    // The state directory partly deleted: each sandbox's record is gone, its containers'
    // records and rootfs mounts are still there. The second pod's run directory went too, as
    // far as `rm -rf` gets (namespace pins are mount points): its monitor, still running, can
    // no longer be reached through its socket.
    let state_dir = |pod: &LivePod| fixture.dir.path().join("state/pods").join(&pod.id);
    for pod in [&unrecorded, &unreachable] {
        std::fs::remove_file(state_dir(pod).join("sandbox.json")).unwrap();
    }
    let run_dir = fixture
        .dir
        .path()
        .join("run/pods")
        .join(&unreachable.id[..16]);
    assert!(
        run_dir.join("monitor.sock").exists(),
        "{}",
        run_dir.display()
    );
    let _ = std::process::Command::new("rm")
        .arg("-rf")
        .arg(&run_dir)
        .stderr(std::process::Stdio::null())
        .status();
    assert!(!run_dir.join("monitor.sock").exists());

    runtime.respawn();
    let mut cri = runtime.client().await;
    for pod in [&unrecorded, &unreachable] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pod.monitor) || alive(pod.container) {
            assert!(
                Instant::now() < deadline,
                "{}: left running: monitor {} {}, container {} {}\n{}",
                pod.id,
                pod.monitor,
                alive(pod.monitor),
                pod.container,
                alive(pod.container),
                runtime.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for dir in &pod.cgroups {
            assert!(
                !dir.exists(),
                "{} was not swept:\n{}",
                dir.display(),
                runtime.log()
            );
        }
        assert!(!state_dir(pod).exists(), "{}", runtime.log());
    }
    for dir in ["state", "run"] {
        let mounted = capstan_testkit::mounts::mounted_under(&fixture.dir.path().join(dir));
        assert!(mounted.is_empty(), "still mounted: {mounted:?}");
    }
    // Each stop is logged with its monitor, its run directory and why.
    let log = runtime.log();
    for pod in [&unrecorded, &unreachable] {
        assert!(
            log.lines().any(
                |line| line.contains("stopped a pod monitor no sandbox record owns")
                    && line.contains(&pod.id[..16])
                    && line.contains(&pod.monitor.to_string())
                    && line.contains("no sandbox record names its run directory")
            ),
            "the stop of {} must be logged with its reason:\n{log}",
            pod.id
        );
    }
    let listed = cri
        .runtime
        .list_pod_sandbox(capstan_proto::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(listed.is_empty(), "{listed:?}");
}

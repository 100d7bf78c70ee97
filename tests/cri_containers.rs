//! Containers through CRI on the real binary, as crictl drives them: images from a real
//! registry, a pod whose containers share its network namespace, exit codes and reasons, logs
//! in CRI format, stop with a grace period, and removal that leaves no mount behind.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use capstan_proto::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ImageFsInfoRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListContainersRequest, ListImagesRequest, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, PullImageRequest, RemoveContainerRequest,
    RemoveImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StopContainerRequest,
    StopPodSandboxRequest,
};
use capstan_testkit::cri::CriClient;
use capstan_testkit::images::{ManifestFormat, WEB_PAGE, catalog};
use capstan_testkit::mounts::mounted_under;
use capstan_testkit::registry::LocalRegistry;
use capstan_testkit::require_root;
use common::{CniSetup, RuntimeProcess, container_status as status};
use tonic::Code;

fn container(name: &str, image: &str, command: &[&str], args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("name".to_string(), name.to_string())]),
        ..Default::default()
    }
}

async fn run(cri: &mut CriClient, pod: &str, config: ContainerConfig) -> String {
    common::create_and_start(cri, pod, config).await
}

async fn wait_exited(cri: &mut CriClient, id: &str) -> capstan_proto::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = status(cri, id).await;
        if status.state == ContainerState::ContainerExited as i32 {
            return status;
        }
        assert!(Instant::now() < deadline, "container {id} did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_lines(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(" ").map(|(_, rest)| rest.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_run_share_the_pod_network_and_report_how_they_ended() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    let images = catalog().unwrap();
    for (name, image) in [
        ("shell", &images.shell),
        ("web", &images.web),
        ("user", &images.user),
        ("entry", &images.entrypoint),
    ] {
        registry
            .client()
            .push_image(name, "1", image, ManifestFormat::Oci)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let cni = CniSetup::new(dir.path(), None);
    let config = format!(
        "[registry]\ninsecure = [\"{}\"]\n{}",
        registry.host(),
        cni.toml()
    );
    let runtime = RuntimeProcess::start(dir.path(), &config);
    let mut cri = runtime.client().await;
    let image = |name: &str| format!("{}/{name}:1", registry.host());
    for name in ["shell", "web", "user", "entry"] {
        cri.images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image(name),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let logs = dir.path().join("logs");
    let pod = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "app".into(),
                    namespace: "default".into(),
                    uid: "u1".into(),
                    attempt: 0,
                }),
                hostname: "app-host".into(),
                log_directory: logs.display().to_string(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", runtime.log()))
        .into_inner()
        .pod_sandbox_id;

    let web = run(&mut cri, &pod, container("web", &image("web"), &[], &[])).await;
    let fetch = "for i in $(seq 1 50); do wget -q -O - http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; exit 1";
    let client = run(
        &mut cri,
        &pod,
        container("client", &image("shell"), &["sh", "-c", fetch], &[]),
    )
    .await;
    let done = wait_exited(&mut cri, &client).await;
    assert_eq!(
        (done.exit_code, done.reason.as_str()),
        (0, "Completed"),
        "{}",
        runtime.log()
    );
    assert!(done.finished_at >= done.started_at && done.started_at > 0);
    let page_lines = log_lines(&done.log_path);
    assert_eq!(
        page_lines,
        ["stdout F <h1>capstan test page</h1>"],
        "the sibling container's page over the pod's localhost"
    );

    // The pod's IP serves the page to the host, through the bridge.
    let pod_ip = cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .network
        .unwrap()
        .ip;
    let mut stream =
        std::net::TcpStream::connect((pod_ip.as_str(), 8080)).expect("connect to the pod");
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.ends_with(WEB_PAGE), "{response}");

    let failing = run(
        &mut cri,
        &pod,
        container(
            "fails",
            &image("shell"),
            &["sh", "-c", "echo bye >&2; exit 3"],
            &[],
        ),
    )
    .await;
    let ended = wait_exited(&mut cri, &failing).await;
    assert_eq!((ended.exit_code, ended.reason.as_str()), (3, "Error"));
    assert_eq!(log_lines(&ended.log_path), ["stderr F bye"]);

    let user = run(
        &mut cri,
        &pod,
        container("user", &image("user"), &["id"], &[]),
    )
    .await;
    let ended = wait_exited(&mut cri, &user).await;
    let id_line = log_lines(&ended.log_path).join("\n");
    assert!(
        id_line.contains("uid=1000(app) gid=1000(app)"),
        "image USER not applied: {id_line}"
    );

    let entry = run(
        &mut cri,
        &pod,
        container("entry", &image("entry"), &[], &["from-cri"]),
    )
    .await;
    let ended = wait_exited(&mut cri, &entry).await;
    assert_eq!(
        log_lines(&ended.log_path),
        [
            "stdout F args: from-cri",
            "stdout F greeting: hello from the image",
            "stdout F pwd: /work"
        ],
        "CRI args replace CMD and keep ENTRYPOINT, ENV and WORKDIR"
    );

    // Names are unique within a pod; a missing image is named.
    let error = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container("web", &image("web"), &[], &[])),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists);
    let error = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container("ghost", "nothing/here:1", &[], &[])),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert!(
        error.message().contains("nothing/here"),
        "{}",
        error.message()
    );

    assert_eq!(
        status(&mut cri, &web).await.state,
        ContainerState::ContainerRunning as i32
    );
    let exec = |cmd: &[&str], timeout: i64| ExecSyncRequest {
        container_id: web.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    };
    let out = cri
        .runtime
        .exec_sync(exec(&["hostname"], 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (String::from_utf8_lossy(&out.stdout).trim(), out.exit_code),
        ("app-host", 0)
    );
    let out = cri
        .runtime
        .exec_sync(exec(&["sh", "-c", "echo to-err >&2; exit 7"], 10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (String::from_utf8_lossy(&out.stderr).trim(), out.exit_code),
        ("to-err", 7)
    );
    let started = Instant::now();
    let error = cri
        .runtime
        .exec_sync(exec(&["sleep", "30"], 1))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{}", error.message());
    assert!(started.elapsed() < Duration::from_secs(10));
    let error = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: client.clone(),
            cmd: vec!["true".into()],
            timeout: 5,
        })
        .await
        .unwrap_err();
    assert_eq!(
        error.code(),
        Code::FailedPrecondition,
        "exec in an exited container: {}",
        error.message()
    );
    // httpd is PID 1 of its namespace and ignores SIGTERM: the grace period runs out, SIGKILL.
    let stopping = Instant::now();
    cri.runtime
        .stop_container(StopContainerRequest {
            container_id: web.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
    assert!(
        stopping.elapsed() >= Duration::from_secs(1)
            && stopping.elapsed() < Duration::from_secs(10)
    );
    let stopped = status(&mut cri, &web).await;
    assert_eq!(
        (stopped.state, stopped.exit_code),
        (ContainerState::ContainerExited as i32, 137)
    );

    let listed = cri
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 5);
    cri.runtime
        .remove_container(RemoveContainerRequest {
            container_id: web.clone(),
        })
        .await
        .unwrap();
    cri.runtime
        .remove_container(RemoveContainerRequest {
            container_id: web.clone(),
        })
        .await
        .unwrap();
    let error = cri
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: web,
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);

    let pod_id_prefix = pod[..12].to_string();
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
    let listed = cri
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert!(listed.is_empty(), "removing the pod removes its containers");
    assert!(
        mounted_under(dir.path()).is_empty(),
        "mounts left: {:?}",
        mounted_under(dir.path())
    );
    let pod_cgroup = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(common::pods_cgroup(dir.path()).trim_start_matches('/'))
        .join(format!("pod-{}", &pod_id_prefix));
    assert!(
        !pod_cgroup.exists()
            || capstan_testkit::cgroups::driver() == capstan_testkit::cgroups::Driver::V2,
        "pod cgroup left: {}",
        pod_cgroup.display()
    );
}

fn pod_config(name: &str, pid: Option<NamespaceMode>) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        linux: pid.map(|pid| LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: pid as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_pid(mut config: ContainerConfig, pid: NamespaceMode, target_id: &str) -> ContainerConfig {
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Pod as i32,
                pid: pid as i32,
                ipc: NamespaceMode::Pod as i32,
                target_id: target_id.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// Every process's command line in `container`'s view of /proc, joined by spaces, and `pid 1`'s.
async fn processes_seen(cri: &mut CriClient, container: &str) -> (Vec<String>, String) {
    let script = "for p in /proc/[0-9]*; do echo \"$(tr '\\0' ' ' < $p/cmdline)\"; done; echo; tr '\\0' ' ' < /proc/1/cmdline";
    let (text, _) = common::exec_sh(cri, container, script).await;
    let (all, first) = text.rsplit_once("\n\n").unwrap_or((&text, ""));
    (
        all.lines().map(|l| l.trim().to_string()).collect(),
        first.trim().to_string(),
    )
}

fn host_processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_and_targeted_process_namespaces_show_the_right_processes() {
    require_root();
    let fx = common::ShellRuntime::start().await;
    let (dir, runtime, shell) = (&fx.dir, &fx.runtime, fx.shell.clone());
    let mut cri = runtime.client().await;
    let sleeper = |name: &str, seconds: &str| {
        container(
            name,
            &shell,
            &["sh", "-c", &format!("exec sleep {seconds}")],
            &[],
        )
    };

    // shareProcessNamespace: each container sees the other's processes, and PID 1 is the pod's
    // own init, not a container's.
    // A sysctl that is not namespaced is refused at RunPodSandbox, naming it; a namespaced one
    // reaches the pod's containers.
    let mut bad = pod_config("bad-sysctl", Some(NamespaceMode::Pod));
    if let Some(linux) = bad.linux.as_mut() {
        linux.sysctls = HashMap::from([("vm.swappiness".to_string(), "10".to_string())]);
    }
    let error = common::run_pod(&mut cri, bad).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{}", error.message());
    assert!(
        error.message().contains("vm.swappiness"),
        "{}",
        error.message()
    );
    let mut shared_config = pod_config("shared", Some(NamespaceMode::Pod));
    if let Some(linux) = shared_config.linux.as_mut() {
        linux.sysctls = HashMap::from([(
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "81".to_string(),
        )]);
    }
    let shared = common::run_pod(&mut cri, shared_config)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", runtime.log()));
    run(&mut cri, &shared, sleeper("one", "3217")).await;
    let two = run(&mut cri, &shared, sleeper("two", "3218")).await;
    let (seen, pid1) = processes_seen(&mut cri, &two).await;
    assert!(seen.contains(&"sleep 3217".to_string()), "{seen:?}");
    let (sysctl, _) = common::exec_sh(
        &mut cri,
        &two,
        "cat /proc/sys/net/ipv4/ip_unprivileged_port_start",
    )
    .await;
    assert_eq!(sysctl.trim(), "81");
    // crictl inspect / inspectp: the verbose info has the host pid, the OCI spec and the
    // namespace paths.
    let info = cri
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: two.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info;
    let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    let pid = info["pid"].as_u64().expect("pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(String::from_utf8_lossy(&cmdline), "sleep\u{0}3218\u{0}");
    assert_eq!(info["sandboxID"], shared.as_str());
    assert_eq!(
        info["runtimeSpec"]["process"]["args"],
        serde_json::json!(["sh", "-c", "exec sleep 3218"])
    );
    let info = cri
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: shared.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info;
    let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    let pid_ns = info["pidNamespacePath"].as_str().expect("pidNamespacePath");
    let pinned = std::fs::metadata(pid_ns).unwrap();
    let joined = std::fs::metadata(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_eq!(
        (pinned.dev(), pinned.ino()),
        (joined.dev(), joined.ino()),
        "the container is in the pinned pod PID namespace"
    );
    assert!(info["cniResult"]["ips"].is_array(), "{info}");
    assert_eq!(info["config"]["metadata"]["name"], "shared");
    assert!(seen.contains(&"sleep 3218".to_string()), "{seen:?}");
    assert!(!pid1.starts_with("sleep"), "PID 1 is a container: {pid1}");

    // Without it each container has its own; a TARGET container joins its target's.
    let private = common::run_pod(
        &mut cri,
        pod_config("private", Some(NamespaceMode::Container)),
    )
    .await
    .unwrap();
    let target = run(&mut cri, &private, sleeper("target", "4321")).await;
    let other = run(&mut cri, &private, sleeper("other", "4322")).await;
    let (seen, pid1) = processes_seen(&mut cri, &other).await;
    assert!(!seen.iter().any(|p| p.contains("4321")), "{seen:?}");
    assert_eq!(pid1, "sleep 4322");
    let debug = run(
        &mut cri,
        &private,
        with_pid(sleeper("debug", "4323"), NamespaceMode::Target, &target),
    )
    .await;
    let (seen, pid1) = processes_seen(&mut cri, &debug).await;
    assert_eq!(pid1, "sleep 4321", "{seen:?}");
    assert!(seen.contains(&"sleep 4323".to_string()), "{seen:?}");

    // Bad requests name the field.
    let create = |config: ContainerConfig| CreateContainerRequest {
        pod_sandbox_id: private.clone(),
        config: Some(config),
        sandbox_config: None,
    };
    let error = cri
        .runtime
        .create_container(create(with_pid(
            sleeper("ghost-target", "1"),
            NamespaceMode::Target,
            "no-such-container",
        )))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{}", error.message());
    assert!(error.message().contains("target_id"), "{}", error.message());
    let error = cri
        .runtime
        .create_container(create(with_pid(
            sleeper("wants-pod", "1"),
            NamespaceMode::Pod,
            "",
        )))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{}", error.message());
    assert!(
        error.message().contains("namespace_options.pid"),
        "{}",
        error.message()
    );
    let mut missing_mount = sleeper("missing-mount", "1");
    missing_mount.mounts = vec![capstan_proto::Mount {
        container_path: "/data".into(),
        host_path: dir.path().join("not-there").display().to_string(),
        ..Default::default()
    }];
    let error = cri
        .runtime
        .create_container(create(missing_mount))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{}", error.message());
    assert!(
        error.message().contains("config.mounts[0].host_path")
            && error.message().contains("not-there"),
        "{}",
        error.message()
    );

    // Removal ends the pod's init with its namespace, and unpins it.
    for pod in [shared, private] {
        cri.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", runtime.log()));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let run_dir = dir.path().display().to_string();
    while !host_processes_mentioning(&run_dir).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left: Vec<String> = host_processes_mentioning(&run_dir)
        .into_iter()
        .filter(|c| c.contains("monitor"))
        .collect();
    assert!(left.is_empty(), "monitor processes left: {left:?}");
    assert!(host_processes_mentioning("sleep 321").is_empty());
    assert!(
        mounted_under(dir.path()).is_empty(),
        "mounts left: {:?}",
        mounted_under(dir.path())
    );
}

fn snapshot_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("state/images/snapshots"))
        .map(|entries| entries.flatten().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_image_keeps_its_containers_layers_until_they_go() {
    require_root();
    let fx = common::ShellRuntime::start().await;
    let (dir, runtime, shell) = (&fx.dir, &fx.runtime, fx.shell.clone());
    let mut cri = runtime.client().await;
    let layers = snapshot_count(dir.path());
    assert!(layers > 0);
    let pod = common::run_pod(&mut cri, pod_config("keeper", None))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", runtime.log()));
    let id = run(
        &mut cri,
        &pod,
        container("keeper", &shell, &["sleep", "600"], &[]),
    )
    .await;
    // 2 MiB in the writable layer shows in ImageFsInfo's container filesystem.
    let out = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: ["dd", "if=/dev/zero", "of=/big", "bs=1024", "count=2048"]
                .map(String::from)
                .to_vec(),
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let fs = cri
        .images
        .image_fs_info(ImageFsInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let writable = fs.container_filesystems[0]
        .used_bytes
        .as_ref()
        .unwrap()
        .value;
    assert!(writable >= 2 << 20, "container filesystem used {writable}");
    let image_fs = fs.image_filesystems[0].used_bytes.as_ref().unwrap().value;
    assert_ne!(
        fs.container_filesystems[0].fs_id, fs.image_filesystems[0].fs_id,
        "the writable layers are reported apart from the images ({image_fs} bytes)"
    );

    // crictl rmi while the container runs: the image goes, its layers stay for the container.
    cri.images
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: shell.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let listed = cri
        .images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(listed.is_empty(), "{listed:?}");
    assert_eq!(snapshot_count(dir.path()), layers);
    let out = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: ["sh", "-c", "cat /bin/busybox | wc -c"]
                .map(String::from)
                .to_vec(),
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));

    // Once the container goes, so do the layers.
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while snapshot_count(dir.path()) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(snapshot_count(dir.path()), 0, "{}", runtime.log());
}

/// critest names its pods `create-PodSandbox-for-container-<uuid>` and the like and sends no
/// hostname: the pod gets the host's hostname (as with containerd), never a failed
/// sethostname. A requested hostname the kernel cannot take is refused naming the field.
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_without_a_hostname_gets_the_hosts_even_when_its_name_is_long() {
    require_root();
    let fx = common::ShellRuntime::start().await;
    let mut cri = fx.runtime.client().await;
    let long_name = format!(
        "create-PodSandbox-for-container-{}",
        "401c845f-5f2a-4a1b-9c3d-0e6f7a8b9c0d-with-a-tail"
    );
    assert!(long_name.len() > 64);
    let mut config = pod_config(&long_name, None);
    config.hostname = String::new();
    let pod = common::run_pod(&mut cri, config)
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", fx.runtime.log()));
    let id = common::create_and_start(
        &mut cri,
        &pod,
        container("sleeper", &fx.shell, &["sleep", "600"], &[]),
    )
    .await;
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let (seen, ok) = common::exec_sh(
        &mut cri,
        &id,
        "hostname; cat /etc/hostname; echo \"$HOSTNAME\"",
    )
    .await;
    assert!(ok, "{seen}");
    assert_eq!(seen.lines().collect::<Vec<_>>(), [&host, &host, &host]);

    let mut too_long = pod_config("too-long", None);
    too_long.hostname = "h".repeat(65);
    let error = common::run_pod(&mut cri, too_long).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error}");
    assert!(error.message().contains("config.hostname"), "{error}");
    let pods = cri
        .runtime
        .list_pod_sandbox(capstan_proto::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1, "the refused pod left a sandbox: {pods:?}");
}

/// The exec requests critest and crictl send: `cmd` run in `container` with `timeout` seconds.
fn exec_request(container: &str, cmd: &[&str], timeout: i64) -> ExecSyncRequest {
    ExecSyncRequest {
        container_id: container.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_and_remove_are_idempotent_and_a_slow_stop_holds_up_no_other_call() {
    require_root();
    let fx = common::ShellRuntime::start().await;
    let (runtime, shell) = (&fx.runtime, fx.shell.clone());
    let mut cri = runtime.client().await;

    // What critest's Idempotence specs send: IDs the runtime never had.
    let unknown = "0123456789abcdef0123456789abcdef";
    cri.runtime
        .stop_container(StopContainerRequest {
            container_id: unknown.into(),
            timeout: 0,
        })
        .await
        .unwrap_or_else(|e| panic!("StopContainer of an unknown ID: {e:?}"));
    cri.runtime
        .remove_container(RemoveContainerRequest {
            container_id: unknown.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer of an unknown ID: {e:?}"));
    cri.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: unknown.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox of an unknown ID: {e:?}"));
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: unknown.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox of an unknown ID: {e:?}"));

    let mut config = pod_config("idempotent", None);
    config.log_directory = fx.dir.path().join("logs").display().to_string();
    let pod = common::run_pod(&mut cri, config)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", runtime.log()));
    // One that takes its whole grace period (it traps SIGTERM, saying so in its log), and one
    // that has already ended.
    let slow = run(
        &mut cri,
        &pod,
        container(
            "slow",
            &shell,
            &[
                "sh",
                "-c",
                "trap 'echo got-term' TERM; echo ready; while true; do sleep 0.1; done",
            ],
            &[],
        ),
    )
    .await;
    let done = run(&mut cri, &pod, container("done", &shell, &["true"], &[])).await;
    wait_exited(&mut cri, &done).await;
    let slow_log = status(&mut cri, &slow).await.log_path;
    let mut other = cri.clone();
    let slow_id = slow.clone();
    let slow_stop = tokio::spawn(async move {
        let started = Instant::now();
        let result = other
            .runtime
            .stop_container(StopContainerRequest {
                container_id: slow_id,
                timeout: 8,
            })
            .await;
        (result, started.elapsed())
    });
    // Once the slow one has its SIGTERM, its stop is waiting out the grace period.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log_lines(&slow_log).iter().any(|l| l.ends_with("got-term")) {
        assert!(
            Instant::now() < deadline,
            "no SIGTERM seen: {:?}",
            log_lines(&slow_log)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stopping the exited one, twice, answers at once meanwhile (critest allows its timeout).
    for attempt in 0..2 {
        let started = Instant::now();
        cri.runtime
            .stop_container(StopContainerRequest {
                container_id: done.clone(),
                timeout: 60,
            })
            .await
            .unwrap_or_else(|e| panic!("stop of an exited container: {e:?}"));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "stop #{attempt} of an exited container took {:?} while another stop waited",
            started.elapsed()
        );
    }
    let (result, took) = slow_stop.await.unwrap();
    result.unwrap_or_else(|e| panic!("slow stop: {e:?}"));
    assert!(
        took >= Duration::from_secs(7),
        "grace period cut short: {took:?}"
    );
    let slow_status = status(&mut cri, &slow).await;
    assert_eq!(slow_status.state, ContainerState::ContainerExited as i32);
    assert_eq!(
        slow_status.exit_code, 137,
        "SIGKILLed after its grace period"
    );

    // StopPodSandbox twice, RemoveContainer twice, then the sandbox (gone: removing it again
    // succeeds too).
    for _ in 0..2 {
        cri.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StopPodSandbox of a stopped sandbox: {e:?}"));
    }
    for _ in 0..2 {
        cri.runtime
            .remove_container(RemoveContainerRequest {
                container_id: done.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("RemoveContainer again: {e:?}"));
    }
    for _ in 0..2 {
        cri.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("RemovePodSandbox again: {e:?}"));
    }
    // What is not idempotent still says what is missing.
    let error = cri
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: done.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
}

/// The `/proc/<pid>/stat` lines of every process `container` sees, zombies included (as the
/// `pgrep` critest runs would find them).
async fn process_stats(cri: &mut CriClient, container: &str) -> String {
    let (text, ok) =
        common::exec_sh(cri, container, "cat /proc/[0-9]*/stat 2>/dev/null; true").await;
    assert!(ok);
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_exec_is_killed_and_reaped_and_an_empty_cmd_is_refused() {
    require_root();
    let fx = common::ShellRuntime::start().await;
    let (runtime, shell) = (&fx.runtime, fx.shell.clone());
    let mut cri = runtime.client().await;
    let pod = common::run_pod(&mut cri, pod_config("execs", None))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", runtime.log()));
    // Its own process is no `sleep`, so any sleep seen inside is the exec's.
    let id = run(
        &mut cri,
        &pod,
        container("target", &shell, &["tail", "-f", "/dev/null"], &[]),
    )
    .await;

    // critest's "execSync with timeout": sleep 4321 for at most a second.
    let started = Instant::now();
    let error = cri
        .runtime
        .exec_sync(exec_request(&id, &["sleep", "4321"], 1))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(error.message().contains("timeout"), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // Right away, as critest looks: no sleep, not even a zombie, in the container...
    let stats = process_stats(&mut cri, &id).await;
    assert!(
        !stats.contains("(sleep)"),
        "the timed-out exec is left: {stats}"
    );
    // ...nor on the host, nor its exec-in helper.
    let left = host_processes_mentioning("sleep 4321");
    assert!(left.is_empty(), "{left:?}");
    let marker = fx.dir.path().display().to_string();
    let helpers: Vec<String> = host_processes_mentioning(" exec-in ")
        .into_iter()
        .filter(|c| c.contains(&marker))
        .collect();
    assert!(helpers.is_empty(), "{helpers:?}");
    // Ordinary execs still work afterwards.
    let (out, ok) = common::exec_sh(&mut cri, &id, "echo still-here").await;
    assert!(ok && out.contains("still-here"), "{out}");

    // An empty command, or one whose executable is empty, is refused naming cmd.
    for cmd in [&[][..], &[""][..], &["", "x"][..]] {
        let error = cri
            .runtime
            .exec_sync(exec_request(&id, cmd, 5))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{cmd:?}: {error:?}");
        assert!(error.message().contains("cmd"), "{cmd:?}: {error:?}");
    }
    let error = cri
        .runtime
        .exec(capstan_proto::ExecRequest {
            container_id: id.clone(),
            cmd: vec![String::new()],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert!(error.message().contains("cmd"), "{error:?}");
}

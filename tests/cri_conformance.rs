//! What critest's validation suite (cri-tools v1.33) and the upstream kubelet 1.33 send that a
//! plain crictl session does not: host PID namespaces, privileged containers and ALL
//! capabilities, seccomp profiles in every spelling, mount propagation, and the kubelet's own
//! resource requests. Each test builds the CRI fields those clients set and checks what they
//! check, through the real binary's CRI socket.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_proto::{
    Capability, ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, HugepageLimit, ImageSpec, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, MountPropagation, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest, SecurityProfile,
    security_profile::ProfileType,
};
use capstan_testkit::cri::CriClient;
use capstan_testkit::mounts::mounted_under;
use capstan_testkit::require_root;
use common::ShellRuntime;
use tonic::Code;

fn pod(name: &str, linux: LinuxPodSandboxConfig) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "critest".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        linux: Some(linux),
        ..Default::default()
    }
}

fn privileged_pod(name: &str) -> PodSandboxConfig {
    pod(
        name,
        LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
}

fn container(name: &str, image: &str, sc: LinuxContainerSecurityContext) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "600".into()],
        linux: Some(LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// ExecSync of `cmd`: stdout, stderr, exit code.
async fn exec(cri: &mut CriClient, id: &str, cmd: &[&str]) -> (String, String, i32) {
    let out = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .unwrap_or_else(|e| panic!("exec {cmd:?}: {e}"))
        .into_inner();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.exit_code,
    )
}

/// CreateContainer + StartContainer; the error message of whichever failed, with the log.
async fn try_run(
    cri: &mut CriClient,
    runtime: &common::RuntimeProcess,
    pod: &str,
    config: ContainerConfig,
) -> Result<String, tonic::Status> {
    let id = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: None,
        })
        .await?
        .into_inner()
        .container_id;
    cri.runtime
        .start_container(capstan_proto::StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while common::container_status(cri, &id).await.state != ContainerState::ContainerRunning as i32
    {
        assert!(
            Instant::now() < deadline,
            "{id} is not running\n{}",
            runtime.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(id)
}

async fn run(
    cri: &mut CriClient,
    runtime: &common::RuntimeProcess,
    pod: &str,
    config: ContainerConfig,
) -> String {
    let name = config.metadata.clone().unwrap_or_default().name;
    try_run(cri, runtime, pod, config)
        .await
        .unwrap_or_else(|e| panic!("container {name}: {e}\n{}", monitor_logs(runtime)))
}

/// Every pod monitor's log: libcontainer's init logs the cause its error message leaves out.
fn monitor_logs(runtime: &common::RuntimeProcess) -> String {
    let pods = runtime.dir.join("state/pods");
    std::fs::read_dir(&pods)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("monitor.log")).ok())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn run_pod(
    cri: &mut CriClient,
    runtime: &common::RuntimeProcess,
    config: PodSandboxConfig,
) -> String {
    common::run_pod(cri, config)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", runtime.log()))
}

async fn remove_pod(cri: &mut CriClient, id: String) {
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
}

/// The host PID of a running container, from its verbose status.
async fn host_pid(cri: &mut CriClient, id: &str) -> u64 {
    let info = cri
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info;
    let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    info["pid"].as_u64().expect("pid")
}

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
        .to_string()
}

/// critest "runtime should support HostPID": with `pid = NODE` on the sandbox and the
/// container, a container sees another hostPID container's process under its host PID, and
/// the host's own processes.
#[tokio::test(flavor = "multi_thread")]
async fn host_pid_containers_see_the_hosts_processes() {
    require_root();
    let fx = ShellRuntime::start().await;
    let runtime = &fx.runtime;
    let mut cri = runtime.client().await;
    let host_pid_ns = NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Node as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let pod_id = run_pod(
        &mut cri,
        runtime,
        pod(
            "hostpid",
            LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(host_pid_ns.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    )
    .await;
    let sc = LinuxContainerSecurityContext {
        namespace_options: Some(host_pid_ns),
        ..Default::default()
    };
    let mut first = container("first", &fx.shell, sc.clone());
    first.command = vec!["sleep".into(), "4711".into()];
    let first = run(&mut cri, runtime, &pod_id, first).await;
    let first_pid = host_pid(&mut cri, &first).await;
    let second = run(
        &mut cri,
        runtime,
        &pod_id,
        container("second", &fx.shell, sc),
    )
    .await;

    let (pids, _, _) = exec(&mut cri, &second, &["sh", "-c", "pidof sleep || true"]).await;
    assert!(
        pids.split_whitespace().any(|p| p == first_pid.to_string()),
        "pid {first_pid} of the other container not among {pids:?}"
    );
    let me = std::process::id();
    let (cmdline, _, code) =
        exec(&mut cri, &second, &["cat", &format!("/proc/{me}/cmdline")]).await;
    assert_eq!(code, 0, "the test process {me} is not visible");
    let own = std::fs::read_to_string(format!("/proc/{me}/cmdline")).unwrap();
    assert_eq!(cmdline, own);
    remove_pod(&mut cri, pod_id).await;
}

/// critest "Privileged is true/false" and "adding ALL capabilities": a privileged container
/// administers its pod's network, holds every capability, runs without seccomp, masked or
/// read-only paths, sees the host's devices and has rw sysfs and cgroupfs; an unprivileged one
/// cannot; "ALL" added to an unprivileged container fills its bounding set.
#[tokio::test(flavor = "multi_thread")]
async fn privileged_containers_and_all_capabilities_run() {
    require_root();
    let fx = ShellRuntime::start().await;
    let runtime = &fx.runtime;
    let mut cri = runtime.client().await;
    // "Every capability" is what the runtime holds, as under containerd: the runtime runs with
    // this test's set (which lacks CAP_SYS_RESOURCE on some machines).
    let full_set = status_field(
        &std::fs::read_to_string("/proc/self/status").unwrap(),
        "CapEff:",
    );
    assert_ne!(full_set, "0000000000000000");

    let privileged = run_pod(&mut cri, runtime, privileged_pod("privileged")).await;
    let id = run(
        &mut cri,
        runtime,
        &privileged,
        container(
            "privileged",
            &fx.shell,
            LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            },
        ),
    )
    .await;
    let (_, stderr, code) = exec(&mut cri, &id, &["brctl", "addbr", "foobar"]).await;
    assert_eq!(code, 0, "brctl addbr in a privileged container: {stderr}");
    let (status, _, _) = exec(&mut cri, &id, &["cat", "/proc/self/status"]).await;
    assert_eq!(status_field(&status, "CapBnd:"), full_set);
    assert_eq!(status_field(&status, "CapEff:"), full_set);
    assert_eq!(status_field(&status, "Seccomp:"), "0");
    let (mounts, _, _) = exec(&mut cri, &id, &["cat", "/proc/self/mounts"]).await;
    let options_at = |target: &str| {
        mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f.len() > 3 && f[1] == target)
            .map(|f| f[3].to_string())
            .next_back()
    };
    for target in ["/sys", "/sys/fs/cgroup"] {
        let options = options_at(target).unwrap_or_else(|| panic!("{target} in {mounts}"));
        assert!(options.split(',').any(|o| o == "rw"), "{target}: {options}");
    }
    for masked in ["/proc/kcore", "/proc/keys", "/proc/sys", "/sys/firmware"] {
        assert!(options_at(masked).is_none(), "{masked} is masked: {mounts}");
    }
    // Host devices: the host's block devices and, where it has one, /dev/kmsg.
    let host_dev = if Path::new("/dev/kmsg").exists() {
        "/dev/kmsg"
    } else {
        "/dev/full"
    };
    let (_, _, code) = exec(&mut cri, &id, &["test", "-c", host_dev]).await;
    assert_eq!(code, 0, "{host_dev} is missing in a privileged container");

    let plain = run_pod(&mut cri, runtime, pod("plain", Default::default())).await;
    let unprivileged = run(
        &mut cri,
        runtime,
        &plain,
        container("unprivileged", &fx.shell, Default::default()),
    )
    .await;
    let (_, _, code) = exec(&mut cri, &unprivileged, &["brctl", "addbr", "foobar"]).await;
    assert_ne!(code, 0, "brctl addbr worked without privileges");
    if capstan_testkit::cgroups::driver() == capstan_testkit::cgroups::Driver::V1 {
        // v1 (no cgroup namespace): the container sees its own cgroup, read-only, not the
        // hierarchy's root with every other cgroup of the host below it.
        let script = "grep ' /sys/fs/cgroup/memory ' /proc/self/mounts; \
                      find /sys/fs/cgroup/memory/ -mindepth 1 -type d | wc -l; \
                      test -f /sys/fs/cgroup/memory/memory.limit_in_bytes && echo has-files";
        let (out, stderr, _) = exec(&mut cri, &unprivileged, &["sh", "-c", script]).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}{stderr}");
        let options = lines[0].split_whitespace().nth(3).unwrap_or("");
        assert!(options.split(',').any(|o| o == "ro"), "{}", lines[0]);
        assert_eq!((lines[1], lines[2]), ("0", "has-files"), "{out}");
    }
    let all = run(
        &mut cri,
        runtime,
        &plain,
        container(
            "all-caps",
            &fx.shell,
            LinuxContainerSecurityContext {
                capabilities: Some(Capability {
                    add_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    )
    .await;
    let (status, stderr, code) = exec(&mut cri, &all, &["cat", "/proc/self/status"]).await;
    assert_eq!((code, stderr.as_str()), (0, ""));
    assert_eq!(status_field(&status, "CapBnd:"), full_set);
    remove_pod(&mut cri, privileged).await;
    remove_pod(&mut cri, plain).await;
}

const BLOCK_HOSTNAME: &str = r#"{
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{ "names": ["sethostname"], "action": "SCMP_ACT_ERRNO" }]
}"#;

const BLOCK_CHMOD: &str = r#"{
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{ "names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO" }]
}"#;

fn seccomp(profile_type: ProfileType, localhost_ref: &Path) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: localhost_ref.display().to_string(),
    })
}

/// critest's "SeccompProfilePath" context (the profiles it writes, the commands it runs), plus
/// the deprecated `seccomp_profile_path` spellings.
#[tokio::test(flavor = "multi_thread")]
async fn seccomp_profiles_localhost_runtime_default_and_privileged() {
    require_root();
    let fx = ShellRuntime::start().await;
    let runtime = &fx.runtime;
    let mut cri = runtime.client().await;
    let profiles = fx.dir.path().join("seccomp");
    std::fs::create_dir_all(&profiles).unwrap();
    let block_hostname = profiles.join("block-host-name.json");
    let block_chmod = profiles.join("block-chmod.json");
    std::fs::write(&block_hostname, BLOCK_HOSTNAME).unwrap();
    std::fs::write(&block_chmod, BLOCK_CHMOD).unwrap();
    let none = PathBuf::new();

    let pod_id = run_pod(&mut cri, runtime, pod("seccomp", Default::default())).await;
    let mut n = 0;
    let mut with = async |cri: &mut CriClient, sc: LinuxContainerSecurityContext| {
        n += 1;
        run(
            cri,
            runtime,
            &pod_id,
            container(&format!("c{n}"), &fx.shell, sc),
        )
        .await
    };
    let seccomp_mode = async |cri: &mut CriClient, id: &str| {
        let (status, _, _) = exec(cri, id, &["cat", "/proc/self/status"]).await;
        status_field(&status, "Seccomp:")
    };

    // Localhost: chmod is refused.
    let id = with(
        &mut cri,
        LinuxContainerSecurityContext {
            seccomp: seccomp(ProfileType::Localhost, &block_chmod),
            ..Default::default()
        },
    )
    .await;
    let (_, stderr, code) = exec(&mut cri, &id, &["chmod", "400", "/"]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    // RuntimeDefault is profile type 0: critest sends an empty SecurityProfile.
    let id = with(
        &mut cri,
        LinuxContainerSecurityContext {
            seccomp: Some(SecurityProfile::default()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(seccomp_mode(&mut cri, &id).await, "2");
    // Unconfined, and no profile at all.
    let id = with(
        &mut cri,
        LinuxContainerSecurityContext {
            seccomp: seccomp(ProfileType::Unconfined, &none),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(seccomp_mode(&mut cri, &id).await, "0");
    let id = with(&mut cri, Default::default()).await;
    assert_eq!(seccomp_mode(&mut cri, &id).await, "0");

    // SYS_ADMIN may set the hostname unless the profile blocks it.
    let sys_admin = || {
        Some(Capability {
            add_capabilities: vec!["SYS_ADMIN".into()],
            ..Default::default()
        })
    };
    let id = with(
        &mut cri,
        LinuxContainerSecurityContext {
            capabilities: sys_admin(),
            seccomp: seccomp(ProfileType::Unconfined, &none),
            ..Default::default()
        },
    )
    .await;
    let (_, stderr, code) = exec(&mut cri, &id, &["hostname", "ANewHostName"]).await;
    assert_eq!(code, 0, "{stderr}");
    let id = with(
        &mut cri,
        LinuxContainerSecurityContext {
            capabilities: sys_admin(),
            seccomp: seccomp(ProfileType::Localhost, &block_hostname),
            ..Default::default()
        },
    )
    .await;
    let (_, stderr, code) = exec(&mut cri, &id, &["hostname", "ANewHostName"]).await;
    assert_ne!(code, 0, "the profile did not block sethostname");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");

    // The deprecated string field.
    #[allow(deprecated)]
    let old = |path: String| LinuxContainerSecurityContext {
        seccomp_profile_path: path,
        ..Default::default()
    };
    let id = with(
        &mut cri,
        old(format!("localhost/{}", block_chmod.display())),
    )
    .await;
    let (_, stderr, code) = exec(&mut cri, &id, &["chmod", "400", "/"]).await;
    assert!(
        code != 0 && stderr.contains("Operation not permitted"),
        "{stderr}"
    );
    let id = with(&mut cri, old("runtime/default".into())).await;
    assert_eq!(seccomp_mode(&mut cri, &id).await, "2");
    let id = with(&mut cri, old("unconfined".into())).await;
    assert_eq!(seccomp_mode(&mut cri, &id).await, "0");

    // A profile file that is not there names the field.
    let error = cri
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(container(
                "missing-profile",
                &fx.shell,
                LinuxContainerSecurityContext {
                    seccomp: seccomp(ProfileType::Localhost, &profiles.join("nope.json")),
                    ..Default::default()
                },
            )),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{}", error.message());
    assert!(
        error.message().contains("seccomp.localhost_ref"),
        "{}",
        error.message()
    );

    // A privileged container ignores the profile.
    let privileged = run_pod(&mut cri, runtime, privileged_pod("seccomp-privileged")).await;
    let id = run(
        &mut cri,
        runtime,
        &privileged,
        container(
            "privileged",
            &fx.shell,
            LinuxContainerSecurityContext {
                privileged: true,
                seccomp: seccomp(ProfileType::Localhost, &block_hostname),
                ..Default::default()
            },
        ),
    )
    .await;
    let (_, stderr, code) = exec(&mut cri, &id, &["hostname", "ANewHostName"]).await;
    assert_eq!(code, 0, "{stderr}");
    remove_pod(&mut cri, pod_id).await;
    remove_pod(&mut cri, privileged).await;
}

/// A host directory prepared as critest's createHostPathForMountPropagation does: `mnt`
/// bind-mounted on itself, made rshared or rprivate, with a flag file in a sibling directory
/// that the test later mounts below `mnt`.
struct PropagationDir {
    _dir: tempfile::TempDir,
    source: PathBuf,
    flag_dir: PathBuf,
    host_mount_point: PathBuf,
}

impl PropagationDir {
    fn new(shared: bool) -> Self {
        use nix::mount::{MsFlags, mount};
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("mnt");
        let host_mount_point = source.join("propagationMnt");
        let flag_dir = dir.path().join("propagationSrcDir");
        std::fs::create_dir_all(&host_mount_point).unwrap();
        std::fs::create_dir_all(&flag_dir).unwrap();
        std::fs::write(flag_dir.join("flagFile"), "").unwrap();
        let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
        mount(Some(&source), &source, None::<&str>, flags, None::<&str>).unwrap();
        let propagation = if shared {
            MsFlags::MS_SHARED
        } else {
            MsFlags::MS_PRIVATE
        };
        mount(
            None::<&str>,
            &source,
            None::<&str>,
            propagation | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        PropagationDir {
            _dir: dir,
            source,
            flag_dir,
            host_mount_point,
        }
    }
}

impl Drop for PropagationDir {
    fn drop(&mut self) {
        for mount in mounted_under(&self.source).into_iter().rev() {
            let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = nix::mount::umount2(&self.source, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// critest "Container Mount Propagation": a privileged container with the source mounted at
/// the same path; a mount made on the host below it afterwards shows in the container for
/// rslave and rshared only, and one made in the container shows on the host for rshared only.
/// As containerd, rshared needs a shared source and rslave a shared or slave one.
#[tokio::test(flavor = "multi_thread")]
async fn mount_propagation_private_host_to_container_and_bidirectional() {
    require_root();
    let fx = ShellRuntime::start().await;
    let runtime = &fx.runtime;
    let mut cri = runtime.client().await;
    let pod_id = run_pod(&mut cri, runtime, privileged_pod("propagation")).await;
    let cases = [
        (MountPropagation::PropagationPrivate, false, false),
        (MountPropagation::PropagationHostToContainer, true, false),
        (MountPropagation::PropagationBidirectional, true, true),
    ];
    for (propagation, host_to_container, container_to_host) in cases {
        let dir = PropagationDir::new(propagation != MountPropagation::PropagationPrivate);
        let source = dir.source.display().to_string();
        let mut config = container(
            &format!("propagation-{}", propagation as i32),
            &fx.shell,
            LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            },
        );
        config.mounts = vec![Mount {
            host_path: source.clone(),
            container_path: source.clone(),
            propagation: propagation as i32,
            ..Default::default()
        }];
        let id = run(&mut cri, runtime, &pod_id, config).await;
        let reported = common::container_status(&mut cri, &id).await.mounts;
        assert_eq!(reported.len(), 1);
        assert_eq!(reported[0].propagation, propagation as i32);

        nix::mount::mount(
            Some(&dir.flag_dir),
            &dir.host_mount_point,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        let inside = dir.host_mount_point.display().to_string();
        let (listing, stderr, code) = exec(&mut cri, &id, &["ls", "-A", &inside]).await;
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(
            !listing.trim().is_empty(),
            host_to_container,
            "{propagation:?}: host mount seen in the container: {listing:?}"
        );

        let container_mount_point = dir.source.join("containerMntPoint");
        let target = container_mount_point.display().to_string();
        let script = format!("mkdir -p {target} && mount --bind /etc {target}");
        let (_, stderr, code) = exec(&mut cri, &id, &["sh", "-c", &script]).await;
        assert_eq!(code, 0, "{propagation:?}: mount in the container: {stderr}");
        let seen = std::fs::read_dir(&container_mount_point).unwrap().count();
        assert_eq!(
            seen > 0,
            container_to_host,
            "{propagation:?}: container mount seen on the host"
        );
        cri.runtime
            .remove_container(capstan_proto::RemoveContainerRequest { container_id: id })
            .await
            .unwrap();
    }

    // containerd's checks: rshared needs a shared source, rslave a shared or slave one.
    for propagation in [
        MountPropagation::PropagationBidirectional,
        MountPropagation::PropagationHostToContainer,
    ] {
        let dir = PropagationDir::new(false);
        let mut config = container("needs-shared", &fx.shell, Default::default());
        config.mounts = vec![Mount {
            host_path: dir.source.display().to_string(),
            container_path: "/data".into(),
            propagation: propagation as i32,
            ..Default::default()
        }];
        let error = cri
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(config),
                sandbox_config: None,
            })
            .await
            .unwrap_err();
        assert_eq!(
            error.code(),
            Code::FailedPrecondition,
            "{}",
            error.message()
        );
        assert!(
            error.message().contains("config.mounts[0].propagation")
                && error.message().contains("not a shared"),
            "{}",
            error.message()
        );
    }
    remove_pod(&mut cri, pod_id).await;
    assert!(
        mounted_under(fx.dir.path()).is_empty(),
        "mounts left: {:?}",
        mounted_under(fx.dir.path())
    );
}

/// Whether the kubelet would see a swap controller (its swapControllerAvailable): v1's memsw
/// files, v2's memory.swap.max in its own cgroup.
fn swap_controller_available() -> bool {
    match capstan_testkit::cgroups::driver() {
        capstan_testkit::cgroups::Driver::V1 => {
            Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        }
        capstan_testkit::cgroups::Driver::V2 => false,
    }
}

/// The upstream kubelet 1.33's CreateContainer for a burstable pod (cgroupfs driver): its exact
/// LinuxContainerResources, with a zero hugepage limit for every page size the host has, a
/// pod cgroup parent as the kubelet makes it (here below the test's cgroup), and its log path
/// layout. Hosts without a hugetlb hierarchy (or with controllers not enabled below the pod)
/// must still run it, the missing controllers skipped as runc skips them.
#[tokio::test(flavor = "multi_thread")]
async fn kubelet_burstable_container_runs_without_every_cgroup_controller() {
    require_root();
    let fx = ShellRuntime::start().await;
    let runtime = &fx.runtime;
    let mut cri = runtime.client().await;
    let test_cgroup = capstan_testkit::cgroups::TestCgroup::new().unwrap();
    test_cgroup.delegate_to_children();
    let uid = "5a1c3a2e-7d4b-4b8e-9a55-0c7d2f1e9b10";
    let pod_cgroup = format!(
        "{}/kubepods/burstable/pod{uid}",
        test_cgroup.path().trim_end_matches('/')
    );
    // The kubelet makes the pod's cgroup before RunPodSandbox.
    capstan_runtime::cgroups::Hierarchy::detect()
        .create(&pod_cgroup)
        .unwrap();
    let logs = fx
        .dir
        .path()
        .join(format!("var/log/pods/default_web_{uid}"));
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: uid.into(),
            attempt: 0,
        }),
        hostname: "web".into(),
        log_directory: logs.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: pod_cgroup.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod_id = run_pod(&mut cri, runtime, config).await;

    let mut page_sizes: Vec<String> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let kb: u64 = name
                        .strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse()
                        .ok()?;
                    Some(if kb >= 1 << 20 {
                        format!("{}GB", kb >> 20)
                    } else if kb >= 1 << 10 {
                        format!("{}MB", kb >> 10)
                    } else {
                        format!("{kb}KB")
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    page_sizes.sort();
    // requests cpu 100m / memory 64Mi, limits cpu 500m / memory 128Mi, on a node whose memory
    // makes oom_score_adj 999 - 64Mi share (the kubelet's burstable formula).
    let memory_limit = 128i64 << 20;
    let resources = LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 102,
        memory_limit_in_bytes: memory_limit,
        oom_score_adj: 996,
        hugepage_limits: page_sizes
            .iter()
            .map(|size| HugepageLimit {
                page_size: size.clone(),
                limit: 0,
            })
            .collect(),
        unified: HashMap::new(),
        memory_swap_limit_in_bytes: if swap_controller_available() {
            memory_limit
        } else {
            0
        },
        ..Default::default()
    };
    let mut config = container("app", &fx.shell, Default::default());
    config.log_path = "app/0.log".into();
    config.command = vec![
        "sh".into(),
        "-c".into(),
        "echo started; exec sleep 600".into(),
    ];
    if let Some(linux) = config.linux.as_mut() {
        linux.resources = Some(resources);
    }
    let id = run(&mut cri, runtime, &pod_id, config).await;

    let container_cgroup = format!("{pod_cgroup}/{id}");
    let hierarchy = capstan_runtime::cgroups::Hierarchy::detect();
    let (file, expected) = match hierarchy.driver() {
        capstan_runtime::cgroups::Driver::V1 => ("memory.limit_in_bytes", memory_limit.to_string()),
        capstan_runtime::cgroups::Driver::V2 => ("memory.max", memory_limit.to_string()),
    };
    assert_eq!(
        hierarchy
            .read("memory", &container_cgroup, file)
            .unwrap()
            .trim(),
        expected
    );
    let pid = host_pid(&mut cri, &id).await;
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
            .unwrap()
            .trim(),
        "996"
    );
    let log = logs.join("app/0.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("started")
    {
        assert!(Instant::now() < deadline, "{} has no output", log.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    remove_pod(&mut cri, pod_id).await;
    assert!(
        hierarchy
            .dirs(&container_cgroup)
            .iter()
            .all(|d| !d.exists()),
        "the container's cgroup is left"
    );
}

//! The CRI runtime under conditions the happy path does not meet: list filters as crictl sends
//! them, container creation that fails half-way, corrupted registry content, exec output beyond
//! the cap, and SIGKILL of the runtime while pods are being started.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_proto::security_profile::ProfileType;
use capstan_proto::{
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState, ContainerStateValue,
    CreateContainerRequest, ExecSyncRequest, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, ListContainersRequest, ListImagesRequest, ListPodSandboxRequest,
    Mount, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata, PodSandboxState,
    PodSandboxStateValue, PullImageRequest, RemoveContainerRequest, RemovePodSandboxRequest,
    SecurityProfile, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use capstan_runtime::pods::MAX_EXEC_OUTPUT;
use capstan_testkit::cri::CriClient;
use capstan_testkit::images::{ManifestFormat, catalog};
use capstan_testkit::mounts::mounted_under;
use capstan_testkit::registry::LocalRegistry;
use capstan_testkit::require_root;
use common::{CniSetup, RuntimeProcess, container_status as status, exec_sh as sh};
use tonic::Code;

/// A registry with the shell image, CNI, and a runtime that has pulled the image.
/// Fields drop in order: the runtime (and its pods) before the bridge and the directory.
struct Fixture {
    runtime: RuntimeProcess,
    cri: CriClient,
    image: String,
    cni: CniSetup,
    registry: LocalRegistry,
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    fixture_with(|_| {}).await
}

/// [`fixture`], with `prepare` run on the CNI setup before the runtime starts.
async fn fixture_with(prepare: impl FnOnce(&CniSetup)) -> Fixture {
    let registry = LocalRegistry::start().unwrap();
    registry
        .client()
        .push_image("shell", "1", &catalog().unwrap().shell, ManifestFormat::Oci)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cni = CniSetup::new(dir.path(), None);
    prepare(&cni);
    let config = format!(
        "[registry]\ninsecure = [\"{}\"]\n{}",
        registry.host(),
        cni.toml()
    );
    let runtime = RuntimeProcess::start(dir.path(), &config);
    let mut cri = runtime.client().await;
    let image = format!("{}/shell:1", registry.host());
    pull(&mut cri, &image)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", runtime.log()));
    Fixture {
        runtime,
        cri,
        image,
        cni,
        registry,
        dir,
    }
}

async fn pull(cri: &mut CriClient, image: &str) -> Result<String, tonic::Status> {
    cri.images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn pod(name: &str, pod_labels: &[(&str, &str)]) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            namespace: "robust".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        }),
        labels: labels(pod_labels),
        ..Default::default()
    }
}

fn container(name: &str, image: &str, script: &str, extra: &[(&str, &str)]) -> ContainerConfig {
    let mut all = labels(extra);
    all.insert("name".into(), name.into());
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        labels: all,
        ..Default::default()
    }
}

async fn create(
    cri: &mut CriClient,
    pod: &str,
    config: ContainerConfig,
) -> Result<String, tonic::Status> {
    cri.runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: None,
        })
        .await
        .map(|r| r.into_inner().container_id)
}

async fn wait_state(cri: &mut CriClient, id: &str, want: ContainerState) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(cri, id).await.state != want as i32 {
        assert!(Instant::now() < deadline, "container {id} never {want:?}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn list_containers(cri: &mut CriClient, filter: ContainerFilter) -> BTreeSet<String> {
    cri.runtime
        .list_containers(ListContainersRequest {
            filter: Some(filter),
        })
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect()
}

async fn list_pods(cri: &mut CriClient, filter: PodSandboxFilter) -> BTreeSet<String> {
    cri.runtime
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(filter),
        })
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|p| p.id)
        .collect()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// The shortest prefix of `id` that no other of `all` starts with (at least 3 characters, so
/// it is a real prefix and not a near-empty filter).
fn unique_prefix(id: &str, all: &[&String]) -> String {
    (3..id.len())
        .map(|n| &id[..n])
        .find(|p| all.iter().filter(|o| o.starts_with(p)).count() == 1)
        .unwrap_or(id)
        .to_string()
}

fn running() -> Option<ContainerStateValue> {
    Some(ContainerStateValue {
        state: ContainerState::ContainerRunning as i32,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_match_as_crictl_uses_them() {
    require_root();
    let fx = fixture().await;
    let (mut cri, image, runtime) = (fx.cri.clone(), &fx.image, &fx.runtime);
    let a = common::run_pod(&mut cri, pod("a", &[("app", "a"), ("tier", "front")]))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", runtime.log()));
    let b = common::run_pod(&mut cri, pod("b", &[("app", "b"), ("tier", "front")]))
        .await
        .unwrap();
    let c = common::run_pod(&mut cri, pod("c", &[("app", "c"), ("tier", "back")]))
        .await
        .unwrap();
    cri.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: c.clone(),
        })
        .await
        .unwrap();

    let sleep = "exec sleep 600";
    let run_a = common::create_and_start(
        &mut cri,
        &a,
        container("run-a", image, sleep, &[("pod", "a"), ("kind", "running")]),
    )
    .await;
    let exit_a = common::create_and_start(
        &mut cri,
        &a,
        container(
            "exit-a",
            image,
            "exit 0",
            &[("pod", "a"), ("kind", "exited")],
        ),
    )
    .await;
    let new_a = create(
        &mut cri,
        &a,
        container("new-a", image, sleep, &[("pod", "a"), ("kind", "created")]),
    )
    .await
    .unwrap();
    let run_b = common::create_and_start(
        &mut cri,
        &b,
        container("run-b", image, sleep, &[("pod", "b"), ("kind", "running")]),
    )
    .await;
    let new_b = create(
        &mut cri,
        &b,
        container("new-b", image, sleep, &[("pod", "b"), ("kind", "created")]),
    )
    .await
    .unwrap();
    wait_state(&mut cri, &exit_a, ContainerState::ContainerExited).await;
    let containers = [&run_a, &exit_a, &new_a, &run_b, &new_b];
    let pods = [&a, &b, &c];

    // crictl ps: running only; crictl ps -a: everything.
    assert_eq!(
        list_containers(
            &mut cri,
            ContainerFilter {
                state: running(),
                ..Default::default()
            }
        )
        .await,
        set(&[&run_a, &run_b])
    );
    assert_eq!(
        list_containers(&mut cri, ContainerFilter::default()).await,
        set(&containers)
    );
    for (want, state) in [
        (set(&[&new_a, &new_b]), ContainerState::ContainerCreated),
        (set(&[&exit_a]), ContainerState::ContainerExited),
        (set(&[]), ContainerState::ContainerUnknown),
    ] {
        let got = list_containers(
            &mut cri,
            ContainerFilter {
                state: Some(ContainerStateValue {
                    state: state as i32,
                }),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(got, want, "state {state:?}");
    }

    // --id: a unique prefix of the ID (as containerd matches) or the full ID; with the default
    // running state an exited container is not shown.
    for id in containers {
        let prefix = unique_prefix(id, &containers);
        for given in [prefix.as_str(), id.as_str()] {
            let got = list_containers(
                &mut cri,
                ContainerFilter {
                    id: given.into(),
                    ..Default::default()
                },
            )
            .await;
            assert_eq!(got, set(&[id]), "--id {given}");
        }
    }
    let exited_running = list_containers(
        &mut cri,
        ContainerFilter {
            id: unique_prefix(&exit_a, &containers),
            state: running(),
            ..Default::default()
        },
    )
    .await;
    assert!(exited_running.is_empty(), "{exited_running:?}");
    let no_such = list_containers(
        &mut cri,
        ContainerFilter {
            id: "zzzz".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(no_such.is_empty(), "an unknown ID lists nothing, not all");

    // --pod: a prefix of the sandbox ID.
    let a_prefix = unique_prefix(&a, &pods);
    let b_prefix = unique_prefix(&b, &pods);
    for (given, state, want) in [
        (&a_prefix, None, set(&[&run_a, &exit_a, &new_a])),
        (&a, None, set(&[&run_a, &exit_a, &new_a])),
        (&a_prefix, running(), set(&[&run_a])),
        (&b_prefix, None, set(&[&run_b, &new_b])),
        (&c, None, set(&[])),
    ] {
        let got = list_containers(
            &mut cri,
            ContainerFilter {
                pod_sandbox_id: given.clone(),
                state,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(got, want, "--pod {given} --state {state:?}");
    }

    // --label: every pair must match.
    for (selector, pod_filter, want) in [
        (vec![("kind", "running")], "", set(&[&run_a, &run_b])),
        (vec![("pod", "a"), ("kind", "created")], "", set(&[&new_a])),
        (vec![("pod", "a"), ("kind", "nope")], "", set(&[])),
        (vec![("pod", "b")], a_prefix.as_str(), set(&[])),
        (vec![("name", "new-b")], b_prefix.as_str(), set(&[&new_b])),
        (vec![("missing", "")], "", set(&[])),
    ] {
        let got = list_containers(
            &mut cri,
            ContainerFilter {
                label_selector: labels(&selector),
                pod_sandbox_id: pod_filter.into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(got, want, "--label {selector:?} --pod {pod_filter:?}");
    }

    // crictl pods --state, --id, --label.
    let ready = |state: PodSandboxState| {
        Some(PodSandboxStateValue {
            state: state as i32,
        })
    };
    assert_eq!(
        list_pods(&mut cri, PodSandboxFilter::default()).await,
        set(&pods)
    );
    for (filter, want) in [
        (
            PodSandboxFilter {
                state: ready(PodSandboxState::SandboxReady),
                ..Default::default()
            },
            set(&[&a, &b]),
        ),
        (
            PodSandboxFilter {
                state: ready(PodSandboxState::SandboxNotready),
                ..Default::default()
            },
            set(&[&c]),
        ),
        (
            PodSandboxFilter {
                id: a_prefix.clone(),
                ..Default::default()
            },
            set(&[&a]),
        ),
        (
            PodSandboxFilter {
                id: unique_prefix(&c, &pods),
                state: ready(PodSandboxState::SandboxReady),
                ..Default::default()
            },
            set(&[]),
        ),
        (
            PodSandboxFilter {
                id: "zzzz".into(),
                ..Default::default()
            },
            set(&[]),
        ),
        (
            PodSandboxFilter {
                label_selector: labels(&[("tier", "front")]),
                ..Default::default()
            },
            set(&[&a, &b]),
        ),
        (
            PodSandboxFilter {
                label_selector: labels(&[("tier", "front"), ("app", "b")]),
                ..Default::default()
            },
            set(&[&b]),
        ),
        (
            PodSandboxFilter {
                label_selector: labels(&[("tier", "back")]),
                state: ready(PodSandboxState::SandboxReady),
                ..Default::default()
            },
            set(&[]),
        ),
        (
            PodSandboxFilter {
                label_selector: labels(&[("tier", "back")]),
                id: c[..20].to_string(),
                ..Default::default()
            },
            set(&[&c]),
        ),
    ] {
        let got = list_pods(&mut cri, filter.clone()).await;
        assert_eq!(got, want, "{filter:?}");
    }

    for pod in pods {
        cri.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap();
    }
}

fn with_security(
    mut config: ContainerConfig,
    security: LinuxContainerSecurityContext,
) -> ContainerConfig {
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(security),
        ..Default::default()
    });
    config
}

/// Directories under the sandbox's container state directory.
fn container_dirs(dir: &Path, sandbox: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("state/pods").join(sandbox).join("containers"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_create_container_leaves_nothing_behind() {
    require_root();
    let fx = fixture().await;
    let (mut cri, image, runtime, dir) = (fx.cri.clone(), &fx.image, &fx.runtime, fx.dir.path());
    let pod = common::run_pod(&mut cri, pod("p", &[]))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", runtime.log()));
    let mounts_before = mounted_under(dir);
    assert!(
        container_dirs(dir, &pod).is_empty() && dir.join("state/pods").is_dir(),
        "the state layout changed: {}",
        dir.join("state/pods").display()
    );

    let sleeper = |name: &str| container(name, image, "exec sleep 600", &[]);
    let missing = dir.join("no-such-profile.json");
    let mut bad_mount = sleeper("bad-mount");
    bad_mount.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: "relative/path".into(),
        ..Default::default()
    }];
    let mut absent_mount = sleeper("absent-mount");
    absent_mount.mounts = vec![Mount {
        container_path: "/data".into(),
        host_path: dir.join("no-such-dir").display().to_string(),
        ..Default::default()
    }];
    // All but the last fail once the rootfs overlay is mounted: the spec needs the image's
    // /etc/passwd, and mounts and seccomp are part of the spec. A missing host path is refused
    // before anything is made.
    let failures = [
        (
            with_security(
                sleeper("bad-user"),
                LinuxContainerSecurityContext {
                    run_as_username: "nobody-here".into(),
                    ..Default::default()
                },
            ),
            "run_as_username",
            true,
        ),
        (
            with_security(
                sleeper("bad-seccomp"),
                LinuxContainerSecurityContext {
                    seccomp: Some(SecurityProfile {
                        profile_type: ProfileType::Localhost as i32,
                        localhost_ref: missing.display().to_string(),
                    }),
                    ..Default::default()
                },
            ),
            "seccomp.localhost_ref",
            true,
        ),
        (bad_mount, "mounts[0].host_path", true),
        (absent_mount, "mounts[0].host_path", false),
    ];
    for (config, field, after_mount) in failures {
        let name = config.metadata.as_ref().unwrap().name.clone();
        let mounted = || runtime.log().matches("\"rootfs mounted\"").count();
        let mounted_before = mounted();
        let error = create(&mut cri, &pod, config.clone()).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument, "{name}: {error:?}");
        assert_eq!(
            mounted(),
            mounted_before + usize::from(after_mount),
            "{name}: the failure is to come after the rootfs overlay was mounted: {after_mount}"
        );
        assert!(
            error.message().contains(field),
            "{name}: {}",
            error.message()
        );
        assert_eq!(
            mounted_under(dir),
            mounts_before,
            "{name}: mounts left behind"
        );
        assert_eq!(container_dirs(dir, &pod), Vec::<PathBuf>::new());
        assert!(
            list_containers(&mut cri, ContainerFilter::default())
                .await
                .is_empty()
        );
        // The name was released with the failure: the same request fails the same way.
        let again = create(&mut cri, &pod, config).await.unwrap_err();
        assert_eq!(again.code(), Code::InvalidArgument, "{name}: {again:?}");
    }

    // The pod still works.
    let fine = common::create_and_start(&mut cri, &pod, sleeper("fine")).await;
    let out = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: fine.clone(),
            cmd: vec!["echo".into(), "alive".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alive\n");
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
    assert!(mounted_under(dir).is_empty());
}

/// Names of the entries directly under `dir`, sorted.
fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn image_ids(cri: &mut CriClient) -> BTreeSet<String> {
    cri.images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
        .into_iter()
        .map(|i| i.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_layer_fails_the_pull_and_leaves_nothing() {
    require_root();
    let fx = fixture().await;
    let (mut cri, dir, registry) = (fx.cri.clone(), fx.dir.path(), &fx.registry);
    let web = &catalog().unwrap().web;
    registry
        .client()
        .push_image("web", "1", web, ManifestFormat::Oci)
        .unwrap();
    // The base layer is shared with the shell image, already pulled; the top one is new.
    let layer = web.layer_blobs(ManifestFormat::Oci)[1].digest.clone();
    let hex = layer.strip_prefix("sha256:").unwrap();
    let blob = registry
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let original = std::fs::read(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
    let mut corrupted = original.clone();
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0xff;
    std::fs::write(&blob, &corrupted).unwrap();

    let images_dir = dir.join("state/images");
    let snapshots_before = entries(&images_dir.join("snapshots"));
    assert!(!snapshots_before.is_empty(), "{}", images_dir.display());
    let images_before = image_ids(&mut cri).await;
    let name = format!("{}/web:1", registry.host());

    let error = pull(&mut cri, &name).await.unwrap_err();
    assert!(
        error.message().contains(&layer) && error.message().contains("digest"),
        "the error names the digest mismatch: {error:?}"
    );
    assert_eq!(image_ids(&mut cri).await, images_before);
    assert_eq!(
        entries(&images_dir.join("snapshots")),
        snapshots_before,
        "a snapshot of the corrupted pull is left"
    );
    assert!(entries(&images_dir.join("content/ingest")).is_empty());
    assert!(
        !entries(&images_dir.join("content/blobs/sha256")).contains(hex),
        "the corrupted blob was stored"
    );
    let error = create(&mut cri, "nothing", container("x", &name, "true", &[]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);

    std::fs::write(&blob, &original).unwrap();
    pull(&mut cri, &name).await.unwrap();
    let images_after = image_ids(&mut cri).await;
    assert_eq!(images_after.len(), images_before.len() + 1);
    assert_eq!(
        entries(&images_dir.join("snapshots")).len(),
        snapshots_before.len() + 1,
        "the top layer is unpacked once"
    );
    assert!(entries(&images_dir.join("content/blobs/sha256")).contains(hex));
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_output_beyond_the_cap_is_truncated() {
    require_root();
    let fx = fixture().await;
    let (cri, image, runtime) = (fx.cri.clone(), &fx.image, &fx.runtime);
    // Room for both capped streams: the default 4 MiB limit of a client would refuse them.
    let mut cri = CriClient {
        runtime: cri.runtime.max_decoding_message_size(4 * MAX_EXEC_OUTPUT),
        images: cri.images,
    };
    let pod = common::run_pod(&mut cri, pod("exec", &[]))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", runtime.log()));
    let id = common::create_and_start(
        &mut cri,
        &pod,
        container("shell", image, "exec sleep 600", &[]),
    )
    .await;
    let pid = runtime.pid().unwrap();
    let rss_before = rss_kib(pid);

    // 3 × the cap on stdout, 1.5 × on stderr, then an exit code that must survive.
    let cap = MAX_EXEC_OUTPUT;
    let script = format!(
        "head -c {} /dev/zero | tr '\\0' o; head -c {} /dev/zero | tr '\\0' e >&2; exit 3",
        3 * cap,
        cap + cap / 2
    );
    for round in 0..3 {
        let out = cri
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["sh".into(), "-c".into(), script.clone()],
                timeout: 30,
            })
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"))
            .into_inner();
        assert_eq!(out.exit_code, 3);
        assert_eq!(out.stdout.len(), cap, "stdout is cut at the cap");
        assert_eq!(out.stderr.len(), cap, "stderr is cut at the cap");
        assert!(out.stdout.iter().all(|b| *b == b'o'));
        assert!(out.stderr.iter().all(|b| *b == b'e'));
    }

    // Below the cap nothing is cut.
    let out = cri
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "head -c 100000 /dev/zero | tr '\\0' s".into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((out.stdout.len(), out.exit_code), (100_000, 0));

    // The daemon is healthy and kept no more than a few copies of the capped output.
    let rss_after = rss_kib(pid);
    let grown = rss_after.saturating_sub(rss_before);
    assert!(
        grown < 12 * (cap as u64 / 1024),
        "RSS grew by {grown} KiB ({rss_before} -> {rss_after})"
    );
    assert_eq!(
        status(&mut cri, &id).await.state,
        ContainerState::ContainerRunning as i32
    );
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

/// The command line of process `pid`, arguments joined by spaces; empty when it is gone.
fn cmdline(pid: u64) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn host_processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u64>().ok())
        .map(cmdline)
        .filter(|c| c.contains(needle))
        .collect()
}

async fn verbose_pid(cri: &mut CriClient, id: &str, sandbox: bool) -> u64 {
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
    info["pid"].as_u64().unwrap_or(0)
}

/// What ListPodSandbox and ListContainers report agrees with the host: a ready sandbox has a
/// live monitor and an IP, a running container a live process, every container a listed
/// sandbox. Returns the sandboxes and containers.
async fn check_consistent(
    cri: &mut CriClient,
    context: &str,
) -> (
    Vec<capstan_proto::PodSandbox>,
    Vec<capstan_proto::Container>,
) {
    let sandboxes = cri
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    let containers = cri
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers;
    for sandbox in &sandboxes {
        if sandbox.state != PodSandboxState::SandboxReady as i32 {
            continue;
        }
        let pid = verbose_pid(cri, &sandbox.id, true).await;
        assert!(
            pid > 0 && cmdline(pid).contains("monitor"),
            "{context}: ready sandbox {} has no live monitor (pid {pid}: {:?})",
            sandbox.id,
            cmdline(pid)
        );
        let ip = common::sandbox_status(cri, &sandbox.id)
            .await
            .unwrap()
            .network
            .unwrap_or_default()
            .ip;
        assert!(
            !ip.is_empty(),
            "{context}: ready sandbox {} has no IP",
            sandbox.id
        );
    }
    for container in &containers {
        assert!(
            sandboxes.iter().any(|s| s.id == container.pod_sandbox_id),
            "{context}: container {} of an unlisted sandbox",
            container.id
        );
        if container.state == ContainerState::ContainerRunning as i32 {
            let pid = verbose_pid(cri, &container.id, false).await;
            assert!(
                pid > 0 && cmdline(pid).starts_with("sleep"),
                "{context}: running container {} has no process (pid {pid})",
                container.id
            );
        }
    }
    // And the other way round: every container process on the host (they all run
    // `sleep 4711`) belongs to a container listed as running.
    let running = containers
        .iter()
        .filter(|c| c.state == ContainerState::ContainerRunning as i32)
        .count();
    let sleeping = || {
        host_processes_mentioning("sleep 4711")
            .iter()
            .filter(|c| c.starts_with("sleep"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleeping() != running && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sleeping(),
        running,
        "{context}: container processes on the host vs containers listed as running: {:?}",
        containers
            .iter()
            .map(|c| (&c.id[..12], c.state))
            .collect::<Vec<_>>()
    );
    (sandboxes, containers)
}

/// Files in `dir` (recursively) named like an IP address: host-local's allocations.
fn ip_allocations(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if entry
                .file_name()
                .to_string_lossy()
                .parse::<std::net::IpAddr>()
                .is_ok()
            {
                found.push(path);
            }
        }
    }
    found
}

fn links_on(bridge: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_while_pods_start_leaves_a_consistent_state() {
    require_root();
    // A CNI 1.0.0 list, which has no GC: what a pod killed half-way through CNI ADD holds is
    // released on restart from the result cache's entry, written before ADD runs.
    let mut fx = fixture().await;
    let image = fx.image.clone();
    let mut cri = fx.cri.clone();
    let sleeper = |name: &str| container(name, &image, "exec sleep 4711", &[]);
    let steady_pod = common::run_pod(&mut cri, pod("steady", &[])).await.unwrap();
    let steady = common::create_and_start(&mut cri, &steady_pod, sleeper("steady")).await;
    // Containers whose StartContainer was answered before a kill.
    let mut survivors = vec![steady];

    // Each round kills at another moment: once the first of six pods is answered, once the
    // first container is created, once the first one is started; the rest are in flight.
    for (round, moment) in ["RunPodSandbox", "CreateContainer", "StartContainer"]
        .into_iter()
        .enumerate()
    {
        let started: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let (answered_tx, mut answered_rx) = tokio::sync::mpsc::unbounded_channel();
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let mut cri = cri.clone();
                let started = Arc::clone(&started);
                let answered = answered_tx.clone();
                let config = sleeper(&format!("c{round}-{i}"));
                tokio::spawn(async move {
                    let pod_id = common::run_pod(&mut cri, pod(&format!("r{round}-{i}"), &[]))
                        .await
                        .ok()?;
                    let _ = answered.send("RunPodSandbox");
                    let id = create(&mut cri, &pod_id, config).await.ok()?;
                    let _ = answered.send("CreateContainer");
                    cri.runtime
                        .start_container(StartContainerRequest {
                            container_id: id.clone(),
                        })
                        .await
                        .ok()?;
                    started.lock().unwrap().push((id, Instant::now()));
                    let _ = answered.send("StartContainer");
                    Some(())
                })
            })
            .collect();
        drop(answered_tx);
        let reached = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(call) = answered_rx.recv().await {
                if call == moment {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(
            reached,
            Ok(true),
            "no {moment} answered\n{}",
            fx.runtime.log()
        );
        let killed_at = Instant::now();
        fx.runtime.stop_with("KILL");
        for task in tasks {
            let _ = task.await;
        }
        let answered = started.lock().unwrap().clone();
        survivors.extend(
            answered
                .into_iter()
                .filter(|(_, at)| *at < killed_at)
                .map(|(id, _)| id),
        );
        fx.runtime.respawn();
        cri = fx.runtime.client().await;
        let context = format!("round {round} (kill after the first {moment})");
        let (_, containers) = check_consistent(&mut cri, &context).await;
        for id in &survivors {
            let listed = containers.iter().find(|c| &c.id == id);
            assert_eq!(
                listed.map(|c| c.state),
                Some(ContainerState::ContainerRunning as i32),
                "{context}: container {id} ran before the kill\n{}",
                fx.runtime.log()
            );
        }
        eprintln!(
            "{context}: {} started before the kill, {} containers listed",
            survivors.len(),
            containers.len()
        );
    }

    // Once nothing is in flight, a last kill: every pod is adopted again, and the restart's
    // CNI GC releases what plugins still running at an earlier kill allocated after it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    fx.runtime.stop_with("KILL");
    fx.runtime.respawn();
    cri = fx.runtime.client().await;
    let (_, containers) = check_consistent(&mut cri, "idle restart").await;
    for id in &survivors {
        assert!(
            containers
                .iter()
                .any(|c| &c.id == id && c.state == ContainerState::ContainerRunning as i32),
            "idle restart: container {id} is not running"
        );
    }

    // Everything reported can be stopped and removed, and then nothing is left.
    let (sandboxes, containers) = check_consistent(&mut cri, "before removal").await;
    for container in &containers {
        cri.runtime
            .stop_container(StopContainerRequest {
                container_id: container.id.clone(),
                timeout: 0,
            })
            .await
            .unwrap_or_else(|e| panic!("stop {}: {e}", container.id));
        cri.runtime
            .remove_container(RemoveContainerRequest {
                container_id: container.id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("remove {}: {e}", container.id));
    }
    for sandbox in &sandboxes {
        cri.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: sandbox.id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("stop {}: {e}", sandbox.id));
        cri.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: sandbox.id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("remove {}: {e}", sandbox.id));
    }
    let (sandboxes, containers) = check_consistent(&mut cri, "after removal").await;
    assert!(sandboxes.is_empty() && containers.is_empty());
    let dir = fx.dir.path().display().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    let monitors = || -> Vec<String> {
        host_processes_mentioning(&dir)
            .into_iter()
            .filter(|c| c.contains("monitor"))
            .collect()
    };
    while !(monitors().is_empty() && host_processes_mentioning("sleep 4711").is_empty())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(monitors(), Vec::<String>::new(), "monitor processes left");
    assert_eq!(
        host_processes_mentioning("sleep 4711"),
        Vec::<String>::new(),
        "container processes left"
    );
    assert_eq!(mounted_under(fx.dir.path()), Vec::<PathBuf>::new());
    assert_eq!(links_on(&fx.cni.bridge), "", "veths left on the bridge");
    assert_eq!(
        ip_allocations(&fx.cni.ipam_dir),
        Vec::<PathBuf>::new(),
        "IP allocations left\n{}",
        fx.runtime.log()
    );
    let pod_dirs = entries(&fx.dir.path().join("state/pods"));
    assert!(pod_dirs.is_empty(), "pod state left: {pod_dirs:?}");
    let run_dirs = entries(&fx.dir.path().join("run/pods"));
    assert!(
        run_dirs.is_empty(),
        "pod run directories left: {run_dirs:?}"
    );
}

/// The value of `key` in /proc/self/status as a process of `container` sees it.
async fn proc_status(cri: &mut CriClient, container: &str, key: &str) -> String {
    let (out, _) = sh(cri, container, &format!("grep '^{key}:' /proc/self/status")).await;
    out.split_once(':')
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn security_settings_and_dns_are_what_the_kernel_enforces() {
    require_root();
    let fx = fixture().await;
    let (mut cri, image, runtime) = (fx.cri.clone(), &fx.image, &fx.runtime);
    let mut config = pod("secure", &[]);
    config.dns_config = Some(capstan_proto::DnsConfig {
        servers: vec!["10.0.0.10".into()],
        searches: vec!["svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let pod = common::run_pod(&mut cri, config)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", runtime.log()));

    let plain = common::create_and_start(
        &mut cri,
        &pod,
        container("plain", image, "exec sleep 600", &[]),
    )
    .await;
    let locked = common::create_and_start(
        &mut cri,
        &pod,
        with_security(
            container("locked", image, "exec sleep 600", &[]),
            LinuxContainerSecurityContext {
                capabilities: Some(capstan_proto::Capability {
                    drop_capabilities: vec!["ALL".into()],
                    add_capabilities: vec!["NET_ADMIN".into()],
                    ..Default::default()
                }),
                readonly_rootfs: true,
                no_new_privs: true,
                seccomp: Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    )
    .await;

    let mut nonroot_config = with_security(
        container("nonroot", image, "exec sleep 600", &[]),
        LinuxContainerSecurityContext {
            run_as_user: Some(capstan_proto::Int64Value { value: 1234 }),
            ..Default::default()
        },
    );
    nonroot_config.working_dir = "/tmp".into();
    let nonroot = common::create_and_start(&mut cri, &pod, nonroot_config).await;
    // An exec runs as the container's user, in its working directory.
    assert_eq!(sh(&mut cri, &nonroot, "id -u; pwd").await.0, "1234\n/tmp\n");

    // The container's own process, by its host pid from the verbose status.
    let info = cri
        .runtime
        .container_status(capstan_proto::ContainerStatusRequest {
            container_id: locked.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info;
    let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    let host_status =
        std::fs::read_to_string(format!("/proc/{}/status", info["pid"])).unwrap_or_default();
    assert!(
        host_status.lines().any(|l| l == "Seccomp:\t2"),
        "the container's process has no seccomp filter:\n{host_status}"
    );
    // Seccomp mode 2 is a filter; 0 none (CRI's default is unconfined). Exec'd processes get
    // the container's settings too.
    assert_eq!(proc_status(&mut cri, &locked, "Seccomp").await, "2");
    assert_eq!(proc_status(&mut cri, &plain, "Seccomp").await, "0");
    assert_eq!(proc_status(&mut cri, &locked, "NoNewPrivs").await, "1");
    assert_eq!(proc_status(&mut cri, &plain, "NoNewPrivs").await, "0");
    // Only CAP_NET_ADMIN (bit 12) is left; the default set has CAP_CHOWN (bit 0) and more.
    assert_eq!(
        proc_status(&mut cri, &locked, "CapEff").await,
        format!("{:016x}", 1u64 << 12)
    );
    let plain_caps =
        u64::from_str_radix(&proc_status(&mut cri, &plain, "CapEff").await, 16).expect("CapEff");
    assert!(
        plain_caps & 1 == 1 && plain_caps & (1 << 21) == 0,
        "default capabilities: CHOWN, not SYS_ADMIN: {plain_caps:x}"
    );
    // A read-only root filesystem refuses writes; /tmp-less images included.
    assert!(!sh(&mut cri, &locked, "touch /written").await.1);
    assert!(sh(&mut cri, &plain, "touch /written").await.1);
    // Masked /proc paths read as empty, read-only ones refuse writes.
    assert!(!std::fs::read("/proc/timer_list").unwrap().is_empty());
    assert_eq!(
        sh(&mut cri, &plain, "wc -c < /proc/timer_list")
            .await
            .0
            .trim(),
        "0"
    );
    assert!(
        !sh(&mut cri, &plain, "echo 1 > /proc/sys/kernel/sysrq")
            .await
            .1
    );
    // DNSConfig becomes the container's resolv.conf.
    let (resolv, _) = sh(&mut cri, &plain, "cat /etc/resolv.conf").await;
    for line in [
        "nameserver 10.0.0.10",
        "search svc.cluster.local",
        "options ndots:5",
    ] {
        assert!(resolv.lines().any(|l| l == line), "{line:?} in\n{resolv}");
    }
    cri.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod,
        })
        .await
        .unwrap();
}

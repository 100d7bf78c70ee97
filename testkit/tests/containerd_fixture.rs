//! The containerd fixture cleans up after a test that left a pod running: its shim, the shim's
//! socket in containerd's hard-coded directory, its mounts and its cgroups all go on drop.

use std::path::Path;

use capstan_proto::{
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, RunPodSandboxRequest,
};
use capstan_testkit::containerd::{ContainerdOptions, ContainerdProcess};
use capstan_testkit::images::{ManifestFormat, catalog};
use capstan_testkit::mounts::mounted_under;
use capstan_testkit::registry::LocalRegistry;
use capstan_testkit::require_root;
use sha2::{Digest, Sha256};

fn shims_of(socket: &Path) -> usize {
    let socket = socket.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmdline| {
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first()
                .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
                && args
                    .windows(2)
                    .any(|w| w[0] == "-address" && w[1] == socket)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_left_running_is_removed_with_the_fixture() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    registry
        .client()
        .push_image("pause", "1", &catalog().unwrap().pause, ManifestFormat::Oci)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cni_dir = dir.path().join("cni");
    std::fs::create_dir_all(&cni_dir).unwrap();
    let containerd = ContainerdProcess::start(
        &dir.path().join("containerd"),
        ContainerdOptions {
            sandbox_image: format!("{}/pause:1", registry.host()),
            insecure_registry: Some(registry.host()),
            cni_bin_dir: cni_dir.clone(),
            cni_conf_dir: cni_dir,
        },
    )
    .await
    .unwrap();
    let mut cri = containerd.client().await.unwrap();
    // Host network: no CNI involved, this is about the fixture.
    let pod = cri
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(PodSandboxConfig {
                metadata: Some(PodSandboxMetadata {
                    name: "left".into(),
                    namespace: "fixture".into(),
                    uid: "uid-left".into(),
                    attempt: 0,
                }),
                linux: Some(LinuxPodSandboxConfig {
                    cgroup_parent: containerd.cgroup_parent().into(),
                    security_context: Some(LinuxSandboxSecurityContext {
                        namespace_options: Some(NamespaceOption {
                            network: NamespaceMode::Node as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", containerd.log()))
        .into_inner()
        .pod_sandbox_id;

    let socket = containerd.socket();
    let shim_socket = Path::new("/run/containerd/s").join(hex::encode(Sha256::digest(
        socket
            .join("k8s.io")
            .join(&pod)
            .as_os_str()
            .as_encoded_bytes(),
    )));
    assert!(
        shim_socket.exists(),
        "shim socket {}",
        shim_socket.display()
    );
    assert_eq!(shims_of(&socket), 1);
    assert!(!mounted_under(dir.path()).is_empty(), "the pod's rootfs");
    let own = capstan_testkit::cgroups::own_path().unwrap();
    assert!(containerd.cgroup_parent().starts_with(&own) && containerd.cgroup_parent() != own);
    let pod_cgroup = Path::new("/sys/fs/cgroup/memory")
        .join(containerd.cgroup_parent().trim_start_matches('/'))
        .join(&pod);
    let v1 = capstan_testkit::cgroups::driver() == capstan_testkit::cgroups::Driver::V1;
    assert!(!v1 || pod_cgroup.exists(), "{}", pod_cgroup.display());

    drop(cri);
    drop(containerd);
    assert_eq!(shims_of(&socket), 0, "shims left");
    assert!(!shim_socket.exists(), "shim socket left");
    assert_eq!(mounted_under(dir.path()), Vec::<std::path::PathBuf>::new());
    assert!(!pod_cgroup.exists(), "pod cgroup left");
}

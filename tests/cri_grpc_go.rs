//! The CRI socket under a Go gRPC client that dials as crictl 1.26 and kubelets of its
//! generation do (grpc-go 1.33 from Debian, the socket path as target and so as `:authority`):
//! h2 alone resets every such call with PROTOCOL_ERROR. The client is tests/grpc-go, built
//! here with Debian's golang-go and golang-google-grpc-dev (installed by hack/deps.sh test).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use capstan_proto::{
    ContainerConfig, ContainerMetadata, ImageSpec, PodSandboxConfig, PodSandboxMetadata,
    PullImageRequest,
};
use capstan_testkit::images::{ManifestFormat, catalog};
use capstan_testkit::registry::LocalRegistry;
use capstan_testkit::require_root;
use common::{CniSetup, RuntimeProcess, create_and_start, free_port, run_pod};
use serde_json::Value;

/// Builds the Go client into `dir`; fails the test, naming what to install, when Go is missing.
fn build_go_client(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc-go/crictl_dial.go");
    let binary = dir.join("crictl_dial");
    let output = Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", dir.join("go-cache"))
        .env("GOFLAGS", "")
        .output()
        .unwrap_or_else(|e| {
            panic!("go: {e} (hack/deps.sh test installs golang-go and golang-google-grpc-dev)")
        });
    assert!(
        output.status.success(),
        "go build failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    binary
}

/// Runs the Go client against `socket`; what it printed, or a panic with its error and the
/// runtime's log.
fn go_client(binary: &Path, socket: &Path, runtime: &RuntimeProcess) -> Value {
    let output = Command::new(binary).arg(socket).output().unwrap();
    assert!(
        output.status.success(),
        "the grpc-go client failed: {}\nruntime log (tail):\n{}",
        String::from_utf8_lossy(&output.stderr),
        tail(&runtime.log(), 30)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_go_1_33_client_dialing_the_socket_path_gets_answers_from_the_runtime() {
    require_root();
    let registry = LocalRegistry::start().unwrap();
    registry
        .client()
        .push_image("shell", "1", &catalog().unwrap().shell, ManifestFormat::Oci)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = build_go_client(dir.path());
    let cni = CniSetup::new(dir.path(), None);
    let config = format!(
        "[registry]\ninsecure = [\"{}\"]\n{}",
        registry.host(),
        cni.toml()
    );
    let runtime = RuntimeProcess::start(dir.path(), &config);
    let mut cri = runtime.client().await;
    let shell = format!("{}/shell:1", registry.host());
    let image_ref = cri
        .images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: shell.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .image_ref;
    let pod = run_pod(
        &mut cri,
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "go-client".into(),
                namespace: "default".into(),
                uid: "uid-go-client".into(),
                attempt: 0,
            }),
            hostname: "go-client".into(),
            labels: HashMap::new(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let container = create_and_start(
        &mut cri,
        &pod,
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "sleeper".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: shell,
                ..Default::default()
            }),
            command: vec!["sleep".into(), "600".into()],
            ..Default::default()
        },
    )
    .await;

    let seen = go_client(&client, &runtime.socket(), &runtime);
    assert_eq!(
        seen["grpc_go"], "1.33.3",
        "Debian's grpc-go, which sends the path"
    );
    assert_eq!(seen["runtime_name"], "capstan");
    assert_eq!(seen["runtime_api_version"], "v1");
    let conditions = strings(&seen["conditions"]);
    assert!(
        conditions.contains(&"RuntimeReady".to_string()),
        "{conditions:?}"
    );
    assert!(
        conditions.contains(&"NetworkReady".to_string()),
        "{conditions:?}"
    );
    assert_eq!(strings(&seen["sandboxes"]), std::slice::from_ref(&pod));
    assert_eq!(strings(&seen["containers"]), [container]);
    assert_eq!(strings(&seen["images"]), [image_ref]);

    // The same connection style, many times over: the layer keeps HPACK state per connection.
    for _ in 0..3 {
        let again = go_client(&client, &runtime.socket(), &runtime);
        assert_eq!(strings(&again["sandboxes"]), std::slice::from_ref(&pod));
    }
    drop(cri);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_go_1_33_client_dialing_the_socket_path_gets_answers_from_the_node() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let client = build_go_client(dir.path());
    let cni = CniSetup::new(dir.path(), None);
    let node = RuntimeProcess::start_node(dir.path(), &cni.toml(), free_port(), &[]);
    // The node's socket answers our own client first: it is up.
    drop(node.client().await);
    let seen = go_client(&client, &node.socket(), &node);
    assert_eq!(seen["runtime_name"], "capstan");
    assert_eq!(strings(&seen["sandboxes"]), Vec::<String>::new());
}

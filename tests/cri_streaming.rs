//! Exec and port-forward through the runtime's streaming server, driven by the real `kubectl`
//! through a fake API server that proxies to the streaming URLs as kube-apiserver does: output
//! on the right streams, exit codes, stdin, a terminal with its size, a web page over a
//! forwarded port; each over WebSocket and over SPDY. Also what the RPCs refuse, single-use
//! URLs, and no `exec-in` left behind.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use capstan_proto::{
    AttachRequest, ContainerConfig, ContainerMetadata, ExecRequest, ImageSpec, PodSandboxConfig,
    PodSandboxMetadata, PortForwardRequest, PullImageRequest,
};
use capstan_testkit::apiserver::{FakeApiServer, FakeContainer, FakePod};
use capstan_testkit::cri::CriClient;
use capstan_testkit::images::{ManifestFormat, WEB_PAGE, catalog};
use capstan_testkit::registry::LocalRegistry;
use capstan_testkit::require_root;
use common::{CniSetup, RuntimeProcess};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// The kubectl of the machine (1.30+: WebSocket for exec by default).
const KUBECTL: &str = "kubectl";
/// A kubectl that speaks only SPDY (installed beside the default one by the Cloud SDK package).
const KUBECTL_SPDY_ONLY: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// A runtime with a pod named `app` (containers `shell`, a long sleep, and `web`, httpd on
/// 8080) and a fake API server that knows it.
struct Fixture {
    dir: tempfile::TempDir,
    // Dropped before `dir` (field order): stops the runtime and removes its pods.
    runtime: RuntimeProcess,
    _cni: CniSetup,
    _registry: LocalRegistry,
    cri: CriClient,
    api: FakeApiServer,
    kubeconfig: PathBuf,
    config: String,
    sandbox: String,
    shell: String,
}

fn container(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
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
        log_path: format!("{name}.log"),
        labels: HashMap::from([("name".to_string(), name.to_string())]),
        ..Default::default()
    }
}

/// Fails with what to install when the kubectl clients are missing.
fn require_kubectl() {
    for binary in [KUBECTL, KUBECTL_SPDY_ONLY] {
        let found = std::process::Command::new(binary)
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "{binary} is needed: these tests drive the real kubectl (Debian package `kubectl` of \
             the Cloud SDK, which installs versioned clients beside it)"
        );
    }
}

async fn fixture() -> Fixture {
    require_root();
    require_kubectl();
    let registry = LocalRegistry::start().unwrap();
    let images = catalog().unwrap();
    for (name, image) in [("shell", &images.shell), ("web", &images.web)] {
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
    for name in ["shell", "web"] {
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
    let sandbox = common::run_pod(
        &mut cri,
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "app".into(),
                namespace: "default".into(),
                uid: "u-stream".into(),
                attempt: 0,
            }),
            hostname: "app".into(),
            log_directory: dir.path().join("logs").display().to_string(),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", runtime.log()));
    let shell = common::create_and_start(
        &mut cri,
        &sandbox,
        container("shell", &image("shell"), &["sleep", "3600"]),
    )
    .await;
    let web =
        common::create_and_start(&mut cri, &sandbox, container("web", &image("web"), &[])).await;
    // Containers that wait for stdin, closed when the first attached client is done.
    let mut readers = Vec::new();
    for (name, once) in [("reader-ws", true), ("reader-spdy", true), ("echo", false)] {
        let script = if once {
            "cat; echo bye"
        } else {
            "while read line; do echo got $line; done"
        };
        let mut config = container(name, &image("shell"), &["sh", "-c", script]);
        config.stdin = true;
        config.stdin_once = once;
        let id = common::create_and_start(&mut cri, &sandbox, config).await;
        readers.push(FakeContainer {
            name: name.into(),
            id,
            stdin: true,
            tty: false,
        });
    }
    // An interactive shell on a terminal, as `kubectl run -it` makes.
    let mut term = container("term", &image("shell"), &["sh"]);
    term.stdin = true;
    term.tty = true;
    let id = common::create_and_start(&mut cri, &sandbox, term).await;
    readers.push(FakeContainer {
        name: "term".into(),
        id,
        stdin: true,
        tty: true,
    });
    let api = FakeApiServer::start(cri.clone()).await.unwrap();
    api.add_pod(FakePod {
        name: "app".into(),
        sandbox_id: sandbox.clone(),
        containers: vec![
            FakeContainer {
                name: "shell".into(),
                id: shell.clone(),
                ..Default::default()
            },
            FakeContainer {
                name: "web".into(),
                id: web,
                ..Default::default()
            },
        ]
        .into_iter()
        .chain(readers)
        .collect(),
    });
    let kubeconfig = api.write_kubeconfig(dir.path()).unwrap();
    Fixture {
        dir,
        runtime,
        _cni: cni,
        _registry: registry,
        cri,
        api,
        kubeconfig,
        config,
        sandbox,
        shell,
    }
}

impl Fixture {
    /// Runs `kubectl` (`binary`) with `args`, extra `env` and `stdin`, for at most a minute.
    async fn kubectl(
        &self,
        binary: &str,
        env: &[(&str, &str)],
        args: &[&str],
        stdin: &[u8],
    ) -> Output {
        capstan_testkit::kubectl::Kubectl::kubeconfig(binary, &self.kubeconfig)
            .envs(env)
            .stdin_bytes(stdin)
            .output(args)
            .await
    }

    fn explain(&self, output: &Output) -> String {
        format!(
            "exit {:?}\nstdout: {}\nstderr: {}\nAPI requests: {:#?}\nruntime log tail:\n{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.api.requests(),
            tail(&self.runtime.log(), 40)
        )
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `exec-in` processes of this runtime still alive.
fn exec_in_processes(dir: &Path) -> Vec<String> {
    let marker = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(" exec-in ") && cmdline.contains(&marker))
        .collect()
}

async fn assert_no_exec_in_left(fixture: &Fixture) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = exec_in_processes(fixture.dir.path());
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "exec-in processes left behind: {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const SPDY: &[(&str, &str)] = &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")];
const WEBSOCKET: &[(&str, &str)] = &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "true")];

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_exec_gets_streams_exit_codes_and_stdin_over_websocket_and_spdy() {
    let f = fixture().await;
    let script = "echo out; echo err >&2; exit 3";
    for (name, binary, env) in [
        ("websocket", KUBECTL, WEBSOCKET),
        ("spdy", KUBECTL, SPDY),
        ("spdy, kubectl 1.27", KUBECTL_SPDY_ONLY, &[][..]),
    ] {
        let output = f
            .kubectl(
                binary,
                env,
                &["exec", "app", "-c", "shell", "--", "sh", "-c", script],
                b"",
            )
            .await;
        assert_eq!(
            output.status.code(),
            Some(3),
            "{name}: {}",
            f.explain(&output)
        );
        assert_eq!(output.stdout, b"out\n", "{name}: {}", f.explain(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).starts_with("err\n"),
            "{name}: {}",
            f.explain(&output)
        );

        // Much more than SPDY's initial 64 KiB window, both ways.
        let input: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("line {i:05} of the input\n").into_bytes())
            .collect();
        let output = f
            .kubectl(
                binary,
                env,
                &["exec", "-i", "app", "-c", "shell", "--", "cat"],
                &input,
            )
            .await;
        assert!(output.status.success(), "{name}: {}", f.explain(&output));
        assert!(
            output.stdout == input,
            "{name}: {} of {} bytes came back",
            output.stdout.len(),
            input.len()
        );
    }
    // A command that cannot start is an error naming it, not an exit status of the shell's.
    let output = f
        .kubectl(
            KUBECTL,
            WEBSOCKET,
            &["exec", "app", "-c", "shell", "--", "/no/such/binary"],
            b"",
        )
        .await;
    assert!(!output.status.success(), "{}", f.explain(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr)
            .matches("/no/such/binary")
            .count(),
        1,
        "said once, as the error: {}",
        f.explain(&output)
    );
    // A background process that keeps the output open does not keep the session.
    let started = Instant::now();
    let output = f
        .kubectl(
            KUBECTL,
            WEBSOCKET,
            &[
                "exec",
                "app",
                "-c",
                "shell",
                "--",
                "sh",
                "-c",
                "sleep 300 & echo started",
            ],
            b"",
        )
        .await;
    assert!(output.status.success(), "{}", f.explain(&output));
    assert_eq!(output.stdout, b"started\n", "{}", f.explain(&output));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let requests = f.api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/exec?") && r.contains("[upgrade websocket]")),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/exec?") && r.contains("[upgrade SPDY/3.1]")),
        "{requests:#?}"
    );
    assert_no_exec_in_left(&f).await;
}

/// Host processes whose command line is exactly `cmdline` (arguments space-separated).
fn processes_named(cmdline: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .filter(|raw| String::from_utf8_lossy(raw).replace('\0', " ").trim_end() == cmdline)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_takes_its_exec_down_with_it() {
    let f = fixture().await;
    for (name, env, marker) in [("websocket", WEBSOCKET, "4241"), ("spdy", SPDY, "4242")] {
        let sleep = format!("sleep {marker}");
        let mut kubectl = tokio::process::Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&f.kubeconfig)
            .args(["exec", "app", "-c", "shell", "--", "sleep", marker])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while processes_named(&sleep) == 0 {
            assert!(
                Instant::now() < deadline,
                "{name}: the exec never started\n{:#?}",
                f.api.requests()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        kubectl.kill().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while processes_named(&sleep) > 0 {
            assert!(
                Instant::now() < deadline,
                "{name}: the exec'd process outlived its client\n{}",
                tail(&f.runtime.log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_no_exec_in_left(&f).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_exec_with_a_terminal_sees_a_tty_of_the_client_size() {
    let f = fixture().await;
    // `script` gives kubectl a terminal of a known size; kubectl sends it on the resize stream.
    // The size may land just after the command starts, so it looks a few times.
    let remote = "test -t 0 && echo is-a-tty; for i in 1 2 3 4 5 6 7 8 9 10; do s=$(stty size); [ \"$s\" = \"33 111\" ] && break; sleep 0.2; done; echo size=$s";
    for (name, env) in [("websocket", WEBSOCKET), ("spdy", SPDY)] {
        let command = format!(
            "stty rows 33 cols 111; exec {KUBECTL} --kubeconfig {} exec -it app -c shell -- sh -c '{remote}'",
            f.kubeconfig.display()
        );
        let mut child = tokio::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run script");
        // Kept open (and silent) until the command is done: EOF would end the session.
        let stdin = child.stdin.take();
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl exec -it hung")
            .unwrap();
        drop(stdin);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("is-a-tty"), "{name}: {}", f.explain(&output));
        assert!(
            text.contains("size=33 111"),
            "{name}: {}",
            f.explain(&output)
        );
    }
    assert_no_exec_in_left(&f).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_attach_feeds_the_containers_stdin_and_shows_its_output() {
    let f = fixture().await;
    for (name, env) in [("reader-ws", WEBSOCKET), ("reader-spdy", SPDY)] {
        let output = f
            .kubectl(
                KUBECTL,
                env,
                &["attach", "-i", "app", "-c", name],
                b"hello attach\n",
            )
            .await;
        assert!(output.status.success(), "{name}: {}", f.explain(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        // cat echoed our line, then saw EOF (stdin_once) and the container said bye and ended.
        assert!(
            stdout.contains("hello attach\nbye\n"),
            "{name}: {}",
            f.explain(&output)
        );
        // The log has what the container wrote, attached or not.
        let log = std::fs::read_to_string(f.dir.path().join("logs").join(format!("{name}.log")))
            .unwrap_or_default();
        assert!(log.contains("stdout F hello attach"), "{name}: {log}");
    }
    let requests = f.api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/attach?") && r.contains("[upgrade websocket]")),
        "{requests:#?}"
    );
    // The container has ended (stdin_once closed its stdin): attaching again is refused.
    let output = f
        .kubectl(
            KUBECTL,
            WEBSOCKET,
            &["attach", "-i", "app", "-c", "reader-ws"],
            b"",
        )
        .await;
    assert!(!output.status.success(), "{}", f.explain(&output));
}

/// Attaches with stdin, types `input` and waits for the line `expect`; then leaves.
async fn attach_and_expect(f: &Fixture, container: &str, input: &str, expect: &str) {
    attach_and_expect_with(f, &[], container, input, expect).await;
}

/// [`attach_and_expect`] with kubectl's environment extended by `env`; leaves by killing it.
async fn attach_and_expect_with(
    f: &Fixture,
    env: &[(&str, &str)],
    container: &str,
    input: &str,
    expect: &str,
) {
    let mut kubectl = tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&f.kubeconfig)
        .args(["attach", "-i", "app", "-c", container])
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = kubectl.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(kubectl.stdout.take().unwrap()).lines();
    // Typed until answered: input sent before the session is up is not the container's.
    let answered = async {
        loop {
            stdin.write_all(input.as_bytes()).await.unwrap();
            let next = tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await;
            if let Ok(Ok(Some(line))) = next
                && line == expect
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), answered)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no {expect:?} from {container}\n{:#?}\n{}",
                f.api.requests(),
                tail(&f.runtime.log(), 30)
            )
        });
    kubectl.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_survives_a_runtime_killed_and_restarted() {
    let mut f = fixture().await;
    attach_and_expect(&f, "echo", "one\n", "got one").await;
    // The monitor holds the container's stdin, not the daemon: SIGKILL the daemon, start a
    // new one, and the same container still takes input.
    assert!(!f.runtime.stop_with("KILL").success());
    let restarted = RuntimeProcess::start(f.dir.path(), &f.config);
    // Kept until the end: dropping a RuntimeProcess removes its pods.
    let _killed = std::mem::replace(&mut f.runtime, restarted);
    let _ = f.runtime.client().await;
    attach_and_expect(&f, "echo", "two\n", "got two").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_attach_to_a_terminal_types_into_the_shell_and_resizes_it() {
    let f = fixture().await;
    let command = format!(
        "stty rows 33 cols 111; exec {KUBECTL} --kubeconfig {} attach -it app -c term",
        f.kubeconfig.display()
    );
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run script");
    let mut stdin = child.stdin.take().unwrap();
    // The size may land just after the line is read, so the shell looks a few times.
    stdin
        .write_all(
            b"echo tty-$((6*7)); for i in 1 2 3 4 5 6 7 8 9 10; do s=$(stty size); [ \"$s\" = \"33 111\" ] && break; sleep 0.2; done; echo size-$s; exit\n",
        )
        .await
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl attach -it hung")
        .unwrap();
    drop(stdin);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("tty-42"), "{}", f.explain(&output));
    assert!(text.contains("size-33 111"), "{}", f.explain(&output));
    assert!(output.status.success(), "{}", f.explain(&output));
    // The terminal's output is the container's log, on stdout.
    let log = std::fs::read_to_string(f.dir.path().join("logs").join("term.log")).unwrap();
    assert!(log.contains(" stdout ") && log.contains("tty-42"), "{log}");
}

/// Starts `kubectl port-forward` and returns it with the local port it picked.
async fn port_forward(
    f: &Fixture,
    binary: &str,
    env: &[(&str, &str)],
) -> (tokio::process::Child, u16) {
    let mut child = tokio::process::Command::new(binary)
        .arg("--kubeconfig")
        .arg(&f.kubeconfig)
        .args(["port-forward", "pod/app", ":8080"])
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run kubectl port-forward");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .ok()
        .and_then(|l| l.ok().flatten());
    let Some(line) = line else {
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), e.read_to_string(&mut stderr)).await;
        }
        panic!(
            "kubectl port-forward printed nothing: {stderr}\n{:#?}",
            f.api.requests()
        );
    };
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let port = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward line {line:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

async fn fetch(port: u16) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the forwarded port");
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(20),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("the page came in time")
    .unwrap();
    response
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_port_forward_reaches_the_pods_loopback() {
    let f = fixture().await;
    for (name, binary, env) in [
        (
            "websocket tunnel",
            KUBECTL,
            &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "true")][..],
        ),
        (
            "spdy",
            KUBECTL,
            &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")][..],
        ),
        ("spdy, kubectl 1.27", KUBECTL_SPDY_ONLY, &[][..]),
    ] {
        let (mut child, port) = port_forward(&f, binary, env).await;
        // Twice on one kubectl: each connection is its own pair of streams.
        for _ in 0..2 {
            let response = fetch(port).await;
            assert!(
                response.starts_with("HTTP/1.") && response.ends_with(WEB_PAGE),
                "{name}: {response:?}\n{:#?}\n{}",
                f.api.requests(),
                tail(&f.runtime.log(), 30)
            );
        }
        let _ = child.kill().await;
    }
    let requests = f.api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/portforward?") && r.contains("[upgrade websocket]")),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/portforward?") && r.contains("[upgrade SPDY/3.1]")),
        "{requests:#?}"
    );
    // A port nothing listens on: kubectl reports the runtime's error for that connection.
    let mut child = tokio::process::Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(&f.kubeconfig)
        .args(["port-forward", "pod/app", ":9"])
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next_line().await.unwrap().unwrap_or_default();
    let port: u16 = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected port-forward line {line:?}"));
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    let _ = child.kill().await;
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(
        stderr.contains("error forwarding port 9") && stderr.contains("refused"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_port_forward_channels_carry_the_page() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut f = fixture().await;
    let url = f
        .cri
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: f.sandbox.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut request = format!("{}?port=8080", url.replacen("http://", "ws://", 1))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "v4.channel.k8s.io"
    );
    let mut next = async || match socket.next().await {
        Some(Ok(Message::Binary(data))) => Some(data.to_vec()),
        _ => None,
    };
    // Each channel opens with the port, little-endian: data (0), then error (1).
    assert_eq!(next().await, Some(vec![0, 0x90, 0x1f]));
    assert_eq!(next().await, Some(vec![1, 0x90, 0x1f]));
    let mut get = vec![0u8];
    get.extend_from_slice(b"GET / HTTP/1.0\r\nHost: app\r\n\r\n");
    socket.send(Message::Binary(get.into())).await.unwrap();
    let mut page = Vec::new();
    let collected = async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Binary(data) = message {
                assert_eq!(data[0], 0, "only data: {data:?}");
                page.extend_from_slice(&data[1..]);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), collected)
        .await
        .expect("the session ended with the connection");
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.starts_with("HTTP/1.") && page.ends_with(WEB_PAGE),
        "{page}"
    );
}

/// Sends a SPDY upgrade request to `url`; returns the status line.
async fn upgrade_status(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut lines = tokio::io::BufReader::new(stream).lines();
    lines.next_line().await.unwrap().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_urls_are_single_use_and_bad_requests_name_the_field() {
    let mut f = fixture().await;
    let exec = |container: &str, cmd: &[&str]| ExecRequest {
        container_id: container.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        stdout: true,
        ..Default::default()
    };
    let url = f
        .cri
        .runtime
        .exec(exec(&f.shell, &["true"]))
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/exec/"),
        "{url}"
    );
    assert!(
        upgrade_status(&url).await.contains(" 101 "),
        "first use switches protocols"
    );
    assert!(
        upgrade_status(&url).await.contains(" 404 "),
        "second use is refused"
    );
    let unknown = format!(
        "{}/exec/0123456789abcdef",
        url.split("/exec/").next().unwrap()
    );
    assert!(upgrade_status(&unknown).await.contains(" 404 "));

    let error = f
        .cri
        .runtime
        .exec(exec("no-such-container", &["true"]))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
    assert!(error.message().contains("container_id"), "{error:?}");
    let error = f.cri.runtime.exec(exec(&f.shell, &[])).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert!(error.message().contains("cmd"), "{error:?}");
    let mut no_streams = exec(&f.shell, &["true"]);
    no_streams.stdout = false;
    let error = f.cri.runtime.exec(no_streams).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert!(error.message().contains("stdout"), "{error:?}");
    let error = f
        .cri
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: "no-such-sandbox".into(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
    assert!(error.message().contains("pod_sandbox_id"), "{error:?}");
    let error = f
        .cri
        .runtime
        .attach(AttachRequest {
            container_id: f.shell.clone(),
            stdin: true,
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert!(error.message().starts_with("stdin:"), "{error:?}");
    let url = f
        .cri
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: f.sandbox.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.contains("/portforward/"), "{url}");
}

/// How many attach sessions the runtime has ended so far, by its log.
fn attach_sessions_ended(f: &Fixture) -> usize {
    f.runtime.log().matches("attach session ended").count()
}

/// Waits until the runtime has ended more than `before` attach sessions.
async fn wait_attach_ended(f: &Fixture, before: usize, case: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while attach_sessions_ended(f) <= before {
        assert!(
            Instant::now() < deadline,
            "{case}: the attach session outlived its client\n{}",
            tail(&f.runtime.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to a streaming URL speaking `v5.channel.k8s.io`, as crictl 1.33 opens one.
async fn websocket_v5(url: &str) -> Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v5.channel.k8s.io".parse().unwrap(),
    );
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// Attaches to the `echo` container with stdin over WebSocket `v5.channel.k8s.io`, as crictl
/// 1.33 does first, types `word` and waits for the container's `got <word>`.
async fn websocket_attach_echo(f: &mut Fixture, word: &str) -> Socket {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let echo = f
        .cri
        .runtime
        .list_containers(capstan_proto::ListContainersRequest {
            filter: Some(capstan_proto::ContainerFilter {
                label_selector: HashMap::from([("name".to_string(), "echo".to_string())]),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers[0]
        .id
        .clone();
    let url = f
        .cri
        .runtime
        .attach(AttachRequest {
            container_id: echo,
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut socket = websocket_v5(&url).await;
    let mut input = vec![0u8];
    input.extend_from_slice(format!("{word}\n").as_bytes());
    let expect = format!("got {word}\n");
    let answered = async {
        let mut seen = Vec::new();
        // Typed until answered: what is sent before the monitor attached is not the
        // container's.
        loop {
            socket
                .send(Message::Binary(input.clone().into()))
                .await
                .unwrap();
            let next = tokio::time::timeout(Duration::from_millis(500), socket.next()).await;
            if let Ok(Some(Ok(Message::Binary(data)))) = next
                && data.first() == Some(&1)
            {
                seen.extend_from_slice(&data[1..]);
                if String::from_utf8_lossy(&seen).contains(&expect) {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), answered)
        .await
        .unwrap_or_else(|_| panic!("no {expect:?}\n{}", tail(&f.runtime.log(), 30)));
    socket
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attach_session_ends_when_its_websocket_client_closes_stdin_or_goes() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut f = fixture().await;

    // stdin closed (v5's close of channel 0), as crictl attach -i sends at EOF: the container
    // (no stdin_once) keeps its stdin for the next client and the server ends the session,
    // writing its status and closing the connection, as containerd does.
    let before = attach_sessions_ended(&f);
    let mut socket = websocket_attach_echo(&mut f, "one").await;
    socket
        .send(Message::Binary(vec![255, 0].into()))
        .await
        .unwrap();
    let ended = async {
        let mut status = None;
        while let Some(Ok(message)) = socket.next().await {
            match message {
                Message::Binary(data) if data.first() == Some(&3) => {
                    status = Some(String::from_utf8_lossy(&data[1..]).to_string());
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        status
    };
    let status = tokio::time::timeout(Duration::from_secs(10), ended)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the server kept the session after stdin closed\n{}",
                tail(&f.runtime.log(), 30)
            )
        });
    assert!(
        status.as_deref().is_some_and(|s| s.contains("Success")),
        "{status:?}"
    );
    wait_attach_ended(&f, before, "stdin closed").await;

    // A close frame, stdin still open.
    let before = attach_sessions_ended(&f);
    let mut socket = websocket_attach_echo(&mut f, "two").await;
    socket.close(None).await.unwrap();
    wait_attach_ended(&f, before, "close frame").await;

    // The TCP connection dropped without a word.
    let before = attach_sessions_ended(&f);
    let socket = websocket_attach_echo(&mut f, "three").await;
    drop(socket);
    wait_attach_ended(&f, before, "dropped connection").await;

    // The container's stdin was kept for the next client throughout.
    let socket = websocket_attach_echo(&mut f, "four").await;
    drop(socket);
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_attach_exits_when_its_stdin_closes() {
    let f = fixture().await;
    for (name, env) in [("websocket", WEBSOCKET), ("spdy", SPDY)] {
        let before = attach_sessions_ended(&f);
        let mut child = tokio::process::Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&f.kubeconfig)
            .args(["attach", "-i", "app", "-c", "echo"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{name}: kubectl attach -i with its stdin closed did not exit\n{}",
                    tail(&f.runtime.log(), 30)
                )
            })
            .unwrap();
        assert!(status.success(), "{name}: {status:?}");
        wait_attach_ended(&f, before, name).await;
    }
    // A kubectl killed mid-session (its stdin still open): its connection closes under the
    // session, which must end too (WebSocket: TCP EOF; SPDY: the connection's close).
    for (name, env) in [("websocket killed", WEBSOCKET), ("spdy killed", SPDY)] {
        let before = attach_sessions_ended(&f);
        let env: Vec<(&str, &str)> = env.to_vec();
        attach_and_expect_with(
            &f,
            &env,
            "echo",
            &format!("{}\n", name.len()),
            &format!("got {}", name.len()),
        )
        .await;
        wait_attach_ended(&f, before, name).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_exec_ends_when_its_client_closes_or_goes() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut f = fixture().await;
    for (case, marker) in [("close frame", "4343"), ("dropped connection", "4344")] {
        let url = f
            .cri
            .runtime
            .exec(ExecRequest {
                container_id: f.shell.clone(),
                cmd: vec!["sleep".into(), marker.into()],
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
            })
            .await
            .unwrap()
            .into_inner()
            .url;
        let mut socket = websocket_v5(&url).await;
        let sleep = format!("sleep {marker}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while processes_named(&sleep) == 0 {
            assert!(Instant::now() < deadline, "{case}: the exec never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if case == "close frame" {
            socket.close(None).await.unwrap();
            // Read on until the server's close answers ours.
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(Ok(message)) = socket.next().await {
                    if let Message::Close(_) = message {
                        break;
                    }
                }
            })
            .await;
        } else {
            socket
                .send(Message::Binary(vec![0u8, b'x'].into()))
                .await
                .unwrap();
            drop(socket);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while processes_named(&sleep) > 0 {
            assert!(
                Instant::now() < deadline,
                "{case}: the exec'd process outlived its client\n{}",
                tail(&f.runtime.log(), 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_no_exec_in_left(&f).await;
    }
}

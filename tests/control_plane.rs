//! `capstan control-plane` as a user runs it: a fresh data directory, HTTPS with the cluster's
//! own CA, the admin kubeconfig it writes used by the real kubectl (1.33 and 1.27), objects and
//! credentials kept across a restart, token-file users authenticated and authorized by RBAC
//! (the bootstrap policy, then a binding the admin makes; the review APIs through the python
//! client), `--authorization-mode` values that are refused at start, and two API servers
//! sharing one etcd cluster.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use capstan_testkit::etcd::EtcdCluster;
use common::free_port;

const KUBECTL_1_27: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// A `capstan control-plane` process, killed when dropped.
struct ControlPlane {
    child: Option<Child>,
    data_dir: PathBuf,
    port: u16,
    log: PathBuf,
    extra: Vec<String>,
}

impl ControlPlane {
    fn start(data_dir: &Path, port: u16, extra: &[&str]) -> Self {
        let mut plane = ControlPlane {
            child: None,
            data_dir: data_dir.to_path_buf(),
            port,
            log: data_dir.with_extension("log"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        plane.spawn();
        plane
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args([
                "--log-level",
                "debug",
                "control-plane",
                "--bind-address",
                "127.0.0.1",
            ])
            .arg("--secure-port")
            .arg(self.port.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("admin.kubeconfig")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers ok through the admin kubeconfig.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.status.success() && String::from_utf8_lossy(&out.stdout) == "ok" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the control plane did not get ready:\n{}", self.log());
    }

    fn kubectl_with(&self, binary: &str, args: &[&str], stdin: Option<&str>) -> Output {
        capstan_testkit::kubectl::Kubectl::kubeconfig(binary, &self.kubeconfig())
            .stdin(stdin)
            .output_blocking(args)
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with("kubectl", args, None)
    }

    /// kubectl's stdout; panics with its stderr and the server's log when it fails.
    fn ok(&self, binary: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_with(binary, args, stdin);
        assert!(
            out.status.success(),
            "{binary} {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

const CONFIG_MAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: web}
data:
  mode: fast
";

#[test]
fn kubectl_uses_a_fresh_control_plane_over_https_and_a_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut plane = ControlPlane::start(&data_dir, free_port(), &[]);

    let namespaces = plane.ok("kubectl", &["get", "ns", "-o", "name"], None);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            namespaces.contains(&format!("namespace/{ns}")),
            "{namespaces}"
        );
    }
    plane.ok("kubectl", &["apply", "-f", "-"], Some(CONFIG_MAP));
    let mode = plane.ok(
        KUBECTL_1_27,
        &["get", "cm", "settings", "-o", "jsonpath={.data.mode}"],
        None,
    );
    assert_eq!(mode, "fast");
    let missing = plane.kubectl(&["get", "cm", "nope"]);
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr).trim(),
        "Error from server (NotFound): configmaps \"nope\" not found"
    );
    let ca = std::fs::read(data_dir.join("pki/ca.crt")).unwrap();
    let kubeconfig = std::fs::read(plane.kubeconfig()).unwrap();
    let uid = plane.ok(
        "kubectl",
        &["get", "cm", "settings", "-o", "jsonpath={.metadata.uid}"],
        None,
    );

    plane.stop();
    plane.spawn();
    assert_eq!(
        std::fs::read(data_dir.join("pki/ca.crt")).unwrap(),
        ca,
        "the CA is kept"
    );
    assert_eq!(std::fs::read(plane.kubeconfig()).unwrap(), kubeconfig);
    let after = plane.ok(
        "kubectl",
        &[
            "get",
            "cm",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.uid}",
        ],
        None,
    );
    assert_eq!(after, uid, "the object survived the restart as it was");

    // The private keys are for root alone.
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca.key", "apiserver.key", "admin.key", "sa.key"] {
        let mode = std::fs::metadata(data_dir.join("pki").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} is mode {mode:o}");
    }
}

#[test]
fn token_users_are_authenticated_and_authorized_by_rbac() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "s3cret,alice,uid-alice,\"devs,qa\"\n").unwrap();
    let data_dir = dir.path().join("data");
    let plane = ControlPlane::start(
        &data_dir,
        free_port(),
        &["--token-auth-file", tokens.to_str().unwrap()],
    );
    let server = format!("https://127.0.0.1:{}", plane.port);
    let ca = data_dir.join("pki/ca.crt");
    let as_alice = |args: &[&str]| {
        Command::new("kubectl")
            .args(["--server", &server, "--token", "s3cret"])
            .arg(format!("--certificate-authority={}", ca.display()))
            .args(args)
            .output()
            .unwrap()
    };
    let discovery = as_alice(&["api-versions"]);
    assert!(
        String::from_utf8_lossy(&discovery.stdout).contains("apps/v1"),
        "{}",
        String::from_utf8_lossy(&discovery.stderr)
    );
    let list = as_alice(&["get", "pods", "-n", "default"]);
    assert!(!list.status.success());
    let stderr = String::from_utf8_lossy(&list.stderr);
    assert_eq!(
        stderr.trim(),
        "Error from server (Forbidden): pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    // A binding the admin makes lets her, through the RBAC index's watch.
    plane.ok(
        "kubectl",
        &[
            "create",
            "clusterrolebinding",
            "alice-view",
            "--clusterrole=view",
            "--user=alice",
        ],
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !as_alice(&["get", "pods", "-n", "default"]).status.success() {
        assert!(Instant::now() < deadline, "the binding never applied");
        std::thread::sleep(Duration::from_millis(100));
    }
    let can_i = as_alice(&["auth", "can-i", "delete", "pods"]);
    assert_eq!(String::from_utf8_lossy(&can_i.stdout).trim(), "no");
    // The review APIs through the python client, as the admin.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/review_check.py");
    let out = Command::new(PYTHON_CLIENT)
        .arg(&script)
        .arg(plane.kubeconfig())
        .arg("s3cret")
        .output()
        .unwrap_or_else(|e| panic!("{PYTHON_CLIENT}: {e} (hack/deps.sh test installs it)"));
    assert!(
        out.status.success(),
        "the python client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["self"], true);
    assert_eq!(
        seen["alice_list"],
        serde_json::json!([
            true,
            "RBAC: allowed by ClusterRoleBinding \"alice-view\" of ClusterRole \"view\" to User \"alice\""
        ])
    );
    assert_eq!(seen["alice_delete"], false);
    assert_eq!(
        seen["good"],
        serde_json::json!([true, "alice", ["devs", "qa", "system:authenticated"]])
    );
    assert_eq!(seen["bad"][0], false);
    assert!(
        seen["bad"][1].as_str().unwrap().contains("unknown token"),
        "{seen}"
    );
    let wrong = Command::new("kubectl")
        .args(["--server", &server, "--token", "wrong"])
        .arg(format!("--certificate-authority={}", ca.display()))
        .args(["get", "pods"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    // Anonymous: the health checks and the version, nothing else.
    let curl = |path: &str| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&ca)
            .arg(format!("{server}{path}"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(curl("/readyz"), "200");
    assert_eq!(curl("/version"), "200");
    assert_eq!(curl("/api/v1/namespaces/default/configmaps"), "403");
}

#[test]
fn authorization_modes_not_built_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for (modes, expected) in [
        (
            "Node,Webhook",
            "authorization-mode \"Webhook\" is not implemented yet",
        ),
        ("Bogus", "authorization-mode \"Bogus\" is not a valid mode"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args([
                "control-plane",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
            ])
            .arg(free_port().to_string())
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--authorization-mode", modes])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{modes} started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{modes}: {stderr}");
        // Nothing was made for a start that could not happen.
        assert!(!dir.path().join("data").exists());
    }
}

#[test]
fn two_api_servers_share_one_etcd_cluster_and_either_serves_when_the_other_dies() {
    let cluster = EtcdCluster::start_members(3).unwrap();
    let endpoints = cluster.endpoints().join(",");
    let dir = tempfile::tempdir().unwrap();
    let first_dir = dir.path().join("first");
    let mut first = ControlPlane::start(&first_dir, free_port(), &["--etcd-servers", &endpoints]);
    // The second server shares the first's credentials, as HA API servers share a CA.
    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(second_dir.join("pki")).unwrap();
    for entry in std::fs::read_dir(first_dir.join("pki")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with("apiserver") {
            continue;
        }
        std::fs::copy(entry.path(), second_dir.join("pki").join(entry.file_name())).unwrap();
    }
    let second = ControlPlane::start(&second_dir, free_port(), &["--etcd-servers", &endpoints]);

    first.ok("kubectl", &["apply", "-f", "-"], Some(CONFIG_MAP));
    let seen = second.ok(
        "kubectl",
        &["get", "cm", "settings", "-o", "jsonpath={.data.mode}"],
        None,
    );
    assert_eq!(
        seen, "fast",
        "the second API server reads what the first wrote"
    );

    first.kill();
    second.ok(
        "kubectl",
        &[
            "patch",
            "cm",
            "settings",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"mode":"slow"}}"#,
        ],
        None,
    );
    first.spawn();
    let mode = first.ok(
        "kubectl",
        &["get", "cm", "settings", "-o", "jsonpath={.data.mode}"],
        None,
    );
    assert_eq!(
        mode, "slow",
        "the restarted server sees the write made while it was down"
    );
    let namespaces = first.ok("kubectl", &["get", "ns", "-o", "name"], None);
    assert_eq!(
        namespaces.lines().count(),
        4,
        "no system namespace made twice: {namespaces}"
    );
}

/// The python `kubernetes` client (PyPI, installed by hack/deps.sh test into a venv).
const PYTHON_CLIENT: &str = "/var/cache/capstan-py/bin/python";

#[test]
fn the_python_kubernetes_client_does_crud_paging_and_resumed_watches() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(&dir.path().join("data"), free_port(), &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_check.py");
    let out = Command::new(PYTHON_CLIENT)
        .arg(&script)
        .arg(plane.kubeconfig())
        .output()
        .unwrap_or_else(|e| panic!("{PYTHON_CLIENT}: {e} (hack/deps.sh test installs it)"));
    assert!(
        out.status.success(),
        "the python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        plane.log()
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["crud"], serde_json::json!(["slow", "python"]));
    assert_eq!(seen["conflict"], serde_json::json!([409, "Conflict"]));
    assert_eq!(
        seen["not_found"],
        serde_json::json!([404, "configmaps \"missing\" not found"])
    );
    assert_eq!(
        seen["paging"],
        serde_json::json!([
            3,
            ["page-0", "page-1", "page-2", "page-3", "page-4", "settings"]
        ])
    );
    assert_eq!(
        seen["watch"],
        serde_json::json!([["MODIFIED", "settings"], ["DELETED", "settings"]])
    );
    assert_eq!(seen["resumed"], serde_json::json!([["ADDED", "later"]]));
}

#[test]
fn service_account_token_flags_are_kube_apiservers() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let plane = ControlPlane::start(
        &data_dir,
        free_port(),
        &[
            "--service-account-issuer",
            "https://issuer.example",
            "--api-audiences",
            "https://issuer.example,extra",
            "--service-account-max-token-expiration",
            "2h",
        ],
    );
    let server = format!("https://127.0.0.1:{}", plane.port);
    let ca = data_dir.join("pki/ca.crt");
    let with_token = |token: &str, args: &[&str]| {
        Command::new(KUBECTL_1_27)
            .args(["--server", &server, "--token", token])
            .arg(format!("--certificate-authority={}", ca.display()))
            .args(args)
            .env("KUBECONFIG", dir.path().join("none"))
            .output()
            .unwrap()
    };
    let out = plane.kubectl_with(
        KUBECTL_1_27,
        &["create", "token", "default", "--duration=10h"],
        None,
    );
    assert!(out.status.success(), "{}", plane.log());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("requested expiration of 36000 seconds shortened to 7200 seconds"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let discovery = with_token(token.trim(), &["get", "--raw", "/api"]);
    assert!(
        discovery.status.success(),
        "{}",
        String::from_utf8_lossy(&discovery.stderr)
    );
    let pods = with_token(token.trim(), &["get", "pods"]);
    assert!(
        String::from_utf8_lossy(&pods.stderr)
            .contains("User \"system:serviceaccount:default:default\""),
        "{}",
        String::from_utf8_lossy(&pods.stderr)
    );
    // Any of --api-audiences is accepted; others are not.
    for (audience, accepted) in [("extra", true), ("elsewhere", false)] {
        let out = plane.ok(
            KUBECTL_1_27,
            &[
                "create",
                "token",
                "default",
                &format!("--audience={audience}"),
            ],
            None,
        );
        let answer = with_token(out.trim(), &["get", "--raw", "/api"]);
        assert_eq!(answer.status.success(), accepted, "{audience}");
    }
    // The issuer's discovery document names the configured issuer.
    let config = plane.ok(
        "kubectl",
        &["get", "--raw", "/.well-known/openid-configuration"],
        None,
    );
    assert!(
        config.contains("\"issuer\":\"https://issuer.example\""),
        "{config}"
    );

    let refused = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["control-plane", "--data-dir"])
        .arg(dir.path().join("other"))
        .args(["--service-account-max-token-expiration", "10m"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains(
            "the service-account-max-token-expiration must be between 1 hour and 2^32 seconds"
        ),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

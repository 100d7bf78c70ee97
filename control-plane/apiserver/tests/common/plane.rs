//! The control plane over its own data directory and HTTPS, on a thread of its own, for tests
//! that drive it with kubectl as several users (a token file).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use capstan_apiserver::authz::Mode;
use capstan_apiserver::run::{self, ControlPlaneOptions};

/// kubectl 1.33.
pub const KUBECTL_1_33: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

/// The control plane on a thread of its own, stopped when dropped.
pub struct Plane {
    _dir: tempfile::TempDir,
    /// Its data directory (admin.kubeconfig, pki/).
    pub data_dir: PathBuf,
    /// Where it listens.
    pub address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Plane {
    /// Starts it with the token file `tokens` (CSV lines) and `modes`.
    pub fn start_with(tokens_csv: &str, modes: Vec<Mode>) -> Plane {
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("tempdir: {error}"),
        };
        let tokens = dir.path().join("tokens.csv");
        if let Err(error) = std::fs::write(&tokens, tokens_csv) {
            panic!("tokens: {error}");
        }
        let data_dir = dir.path().join("data");
        let options = ControlPlaneOptions {
            token_auth_file: Some(tokens),
            authorization_modes: modes,
            ..ControlPlaneOptions::loopback(data_dir.clone())
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => panic!("runtime: {error}"),
            };
            let ran = runtime.block_on(run::run(
                options,
                move |address, _| {
                    let _ = ready_tx.send(address);
                },
                async {
                    let _ = stopped.await;
                },
            ));
            if let Err(error) = ran {
                panic!("control plane: {error}");
            }
        });
        let address = match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(address) => address,
            Err(error) => panic!("control plane not ready: {error}"),
        };
        Plane {
            _dir: dir,
            data_dir,
            address,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// kubectl as the admin.
    pub fn admin(&self, kubectl: &str, args: &[&str]) -> Output {
        let kubeconfig = self.data_dir.join("admin.kubeconfig");
        run_kubectl(
            kubectl,
            &[&format!("--kubeconfig={}", kubeconfig.display())],
            args,
        )
    }

    /// kubectl with a bearer token.
    pub fn as_token(&self, kubectl: &str, token: &str, args: &[&str]) -> Output {
        let ca = self.data_dir.join("pki/ca.crt");
        run_kubectl(
            kubectl,
            &[
                "--kubeconfig=/dev/null",
                &format!("--server=https://{}", self.address),
                &format!("--certificate-authority={}", ca.display()),
                &format!("--token={token}"),
            ],
            args,
        )
    }

    /// kubectl 1.33 as the admin, which must succeed; its output.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(KUBECTL_1_33, args);
        assert!(out.status.success(), "kubectl {args:?}: {}", stderr(&out));
        stdout(&out)
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `kubectl` with `connection` flags, then `args`.
pub fn run_kubectl(kubectl: &str, connection: &[&str], args: &[&str]) -> Output {
    match Command::new(kubectl).args(connection).args(args).output() {
        Ok(out) => out,
        Err(error) => panic!("{kubectl}: {error}"),
    }
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

//! Runs the real `kubectl` against a server, with a home of its own (no kubeconfig or cache
//! shared between tests unless a test gives one) and a time limit: the one kubectl runner of
//! the test suites.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// kubectl 1.32, Debian's `/usr/bin/kubectl`.
pub const KUBECTL: &str = "/usr/bin/kubectl";
/// kubectl 1.33.
pub const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
/// kubectl 1.27.
pub const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// What one kubectl run printed.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    /// It exited with status 0.
    pub success: bool,
    /// Its exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// How kubectl finds the server.
#[derive(Debug, Clone)]
enum Target {
    /// `--server URL`, no credentials.
    Server(String),
    /// `--kubeconfig FILE`.
    Kubeconfig(PathBuf),
}

/// One kubectl invocation, built up and then run.
#[derive(Debug, Clone)]
pub struct Kubectl {
    binary: String,
    target: Target,
    home: Option<PathBuf>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Kubectl {
    /// `binary --server server`, with a fresh home per run and a minute's limit.
    pub fn server(binary: &str, server: &str) -> Kubectl {
        Kubectl::new(binary, Target::Server(server.into()))
    }

    /// `binary --kubeconfig file`.
    pub fn kubeconfig(binary: &str, file: &Path) -> Kubectl {
        Kubectl::new(binary, Target::Kubeconfig(file.into()))
    }

    fn new(binary: &str, target: Target) -> Kubectl {
        Kubectl {
            binary: binary.into(),
            target,
            home: None,
            env: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(60),
        }
    }

    /// Keeps HOME and the cache in `home` (runs that should share kubectl's discovery cache).
    pub fn home(mut self, home: &Path) -> Kubectl {
        self.home = Some(home.into());
        self
    }

    /// Sets an environment variable (e.g. `KUBE_EDITOR`).
    pub fn env(mut self, key: &str, value: &str) -> Kubectl {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets each of `pairs` as an environment variable.
    pub fn envs(mut self, pairs: &[(&str, &str)]) -> Kubectl {
        for (key, value) in pairs {
            self = self.env(key, value);
        }
        self
    }

    /// Feeds `text` on standard input.
    pub fn stdin(mut self, text: Option<&str>) -> Kubectl {
        self.stdin = text.map(|text| text.as_bytes().to_vec());
        self
    }

    /// Feeds `bytes` on standard input.
    pub fn stdin_bytes(mut self, bytes: &[u8]) -> Kubectl {
        self.stdin = Some(bytes.to_vec());
        self
    }

    /// Changes the time limit.
    pub fn timeout(mut self, timeout: Duration) -> Kubectl {
        self.timeout = timeout;
        self
    }

    fn command(&self, home: &Path, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(&self.binary);
        match &self.target {
            Target::Server(url) => command.arg("--server").arg(url),
            Target::Kubeconfig(file) => command.arg("--kubeconfig").arg(file),
        };
        command
            .arg("--cache-dir")
            .arg(home.join("cache"))
            .args(args)
            .env("HOME", home)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if matches!(self.target, Target::Server(_)) {
            command.env("KUBECONFIG", home.join("none"));
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// Runs `kubectl args…`; panics when it cannot start or outlives the time limit.
    pub async fn run(&self, args: &[&str]) -> KubectlOutput {
        KubectlOutput::from(self.output(args).await)
    }

    /// [`run`](Self::run), returning the process's own output.
    pub async fn output(&self, args: &[&str]) -> std::process::Output {
        let temporary;
        let home = match &self.home {
            Some(home) => home.as_path(),
            None => {
                temporary = temporary_home();
                temporary.path()
            }
        };
        let mut command = tokio::process::Command::from(self.command(home, args));
        command.kill_on_drop(true);
        let Ok(mut child) = command.spawn() else {
            panic!("cannot run {}", self.binary)
        };
        if let (Some(text), Some(mut pipe)) = (&self.stdin, child.stdin.take()) {
            use tokio::io::AsyncWriteExt;
            let _ = pipe.write_all(text).await;
        }
        let output = tokio::time::timeout(self.timeout, child.wait_with_output()).await;
        let Ok(Ok(output)) = output else {
            panic!("kubectl {args:?} did not finish within {:?}", self.timeout)
        };
        output
    }

    /// [`output`](Self::output) for tests without an async runtime.
    pub fn output_blocking(&self, args: &[&str]) -> std::process::Output {
        let temporary;
        let home = match &self.home {
            Some(home) => home.as_path(),
            None => {
                temporary = temporary_home();
                temporary.path()
            }
        };
        let Ok(mut child) = self.command(home, args).spawn() else {
            panic!("cannot run {}", self.binary)
        };
        if let (Some(text), Some(mut pipe)) = (&self.stdin, child.stdin.take()) {
            use std::io::Write;
            let _ = pipe.write_all(text);
        }
        let pid = child.id();
        let (done, waited) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(child.wait_with_output());
        });
        match waited.recv_timeout(self.timeout) {
            Ok(Ok(output)) => output,
            _ => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                panic!("kubectl {args:?} did not finish within {:?}", self.timeout)
            }
        }
    }

    /// Runs and asserts success; its standard output.
    pub async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.success,
            "kubectl {args:?} failed: {}{}",
            output.stdout, output.stderr
        );
        output.stdout
    }

    /// Runs and asserts failure; its standard error.
    pub async fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            !output.success,
            "kubectl {args:?} should fail: {}",
            output.stdout
        );
        output.stderr
    }
}

fn temporary_home() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("cannot make a temporary home: {error}"),
    }
}

impl From<std::process::Output> for KubectlOutput {
    fn from(output: std::process::Output) -> KubectlOutput {
        KubectlOutput {
            success: output.status.success(),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// `binary --server server args…` with `stdin`, in a fresh home, within a minute.
pub async fn run(binary: &str, server: &str, args: &[&str], stdin: Option<&str>) -> KubectlOutput {
    Kubectl::server(binary, server).stdin(stdin).run(args).await
}

/// [`run`], asserting success; its standard output.
pub async fn ok(binary: &str, server: &str, args: &[&str], stdin: Option<&str>) -> String {
    Kubectl::server(binary, server).stdin(stdin).ok(args).await
}

/// [`run`], asserting failure; its standard error.
pub async fn fails(binary: &str, server: &str, args: &[&str], stdin: Option<&str>) -> String {
    Kubectl::server(binary, server)
        .stdin(stdin)
        .fails(args)
        .await
}

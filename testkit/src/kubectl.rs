//! Runs the real `kubectl` against a server, with a home of its own per call (no kubeconfig,
//! no cache shared between tests) and a time limit.

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
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `binary args…` against `server` (a URL kubectl may reach without credentials, or
/// with those in `args`), feeding it `stdin`; panics when it cannot start or takes longer than
/// `timeout`.
pub async fn run_with_timeout(
    binary: &str,
    server: &str,
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
) -> KubectlOutput {
    let Ok(home_dir) = tempfile::tempdir() else {
        panic!("cannot make a temporary home")
    };
    let home = home_dir.path();
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("--server")
        .arg(server)
        .arg("--cache-dir")
        .arg(home.join("cache"))
        .args(args)
        .env("HOME", home)
        .env("KUBECONFIG", home.join("none"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let Ok(mut child) = command.spawn() else {
        panic!("cannot run {binary}")
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        let _ = pipe.write_all(text.as_bytes()).await;
    }
    let output = tokio::time::timeout(timeout, child.wait_with_output()).await;
    let Ok(Ok(output)) = output else {
        panic!("kubectl {args:?} did not finish within {timeout:?}")
    };
    KubectlOutput {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// [`run_with_timeout`] with a minute's limit.
pub async fn run(binary: &str, server: &str, args: &[&str], stdin: Option<&str>) -> KubectlOutput {
    run_with_timeout(binary, server, args, stdin, Duration::from_secs(60)).await
}

/// Runs kubectl and asserts that it succeeded; returns its standard output.
pub async fn ok(binary: &str, server: &str, args: &[&str], stdin: Option<&str>) -> String {
    let output = run(binary, server, args, stdin).await;
    assert!(
        output.success,
        "kubectl {args:?} failed: {}{}",
        output.stdout, output.stderr
    );
    output.stdout
}

/// Runs kubectl and asserts that it failed; returns its standard error.
pub async fn fails(binary: &str, server: &str, args: &[&str], stdin: Option<&str>) -> String {
    let output = run(binary, server, args, stdin).await;
    assert!(
        !output.success,
        "kubectl {args:?} should fail: {}",
        output.stdout
    );
    output.stderr
}

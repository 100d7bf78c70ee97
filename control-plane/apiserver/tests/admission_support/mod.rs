//! What the admission tests share: kubectl against a loopback server, in a private HOME that
//! is removed afterwards.

#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// kubectl 1.33.
pub const KUBECTL_133: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
/// kubectl 1.27.
pub const KUBECTL_127: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";

/// What a kubectl run printed.
pub struct Output {
    /// Whether it exited 0.
    pub success: bool,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// Runs `binary` against `server` with `args`, feeding `stdin`.
pub async fn kubectl(binary: &str, server: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let home = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => panic!("tempdir: {error}"),
    };
    let mut command = Command::new(binary);
    command
        .arg("--server")
        .arg(server)
        .arg("--cache-dir")
        .arg(home.path().join("cache"))
        .args(args)
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("none"))
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
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await;
    let Ok(Ok(output)) = output else {
        panic!("kubectl {args:?} did not finish")
    };
    Output {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs kubectl, which must succeed; returns its output.
pub async fn ok(binary: &str, server: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let out = kubectl(binary, server, args, stdin).await;
    assert!(
        out.success,
        "kubectl {args:?} failed: {}{}",
        out.stdout, out.stderr
    );
    out
}

/// Runs kubectl, which must fail; returns its stderr.
pub async fn fails(binary: &str, server: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(binary, server, args, stdin).await;
    assert!(!out.success, "kubectl {args:?} should fail: {}", out.stdout);
    out.stderr
}

/// Parses JSON kubectl printed.
pub fn parse(text: &str) -> serde_json::Value {
    match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => panic!("not JSON ({error}): {text}"),
    }
}

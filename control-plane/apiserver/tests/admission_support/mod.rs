//! What the admission tests share: kubectl against a loopback server, in a private HOME that
//! is removed afterwards.

#![allow(dead_code)]

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
    let output = capstan_testkit::kubectl::run(binary, server, args, stdin).await;
    Output {
        success: output.success,
        stdout: output.stdout,
        stderr: output.stderr,
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

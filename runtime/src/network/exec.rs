//! One plugin invocation as the spec defines it: the CNI_* environment, the config on stdin,
//! and on stdout either the result or the spec's error object.

use std::path::Path;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::{Attachment, NetworkError};

/// What to run and with what.
#[derive(Debug)]
pub(super) struct Invocation<'a> {
    /// CNI_COMMAND.
    pub command: &'a str,
    /// The plugin's type, for messages.
    pub plugin: &'a str,
    /// Its executable.
    pub path: &'a Path,
    /// The JSON written to stdin.
    pub stdin: &'a Value,
    /// The attachment for ADD, DEL and CHECK; none for STATUS, GC and VERSION.
    pub attachment: Option<&'a Attachment>,
    /// CNI_PATH, so the plugin finds its delegates.
    pub cni_path: &'a str,
}

/// Runs the plugin; its stdout as JSON (`Null` when it printed nothing) or its error.
pub(super) async fn run(call: Invocation<'_>) -> Result<Value, NetworkError> {
    let mut command = tokio::process::Command::new(call.path);
    command
        .env_clear()
        .env("CNI_COMMAND", call.command)
        .env("CNI_PATH", call.cni_path)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    if let Some(attachment) = call.attachment {
        let (name, namespace, uid) = &attachment.pod;
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};\
             K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={uid}",
            attachment.container_id
        );
        command
            .env("CNI_CONTAINERID", &attachment.container_id)
            .env("CNI_IFNAME", &attachment.ifname)
            .env("CNI_ARGS", args);
        // A DEL for a pod whose namespace is already gone must not name a missing file: the
        // spec lets DEL run without CNI_NETNS, and plugins then skip the namespace's side.
        if call.command != "DEL" || attachment.netns.exists() {
            command.env("CNI_NETNS", &attachment.netns);
        }
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| NetworkError::Io(format!("run {}: {e}", call.path.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        match stdin.write_all(call.stdin.to_string().as_bytes()).await {
            // A plugin may answer without reading its config (VERSION often does); its exit
            // status and output tell whether it worked.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => {
                return Err(NetworkError::Io(format!(
                    "write config to {}: {e}",
                    call.plugin
                )));
            }
            Ok(()) => {}
        }
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| NetworkError::Io(format!("wait for {}: {e}", call.plugin)))?;
    let stdout: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    if !output.status.success() {
        return Err(plugin_error(
            call.plugin,
            call.command,
            &stdout,
            &output.stderr,
        ));
    }
    tracing::debug!(
        plugin = call.plugin,
        command = call.command,
        container = call.attachment.map(|a| a.container_id.as_str()),
        "CNI plugin succeeded"
    );
    Ok(stdout)
}

/// The spec's error object (`code`, `msg`, `details`) as an error; stderr when the plugin
/// printed none.
fn plugin_error(plugin: &str, command: &str, stdout: &Value, stderr: &[u8]) -> NetworkError {
    let details = stdout["details"].as_str().unwrap_or_default();
    let mut message = stdout["msg"].as_str().unwrap_or_default().to_string();
    if !details.is_empty() {
        message = format!("{message}: {details}");
    }
    if message.is_empty() {
        message = String::from_utf8_lossy(stderr).trim().to_string();
    }
    NetworkError::Plugin {
        plugin: plugin.to_string(),
        command: command.to_string(),
        code: stdout["code"].as_u64().unwrap_or(0),
        message,
    }
}

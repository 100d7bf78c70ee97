//! Calling another plugin (the IPAM plugin a config names) found on CNI_PATH.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use serde_json::Value;

use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;
use crate::skel::{Command, Context};

/// Finds executable `name` in the CNI_PATH directories.
pub fn find(name: &str, cni_path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if name.is_empty() || name.contains('/') {
        return Err(CniError::config(format!(
            "network config field `ipam.type` {name:?} must be a plugin name, not a path"
        )));
    }
    cni_path
        .iter()
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::config(format!(
                "IPAM plugin {name:?} (field `ipam.type`) was not found in CNI_PATH {}",
                cni_path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            ))
        })
}

/// Runs `name` with `command`, the caller's environment and its stdin; returns the
/// delegate's stdout JSON (if any) or its error unchanged.
pub fn exec(name: &str, command: Command, ctx: &Context) -> Result<Option<Value>, CniError> {
    let path = find(name, &ctx.cni_path)?;
    let mut child = Process::new(&path)
        .env("CNI_COMMAND", command.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CniError::internal(format!("cannot run {}", path.display())).with_details(e)
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A delegate that exits without reading stdin is reported by its status below.
        let _ = stdin.write_all(&ctx.stdin);
    }
    let output = child
        .wait_with_output()
        .map_err(|e| CniError::internal(format!("cannot wait for {name}")).with_details(e))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        if let Ok(err) = serde_json::from_str::<CniError>(&stdout) {
            return Err(err);
        }
        return Err(CniError::internal(format!(
            "IPAM plugin {name} failed ({}) without an error result",
            output.status
        ))
        .with_details(String::from_utf8_lossy(&output.stderr)));
    }
    if stdout.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&stdout).map(Some).map_err(|e| {
        CniError::new(
            ErrorCode::DecodeFailure,
            format!("IPAM plugin {name} printed output that is not JSON"),
        )
        .with_details(e)
    })
}

/// ADD through the IPAM plugin named in the config: returns its result.
pub fn ipam_add(ctx: &Context) -> Result<CniResult, CniError> {
    let name = ipam_type(ctx)?;
    let value = exec(name, Command::Add, ctx)?
        .ok_or_else(|| CniError::internal(format!("IPAM plugin {name} returned no result")))?;
    let result = CniResult::from_value(&value)?;
    if result.ips.is_empty() {
        return Err(CniError::internal(format!(
            "IPAM plugin {name} returned no IP addresses"
        )));
    }
    Ok(result)
}

/// DEL, CHECK, STATUS or GC through the IPAM plugin named in the config.
pub fn ipam(command: Command, ctx: &Context) -> Result<(), CniError> {
    exec(ipam_type(ctx)?, command, ctx).map(|_| ())
}

fn ipam_type(ctx: &Context) -> Result<&str, CniError> {
    ctx.conf
        .ipam
        .as_ref()
        .map(|i| i.plugin_type.as_str())
        .ok_or_else(|| CniError::config("network config field `ipam` is missing"))
}

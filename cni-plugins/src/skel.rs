//! The plugin entry point: reads the CNI_* environment and stdin, runs the command, prints
//! the result (or the spec's error JSON) on stdout and sets the exit status.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use crate::config::{self, NetConf};
use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;
use crate::version::{self, LATEST, SUPPORTED_VERSIONS};

/// A CNI command (CNI_COMMAND).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container to the network.
    Add,
    /// Detach it; must succeed when already detached.
    Del,
    /// Verify an earlier ADD is still in place.
    Check,
    /// Report whether the plugin can serve ADDs (spec 1.1).
    Status,
    /// Remove state for attachments the runtime no longer holds (spec 1.1).
    Gc,
    /// Report the supported spec versions.
    Version,
}

impl Command {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            _ => return None,
        })
    }

    /// The name used in CNI_COMMAND.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        }
    }
}

/// Everything one invocation knows: validated environment plus the decoded config.
#[derive(Debug, Clone)]
pub struct Context {
    /// The command being run.
    pub command: Command,
    /// CNI_CONTAINERID (empty for STATUS and GC).
    pub container_id: String,
    /// CNI_NETNS; may be absent on DEL.
    pub netns: Option<PathBuf>,
    /// CNI_IFNAME (empty for STATUS and GC).
    pub ifname: String,
    /// CNI_ARGS as key/value pairs.
    pub args: Vec<(String, String)>,
    /// CNI_PATH directories, searched for delegated plugins.
    pub cni_path: Vec<PathBuf>,
    /// Raw stdin, handed unchanged to delegates.
    pub stdin: Vec<u8>,
    /// Stdin decoded as JSON, for plugin-specific parsing.
    pub raw: Value,
    /// The common config fields.
    pub conf: NetConf,
}

/// One plugin's commands. The skeleton has already validated environment and config.
pub(crate) trait Plugin {
    /// ADD: attach and return the result.
    async fn add(&self, ctx: &Context) -> Result<CniResult, CniError>;
    /// DEL: detach; succeeds when already gone.
    async fn del(&self, ctx: &Context) -> Result<(), CniError>;
    /// CHECK: report what differs from what ADD made.
    async fn check(&self, ctx: &Context) -> Result<(), CniError>;
    /// STATUS: ready to serve ADDs?
    async fn status(&self, ctx: &Context) -> Result<(), CniError>;
    /// GC: drop state for attachments not in `cni.dev/valid-attachments`.
    async fn gc(&self, ctx: &Context) -> Result<(), CniError>;
}

/// Runs `plugin` as a CNI executable: real environment, stdin and stdout.
pub(crate) fn run<P: Plugin>(plugin: &P) -> ExitCode {
    init_logging();
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let (version, outcome) = match read {
        Ok(_) => execute(plugin, |key| std::env::var(key).ok(), stdin),
        Err(e) => (
            LATEST.to_string(),
            Err(CniError::io("cannot read the network config from stdin", e)),
        ),
    };
    let (text, code) = match outcome {
        Ok(Some(value)) => (value.to_string(), ExitCode::SUCCESS),
        Ok(None) => (String::new(), ExitCode::SUCCESS),
        Err(err) => {
            tracing::error!(code = err.code, "{err}");
            (err.to_json(&version).to_string(), ExitCode::FAILURE)
        }
    };
    let mut out = std::io::stdout().lock();
    if !text.is_empty() && writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    code
}

/// Logs go to stderr (stdout carries the result); quiet unless CNI_LOG_LEVEL or CAPSTAN_LOG
/// asks for more. When `capstan cni` already installed a subscriber, this one is not used.
fn init_logging() {
    let filter = std::env::var("CNI_LOG_LEVEL")
        .or_else(|_| std::env::var("CAPSTAN_LOG"))
        .unwrap_or_else(|_| "warn".into());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs one invocation with `env` as the environment; returns the version to print errors in
/// and the JSON to print (none for DEL, GC, CHECK and STATUS).
pub(crate) fn execute<P: Plugin>(
    plugin: &P,
    env: impl Fn(&str) -> Option<String>,
    stdin: Vec<u8>,
) -> (String, Result<Option<Value>, CniError>) {
    let command = match env("CNI_COMMAND").filter(|c| !c.is_empty()) {
        None => return (LATEST.into(), Err(CniError::env("CNI_COMMAND is not set"))),
        Some(c) => match Command::parse(&c) {
            Some(c) => c,
            None => {
                return (
                    LATEST.into(),
                    Err(CniError::env(format!(
                        "CNI_COMMAND {c:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"
                    ))),
                );
            }
        },
    };
    if command == Command::Version {
        return version_reply(&stdin);
    }
    let ctx = match context(command, &env, stdin) {
        Ok(ctx) => ctx,
        Err((version, err)) => return (version, Err(err)),
    };
    let version = ctx.conf.cni_version.clone();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return (
                version,
                Err(CniError::internal("cannot start the async runtime").with_details(e)),
            );
        }
    };
    tracing::debug!(command = command.as_str(), container = %ctx.container_id, "running");
    let outcome = runtime.block_on(async {
        match command {
            Command::Add => plugin
                .add(&ctx)
                .await
                .map(|r| Some(r.to_json(&ctx.conf.cni_version))),
            Command::Del => plugin.del(&ctx).await.map(|()| None),
            Command::Check => plugin.check(&ctx).await.map(|()| None),
            Command::Status => plugin.status(&ctx).await.map(|()| None),
            Command::Gc => plugin.gc(&ctx).await.map(|()| None),
            Command::Version => Ok(None),
        }
    });
    (version, outcome)
}

fn version_reply(stdin: &[u8]) -> (String, Result<Option<Value>, CniError>) {
    // The spec sends {"cniVersion": ...} on stdin; older runtimes send nothing.
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .unwrap_or_else(|| LATEST.to_string());
    let reply = serde_json::json!({
        "cniVersion": asked,
        "supportedVersions": SUPPORTED_VERSIONS,
    });
    (asked, Ok(Some(reply)))
}

fn context(
    command: Command,
    env: &impl Fn(&str) -> Option<String>,
    stdin: Vec<u8>,
) -> Result<Context, (String, CniError)> {
    // Decode the config first so that environment errors are reported in its version.
    let raw: Value = serde_json::from_slice(&stdin).map_err(|e| {
        (
            LATEST.to_string(),
            CniError::new(
                ErrorCode::DecodeFailure,
                "network config on stdin is not valid JSON",
            )
            .with_details(e),
        )
    })?;
    let conf: NetConf = config::parse(&raw).map_err(|e| (LATEST.to_string(), e))?;
    let version = conf.cni_version.clone();
    let fail = |e: CniError| (version.clone(), e);
    version::ensure_supported(&conf.cni_version).map_err(fail)?;
    if conf.name.is_empty() {
        return Err(fail(CniError::config(
            "network config field `name` is empty",
        )));
    }
    let needs = |min, what: &str| {
        if version::at_least(&conf.cni_version, min) {
            Ok(())
        } else {
            Err(fail(CniError::new(
                ErrorCode::IncompatibleVersion,
                format!(
                    "{what} needs cniVersion {}.{}.{} or newer; the config says {}",
                    min.0, min.1, min.2, conf.cni_version
                ),
            )))
        }
    };
    match command {
        Command::Check => needs((0, 4, 0), "CHECK")?,
        Command::Status => needs((1, 1, 0), "STATUS")?,
        Command::Gc => needs((1, 1, 0), "GC")?,
        _ => {}
    }
    let attaches = matches!(command, Command::Add | Command::Del | Command::Check);
    let var = |key: &str| env(key).filter(|v| !v.is_empty());
    let container_id = match var("CNI_CONTAINERID") {
        Some(id) => validate_container_id(&id).map(|()| id).map_err(fail)?,
        None if attaches => return Err(fail(CniError::env("CNI_CONTAINERID is not set"))),
        None => String::new(),
    };
    let ifname = match var("CNI_IFNAME") {
        Some(name) => validate_ifname(&name).map(|()| name).map_err(fail)?,
        None if attaches => return Err(fail(CniError::env("CNI_IFNAME is not set"))),
        None => String::new(),
    };
    let netns = var("CNI_NETNS").map(PathBuf::from);
    if netns.is_none() && matches!(command, Command::Add | Command::Check) {
        return Err(fail(CniError::env("CNI_NETNS is not set")));
    }
    let cni_path: Vec<PathBuf> = var("CNI_PATH")
        .map(|p| {
            p.split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    if cni_path.is_empty() {
        return Err(fail(CniError::env("CNI_PATH is not set")));
    }
    let args = config::parse_cni_args(&var("CNI_ARGS").unwrap_or_default()).map_err(fail)?;
    Ok(Context {
        command,
        container_id,
        netns,
        ifname,
        args,
        cni_path,
        stdin,
        raw,
        conf,
    })
}

/// Container ids: alphanumeric first, then alphanumerics, `_`, `.` or `-` (as the spec says),
/// which also keeps them safe as file content and in names derived from them.
fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        Ok(())
    } else {
        Err(CniError::env(format!(
            "CNI_CONTAINERID {id:?} is invalid: it must start with a letter or digit and \
             contain only letters, digits, '_', '.' or '-'"
        )))
    }
}

/// Interface names: what the kernel accepts (1-15 bytes, no '/', ':' or whitespace).
pub(crate) fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        Err(CniError::env(format!(
            "CNI_IFNAME {name:?} is invalid: it must be 1-15 bytes without '/', ':' or spaces"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Records which command ran; ADD returns an empty result.
    struct Probe;

    impl Plugin for Probe {
        async fn add(&self, _: &Context) -> Result<CniResult, CniError> {
            Ok(CniResult::default())
        }
        async fn del(&self, _: &Context) -> Result<(), CniError> {
            Ok(())
        }
        async fn check(&self, _: &Context) -> Result<(), CniError> {
            Err(CniError::internal("check ran"))
        }
        async fn status(&self, _: &Context) -> Result<(), CniError> {
            Err(CniError::new(ErrorCode::NotAvailable, "status ran"))
        }
        async fn gc(&self, _: &Context) -> Result<(), CniError> {
            Err(CniError::internal("gc ran"))
        }
    }

    const CONF: &str = r#"{"cniVersion":"1.1.0","name":"net","type":"probe"}"#;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn full_env(command: &str) -> Vec<(&str, &str)> {
        vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "abc-1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
    }

    fn run(pairs: &[(&str, &str)], stdin: &str) -> (String, Result<Option<Value>, CniError>) {
        execute(&Probe, env(pairs), stdin.as_bytes().to_vec())
    }

    #[test]
    fn version_lists_supported_versions() {
        let (_, out) = run(&[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
        let out = out.unwrap().unwrap();
        assert_eq!(out["cniVersion"], "1.0.0");
        assert!(
            out["supportedVersions"]
                .as_array()
                .unwrap()
                .contains(&"1.1.0".into())
        );
    }

    #[test]
    fn missing_command_is_code_7() {
        let (_, out) = run(&[], CONF);
        let err = out.unwrap_err();
        assert_eq!(err.code, 7);
        assert!(err.msg.contains("CNI_COMMAND"));
        let (_, out) = run(&[("CNI_COMMAND", "FROB")], CONF);
        assert_eq!(out.unwrap_err().code, 7);
    }

    #[test]
    fn each_missing_variable_is_named() {
        for missing in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_PATH"] {
            let pairs: Vec<_> = full_env("ADD")
                .into_iter()
                .filter(|(k, _)| *k != missing)
                .collect();
            let (version, out) = run(&pairs, CONF);
            let err = out.unwrap_err();
            assert_eq!(err.code, 7, "{missing}");
            assert!(err.msg.contains(missing), "{}", err.msg);
            assert_eq!(version, "1.1.0");
        }
    }

    #[test]
    fn del_does_not_need_netns() {
        let pairs: Vec<_> = full_env("DEL")
            .into_iter()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        assert_eq!(run(&pairs, CONF).1.unwrap(), None);
    }

    #[test]
    fn add_prints_result_in_config_version() {
        let conf = r#"{"cniVersion":"0.4.0","name":"net","type":"probe"}"#;
        let out = run(&full_env("ADD"), conf).1.unwrap().unwrap();
        assert_eq!(out["cniVersion"], "0.4.0");
    }

    #[test]
    fn commands_dispatch() {
        assert_eq!(
            run(&full_env("CHECK"), CONF).1.unwrap_err().msg,
            "check ran"
        );
        let status = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")];
        assert_eq!(run(&status, CONF).1.unwrap_err().code, 50);
        let gc = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")];
        assert_eq!(run(&gc, CONF).1.unwrap_err().msg, "gc ran");
    }

    #[test]
    fn status_and_gc_need_1_1() {
        let conf = r#"{"cniVersion":"1.0.0","name":"net","type":"probe"}"#;
        let (version, out) = run(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")], conf);
        assert_eq!(out.unwrap_err().code, 1);
        assert_eq!(version, "1.0.0");
    }

    #[test]
    fn bad_ids_and_names_are_refused() {
        let mut pairs = full_env("ADD");
        pairs[1] = ("CNI_CONTAINERID", "../etc");
        let err = run(&pairs, CONF).1.unwrap_err();
        assert!(err.msg.contains("CNI_CONTAINERID"));
        let mut pairs = full_env("ADD");
        pairs[3] = ("CNI_IFNAME", "a-very-long-interface-name");
        let err = run(&pairs, CONF).1.unwrap_err();
        assert!(err.msg.contains("CNI_IFNAME"));
    }

    #[test]
    fn bad_config_is_reported() {
        let err = run(&full_env("ADD"), "{").1.unwrap_err();
        assert_eq!(err.code, 6);
        let (_, out) = run(
            &full_env("ADD"),
            r#"{"cniVersion":"9.9.9","name":"n","type":"t"}"#,
        );
        assert_eq!(out.unwrap_err().code, 1);
        let err = run(&full_env("ADD"), r#"{"cniVersion":"1.0.0","type":"t"}"#)
            .1
            .unwrap_err();
        assert_eq!(err.code, 4);
        assert!(err.msg.contains("name"));
    }
}

//! Helpers shared by the plugin integration tests: run a plugin binary as a runtime would,
//! snapshot a namespace's network state, and test TCP reachability between namespaces.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use capstan_testkit::netns::NetNs;
use serde_json::Value;

/// Directory holding our plugin executables (CNI_PATH for our delegations).
pub fn our_bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_bridge"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Debian's reference plugins.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// Fails clearly when the reference plugins are not installed.
pub fn require_reference() {
    assert!(
        Path::new(REFERENCE_DIR).join("bridge").is_file(),
        "the interop tests need Debian's reference plugins: apt-get install containernetworking-plugins"
    );
}

/// What a plugin run printed and how it exited.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// Stdout as JSON (the result or the error object).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {:?} / {}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts success and returns the JSON result (null for commands that print nothing).
    pub fn ok(&self) -> Value {
        assert!(
            self.success,
            "plugin failed: {} / {}",
            self.stdout, self.stderr
        );
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts failure with `code` and returns the error message.
    pub fn err(&self, code: u64) -> String {
        assert!(
            !self.success,
            "plugin unexpectedly succeeded: {}",
            self.stdout
        );
        let json = self.json();
        assert_eq!(json["code"], code, "wrong code: {json}");
        json["msg"].as_str().unwrap_or_default().to_string()
    }
}

/// One plugin invocation's environment.
#[derive(Debug, Clone)]
pub struct Call {
    pub command: String,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub cni_path: String,
    pub args: Option<String>,
}

impl Call {
    pub fn new(command: &str, container_id: &str, netns: Option<&Path>, ifname: &str) -> Self {
        Self {
            command: command.into(),
            container_id: container_id.into(),
            netns: netns.map(Path::to_path_buf),
            ifname: ifname.into(),
            cni_path: our_bin_dir().display().to_string(),
            args: None,
        }
    }

    pub fn cni_path(mut self, path: &str) -> Self {
        self.cni_path = path.into();
        self
    }

    pub fn command(mut self, command: &str) -> Self {
        self.command = command.into();
        self
    }

    /// Sets this call's CNI_* environment (and only that, plus PATH) on `cmd`.
    pub fn apply_to(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", &self.command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_PATH", &self.cni_path);
        if let Some(ns) = &self.netns {
            cmd.env("CNI_NETNS", ns);
        }
        if let Some(args) = &self.args {
            cmd.env("CNI_ARGS", args);
        }
    }
}

/// Runs `plugin` with `call`'s environment and `conf` on stdin, in `host` when given.
pub fn run(plugin: &Path, host: Option<&NetNs>, call: &Call, conf: &Value) -> Outcome {
    let mut cmd = match host {
        Some(ns) => ns.command(plugin),
        None => Command::new(plugin),
    };
    call.apply_to(&mut cmd);
    run_command(cmd, conf.to_string().as_bytes())
}

/// Runs a prepared command with `stdin`.
pub fn run_command(mut cmd: Command, stdin: &[u8]) -> Outcome {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait plugin");
    Outcome {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Our plugin executable `name`.
pub fn ours(name: &str) -> PathBuf {
    our_bin_dir().join(name)
}

/// Output of an `ip` (iproute2) inspection command inside `ns`, as JSON.
pub fn ip_json(ns: &NetNs, args: &[&str]) -> Value {
    let out = ns
        .command("ip")
        .arg("-j")
        .args(args)
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&text).expect("ip -j output")
}

/// Output of a `bridge` (iproute2) inspection command inside `ns`, as JSON.
pub fn bridge_json(ns: &NetNs, args: &[&str]) -> Value {
    let out = ns
        .command("bridge")
        .arg("-j")
        .args(args)
        .output()
        .expect("run bridge");
    assert!(
        out.status.success(),
        "bridge {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    if text.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&text).expect("bridge -j output")
}

/// A comparable picture of a namespace's network state: link names, addresses, routes,
/// FDB and neighbour entries (volatile fields such as counters and ages dropped).
pub fn snapshot(ns: &NetNs) -> Vec<String> {
    let mut lines = Vec::new();
    for link in ip_json(ns, &["link", "show"])
        .as_array()
        .into_iter()
        .flatten()
    {
        lines.push(format!("link {}", link["ifname"]));
    }
    for link in ip_json(ns, &["addr", "show"])
        .as_array()
        .into_iter()
        .flatten()
    {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            // Kernel link-local IPv6 addresses are derived from random MACs: ignore them.
            if a["scope"] == "link" {
                continue;
            }
            lines.push(format!(
                "addr {} {}/{}",
                link["ifname"], a["local"], a["prefixlen"]
            ));
        }
    }
    for family in ["-4", "-6"] {
        for r in ip_json(ns, &[family, "route", "show", "table", "all"])
            .as_array()
            .into_iter()
            .flatten()
        {
            if r["dst"]
                .as_str()
                .is_some_and(|d| d.starts_with("fe80") || d.starts_with("ff00"))
            {
                continue;
            }
            lines.push(format!(
                "route {} {} {} {}",
                r["dst"], r["gateway"], r["dev"], r["table"]
            ));
        }
    }
    for f in bridge_json(ns, &["fdb", "show"])
        .as_array()
        .into_iter()
        .flatten()
    {
        lines.push(format!(
            "fdb {} {} {} {} {}",
            f["mac"], f["ifname"], f["dst"], f["vlan"], f["state"]
        ));
    }
    for n in ip_json(ns, &["neigh", "show", "nud", "permanent"])
        .as_array()
        .into_iter()
        .flatten()
    {
        lines.push(format!("neigh {} {} {}", n["dst"], n["dev"], n["lladdr"]));
    }
    lines.sort();
    lines.dedup();
    lines
}

/// Files in a host-local store directory other than `lock` and `last_reserved_ip.*`.
pub fn allocation_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip."))
                .collect()
        })
        .unwrap_or_default()
}

/// A TCP server inside a namespace; it stops (and closes its socket, so the namespace can go
/// away) when dropped.
pub struct Server {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP listener bound inside `ns` that answers each connection with `reply`.
#[must_use = "the server stops when dropped"]
pub fn serve(ns: &NetNs, port: u16, reply: &'static str) -> Server {
    let listener = ns
        .run(move || {
            TcpListener::bind(("::", port)).or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        })
        .expect("enter netns")
        .expect("bind listener");
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.write_all(reply.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Server {
        stop,
        thread: Some(thread),
    }
}

/// Connects from inside `ns` to `ip:port` and returns what the server sent, or the error.
pub fn fetch(ns: &NetNs, ip: IpAddr, port: u16) -> Result<String, String> {
    ns.run(move || {
        let mut stream =
            TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(2))
                .map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut buf = String::new();
        stream.read_to_string(&mut buf).map_err(|e| e.to_string())?;
        Ok(buf)
    })
    .map_err(|e| e.to_string())?
}

/// The first address in a result's `ips`.
pub fn first_ip(result: &Value) -> IpAddr {
    let addr = result["ips"][0]["address"]
        .as_str()
        .expect("ips[0].address");
    addr.split('/')
        .next()
        .unwrap_or_default()
        .parse()
        .expect("address")
}

/// A config with `prevResult` set, for CHECK.
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

//! A `capstan control-plane` process for the durability tests, and an HTTPS client (curl with
//! the admin client certificate) that can be pointed at several servers.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A `capstan control-plane` process, killed (SIGKILL) when dropped.
pub struct Plane {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub port: u16,
    log: PathBuf,
    extra: Vec<String>,
}

impl Plane {
    /// Starts it on `port` over `data_dir` and waits until `/readyz` answers.
    pub fn start(data_dir: &Path, port: u16, extra: &[&str]) -> Plane {
        let mut plane = Plane {
            child: None,
            data_dir: data_dir.to_path_buf(),
            port,
            log: data_dir.with_extension("log"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        plane.spawn();
        plane
    }

    /// Starts the process again (after `kill`).
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args([
                "--log-level",
                "info",
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The admin client's credentials, from this server's data directory.
    pub fn client(&self) -> Client {
        Client::new(&self.data_dir.join("pki"), vec![self.url()])
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.data_dir.join("pki/admin.key").exists() {
                if let Ok((200, body)) = self.client().request("GET", "/readyz", None) {
                    if body == "ok" {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the control plane did not get ready:\n{}", self.log());
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies a server's cluster credentials (not its serving certificate) into a second data
/// directory, as HA API servers share one CA.
pub fn share_credentials(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("pki")).unwrap();
    for entry in std::fs::read_dir(from.join("pki")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with("apiserver") {
            continue;
        }
        std::fs::copy(entry.path(), to.join("pki").join(entry.file_name())).unwrap();
    }
}

/// curl as the admin, over the servers' URLs in turn.
#[derive(Clone)]
pub struct Client {
    pki: PathBuf,
    urls: Vec<String>,
}

impl Client {
    pub fn new(pki: &Path, urls: Vec<String>) -> Client {
        Client {
            pki: pki.to_path_buf(),
            urls,
        }
    }

    fn curl(&self) -> Command {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "5", "--cacert"])
            .arg(self.pki.join("ca.crt"))
            .arg("--cert")
            .arg(self.pki.join("admin.crt"))
            .arg("--key")
            .arg(self.pki.join("admin.key"));
        curl
    }

    /// One request to the first URL; the code and body, `Err` when no HTTP answer came.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), String> {
        self.request_to(&self.urls[0], method, path, body)
    }

    /// One request to `url`.
    pub fn request_to(
        &self,
        url: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String), String> {
        let mut curl = self.curl();
        curl.args(["-X", method, "-w", "\n%{http_code}"]);
        if let Some(body) = body {
            let content_type = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            curl.args([
                "-H",
                &format!("Content-Type: {content_type}"),
                "--data-binary",
            ])
            .arg(body.to_string());
        }
        let out = curl
            .arg(format!("{url}{path}"))
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        match code.trim().parse::<u16>() {
            Ok(code) if code != 0 => Ok((code, body.to_string())),
            _ => Err(String::from_utf8_lossy(&out.stderr).to_string()),
        }
    }

    /// A JSON request, trying each URL in turn until one answers (clients of an HA pair
    /// fail over); the code and the body as JSON.
    pub fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let mut last = String::new();
        for url in &self.urls {
            match self.request_to(url, method, path, body) {
                Ok((code, text)) if code < 500 => {
                    return Ok((code, serde_json::from_str(&text).unwrap_or(Value::Null)));
                }
                Ok((code, text)) => last = format!("{code}: {text}"),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A streaming watch on `url`; its lines as they come.
    pub fn watch(&self, url: &str, path: &str) -> Watch {
        let mut child = self
            .curl()
            .args(["-N", "--max-time", "120"])
            .arg(format!("{url}{path}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        Watch {
            child,
            lines: BufReader::new(stdout),
        }
    }
}

/// A curl watch process, killed when dropped.
pub struct Watch {
    child: Child,
    lines: BufReader<ChildStdout>,
}

impl Watch {
    /// The next event, `None` when the stream ended.
    pub fn next(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.lines.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap_or(Value::Null)),
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

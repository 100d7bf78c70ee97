//! A real OCI registry for tests: Debian's `docker-registry` on a free loopback port, storing
//! into a temporary directory, stopped and removed when the guard drops.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::distribution::Client;
use crate::error::{Error, Result};

/// Where Debian installs the registry.
pub const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running registry.
#[derive(Debug)]
pub struct LocalRegistry {
    child: Child,
    addr: SocketAddr,
    dir: TempDir,
}

impl LocalRegistry {
    /// Starts a registry and waits until it answers `/v2/`.
    pub fn start() -> Result<Self> {
        if !Path::new(REGISTRY_BINARY).exists() {
            return Err(Error::Command(format!(
                "{REGISTRY_BINARY} is missing: install Debian's docker-registry (hack/test.sh does)"
            )));
        }
        // A port picked from a closed listener can be taken before the registry binds it:
        // try a few.
        let mut last_error = None;
        for _ in 0..3 {
            match Self::start_once() {
                Ok(registry) => return Ok(registry),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Registry("did not start".into())))
    }

    fn start_once() -> Result<Self> {
        let addr = free_loopback_port()?;
        let dir = tempfile::Builder::new()
            .prefix("capstan-registry-")
            .tempdir()
            .map_err(Error::io("create a temp dir in", std::env::temp_dir()))?;
        let config = dir.path().join("config.yml");
        std::fs::write(&config, config_yaml(addr, &dir.path().join("data")))
            .map_err(Error::io("write", &config))?;
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).map_err(Error::io("create", &log_path))?;
        let log_err = log.try_clone().map_err(Error::io("dup", &log_path))?;
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| Error::Command(format!("start {REGISTRY_BINARY}: {e}")))?;
        let mut registry = LocalRegistry { child, addr, dir };
        registry.wait_ready()?;
        Ok(registry)
    }

    /// `127.0.0.1:<port>`, the host part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A distribution client for this registry.
    pub fn client(&self) -> Client {
        Client::new(&self.url())
    }

    /// Where the registry keeps its blobs.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.path().join("registry.log")) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let probe = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(1))
            .build();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Registry(format!(
                    "exited during start-up ({status}): {}",
                    self.log()
                )));
            }
            if probe.get(&format!("{}/v2/", self.url())).call().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Registry(format!(
                    "not ready after {STARTUP_TIMEOUT:?}: {}",
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_loopback_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::io("bind", "127.0.0.1:0"))?;
    listener
        .local_addr()
        .map_err(Error::io("read the address of", "127.0.0.1:0"))
}

fn config_yaml(addr: SocketAddr, storage: &Path) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n",
        storage.display()
    )
}

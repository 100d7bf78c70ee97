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
    credentials: Option<(String, String)>,
}

/// How a registry authenticates its clients.
#[derive(Debug, Clone)]
enum Auth {
    /// Anyone may pull and push.
    None,
    /// Basic credentials (htpasswd).
    Basic(String, String),
    /// Bearer tokens from a token service at `realm`, signed by the key of `certificate`.
    Token { realm: String, certificate: PathBuf },
}

impl LocalRegistry {
    /// Starts a registry and waits until it answers `/v2/`.
    pub fn start() -> Result<Self> {
        Self::start_with(Auth::None)
    }

    /// Starts a registry that demands Basic auth (htpasswd, bcrypt) for everything.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Result<Self> {
        Self::start_with(Auth::Basic(user.to_string(), password.to_string()))
    }

    /// Starts a registry that demands Bearer tokens from `tokens` for everything (the
    /// registry token protocol). Its [`client`](Self::client) sends no credentials: give it
    /// a token with [`Client::with_bearer_token`](crate::distribution::Client::with_bearer_token).
    pub fn start_with_token_auth(tokens: &crate::token::TokenService) -> Result<Self> {
        Self::start_with(Auth::Token {
            realm: tokens.realm(),
            certificate: tokens.certificate().to_path_buf(),
        })
    }

    fn start_with(auth: Auth) -> Result<Self> {
        if !Path::new(REGISTRY_BINARY).exists() {
            return Err(Error::Command(format!(
                "{REGISTRY_BINARY} is missing: install Debian's docker-registry (hack/test.sh does)"
            )));
        }
        // A port picked from a closed listener can be taken before the registry binds it:
        // try a few.
        let mut last_error = None;
        for _ in 0..3 {
            match Self::start_once(auth.clone()) {
                Ok(registry) => return Ok(registry),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Registry("did not start".into())))
    }

    fn start_once(auth: Auth) -> Result<Self> {
        let addr = free_loopback_port()?;
        let dir = tempfile::Builder::new()
            .prefix("capstan-registry-")
            .tempdir()
            .map_err(Error::io("create a temp dir in", std::env::temp_dir()))?;
        let mut yaml = config_yaml(addr, &dir.path().join("data"));
        let mut credentials = None;
        match &auth {
            Auth::None => {}
            Auth::Basic(user, password) => {
                let htpasswd = dir.path().join("htpasswd");
                write_htpasswd(&htpasswd, user, password)?;
                yaml.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: capstan-test\n    path: {}\n",
                    htpasswd.display()
                ));
                credentials = Some((user.clone(), password.clone()));
            }
            Auth::Token { realm, certificate } => yaml.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                crate::token::SERVICE,
                crate::token::ISSUER,
                certificate.display()
            )),
        }
        let config = dir.path().join("config.yml");
        std::fs::write(&config, yaml).map_err(Error::io("write", &config))?;
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
        let mut registry = LocalRegistry {
            child,
            addr,
            dir,
            credentials,
        };
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

    /// A distribution client for this registry (with its credentials, if it has any).
    pub fn client(&self) -> Client {
        let client = Client::new(&self.url());
        match &self.credentials {
            Some((user, password)) => client.with_basic_auth(user, password),
            None => client,
        }
    }

    /// How many `GET` requests for `path` (e.g. `/v2/shell/blobs/sha256:...`) the registry
    /// has served, from its access log.
    pub fn count_gets(&self, path: &str) -> usize {
        let needle = format!("\"GET {path} ");
        self.log().matches(&needle).count()
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
            // Any HTTP answer (a 401 from an auth-protected registry too) means it is serving.
            match probe.get(&format!("{}/v2/", self.url())).call() {
                Ok(_) | Err(ureq::Error::Status(..)) => return Ok(()),
                Err(_) => {}
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

/// bcrypt is the only hash docker-registry accepts; apache2-utils' htpasswd makes one.
fn write_htpasswd(path: &Path, user: &str, password: &str) -> Result<()> {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .map_err(|e| {
            Error::Command(format!(
                "run htpasswd: {e} (install Debian's apache2-utils; hack/test.sh does)"
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Command(format!(
            "htpasswd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    std::fs::write(path, &out.stdout).map_err(Error::io("write", path))
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
         log:\n  level: warn\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n",
        storage.display()
    )
}

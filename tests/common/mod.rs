//! Starting the real `capstan runtime` binary for end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use capstan_testkit::cri::CriClient;

/// A `capstan runtime` process with its own socket, state and config in a temp directory.
pub struct RuntimeProcess {
    child: Option<Child>,
    /// The directory holding socket, state, config and log.
    pub dir: PathBuf,
}

impl RuntimeProcess {
    /// Starts the runtime with `config` (TOML) in `dir`.
    pub fn start(dir: &Path, config: &str) -> Self {
        let config_path = dir.join("runtime.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("runtime.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(["--log-level", "debug", "runtime", "--listen"])
            .arg(format!("unix://{}", Self::socket_in(dir).display()))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--runtime-config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start capstan runtime");
        RuntimeProcess {
            child: Some(child),
            dir: dir.to_path_buf(),
        }
    }

    fn socket_in(dir: &Path) -> PathBuf {
        dir.join("run").join("capstan.sock")
    }

    /// The CRI socket.
    pub fn socket(&self) -> PathBuf {
        Self::socket_in(&self.dir)
    }

    /// Connects a CRI client.
    pub async fn client(&self) -> CriClient {
        CriClient::connect(&self.socket(), Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("{e}\nruntime log:\n{}", self.log()))
    }

    /// The runtime's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("runtime.log")).unwrap_or_default()
    }

    /// Sends `signal` and waits for the process to exit.
    pub fn stop_with(&mut self, signal: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        child.wait().expect("wait for capstan runtime")
    }
}

impl RuntimeProcess {
    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for RuntimeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

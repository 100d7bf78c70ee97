//! `capstan exec-in`: runs one process inside an existing container (libcontainer's tenant
//! builder), waits for it and exits with its status. A short-lived process per exec, as
//! `runc exec` is, so neither the async daemon nor the pod's monitor forks from its own
//! threads or blocks its loop.

use std::path::PathBuf;
use std::time::Duration;

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};
use oci_spec::runtime::Spec;

use super::confined::ConfinedExecutor;
use super::error_text::describe;

/// What to run where.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The pod monitor's libcontainer root.
    pub root: PathBuf,
    /// The container.
    pub id: String,
    /// Where the exec'd process's host pid is written (so the caller can kill it on timeout).
    pub pid_file: PathBuf,
    /// Pass this process's stdin to the command (otherwise it reads EOF at once).
    pub stdin: bool,
    /// Run the command on a new terminal, created inside the container, whose master end
    /// libcontainer sends to this unix socket (the caller relays it).
    pub console_socket: Option<PathBuf>,
    /// Where to write why the command could not be started, instead of standard error
    /// (which, when streaming, is the command's own and goes to the client).
    pub error_file: Option<PathBuf>,
    /// The command.
    pub argv: Vec<String>,
}

/// Runs the process with this process's stdout and stderr; returns the exit code to exit with
/// (126 when it could not be started, as shells do, saying why on stderr or in the error file).
pub fn run(options: ExecOptions) -> i32 {
    match exec(&options) {
        Ok(code) => code,
        Err(message) => {
            let message = format!("capstan exec-in: {message}");
            let written = options
                .error_file
                .as_ref()
                .is_some_and(|file| std::fs::write(file, &message).is_ok());
            if !written {
                eprintln!("{message}");
            }
            126
        }
    }
}

fn exec(options: &ExecOptions) -> Result<i32, String> {
    if options.argv.is_empty() {
        return Err("no command given".into());
    }
    // The process ends up our grandchild; as subreaper we can wait for it.
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("become subreaper: {e}"))?;
    let spec = container_spec(options)?;
    let process_file = options.pid_file.with_extension("process.json");
    write_process(&spec, options, &process_file)?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let builder = ContainerBuilder::new(options.id.clone(), SyscallType::default())
        .with_executor(ConfinedExecutor { seccomp })
        .with_root_path(&options.root)
        .map_err(|e| format!("libcontainer root {}: {e}", options.root.display()))?
        .with_pid_file(Some(&options.pid_file))
        .map_err(|e| format!("pid file: {e}"))?;
    if let Some(socket) = &options.console_socket {
        // The terminal is made inside the container (its own devpts), so the process gets it
        // as controlling terminal.
        let built = builder
            .with_console_socket(Some(socket))
            .as_tenant()
            .with_process(Some(&process_file))
            .with_detach(true)
            .build();
        let _ = std::fs::remove_file(&process_file);
        let pid =
            built.map_err(|e| format!("exec in container {}: {}", options.id, describe(&e)))?;
        return wait_for(pid);
    }
    // stdin must be a pipe, not /dev/null (libcontainer reopens that read-only); closing the
    // write end gives the process EOF.
    let (stdin_read, stdin_write) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let stdin = if options.stdin {
        drop(stdin_read);
        std::io::stdin().as_fd_owned()?
    } else {
        stdin_read
    };
    let stdout = std::io::stdout().as_fd_owned()?;
    let stderr = std::io::stderr().as_fd_owned()?;
    let built = builder
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .as_tenant()
        .with_process(Some(&process_file))
        .with_detach(true)
        .build();
    let _ = std::fs::remove_file(&process_file);
    let pid = built.map_err(|e| format!("exec in container {}: {}", options.id, describe(&e)))?;
    drop(stdin_write);
    wait_for(pid)
}

/// The container's OCI spec, as it was created.
fn container_spec(options: &ExecOptions) -> Result<Spec, String> {
    let container = Container::load(options.root.join(&options.id))
        .map_err(|e| format!("container {}: {}", options.id, describe(&e)))?;
    let config = container.bundle().join("config.json");
    Spec::load(&config).map_err(|e| format!("{}: {e}", config.display()))
}

/// Writes the exec'd process's description: the container's own process (user, groups,
/// environment, working directory, capabilities, no_new_privs, rlimits) with our command, on a
/// terminal when one is asked for. Without it libcontainer's tenant would run the command as
/// root in `/`, whatever user the container runs as.
fn write_process(spec: &Spec, options: &ExecOptions, path: &std::path::Path) -> Result<(), String> {
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| format!("container {}: its spec has no process", options.id))?;
    process.set_args(Some(options.argv.clone()));
    let terminal = options.console_socket.is_some();
    process.set_terminal(Some(terminal));
    if terminal {
        let mut env = process.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        process.set_env(Some(env));
    }
    let data = serde_json::to_vec(&process).map_err(|e| format!("process: {e}"))?;
    std::fs::write(path, data).map_err(|e| format!("write {}: {e}", path.display()))
}

fn wait_for(pid: Pid) -> Result<i32, String> {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(done, code)) if done == pid => return Ok(code),
            Ok(WaitStatus::Signaled(done, signal, _)) if done == pid => {
                return Ok(128 + signal as i32);
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::ECHILD) => {
                // Not our descendant after all (should not happen): poll until it is gone.
                while nix::sys::signal::kill(pid, None).is_ok() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return Err(format!("lost track of process {pid}"));
            }
            Err(e) => return Err(format!("wait: {e}")),
        }
    }
}

trait DupFd {
    fn as_fd_owned(&self) -> Result<std::os::fd::OwnedFd, String>;
}

impl<T: std::os::fd::AsFd> DupFd for T {
    fn as_fd_owned(&self) -> Result<std::os::fd::OwnedFd, String> {
        self.as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("dup stdio: {e}"))
    }
}

//! `capstan oci-bench` (hidden, for the benchmark harness): creates, starts, waits for and
//! deletes one OCI bundle's container N times through exactly the libcontainer path the pod
//! monitor uses (its builder and [`super::stdio::create_on_pipes`]), in one process as the
//! monitor does, and
//! prints the time of every phase as one JSON line on standard output.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::protocol::CreateRequest;

/// What to run.
#[derive(Debug, Clone)]
pub struct OciBenchOptions {
    /// libcontainer's state directory.
    pub root: PathBuf,
    /// The OCI bundle (its process should exit by itself, e.g. `true`).
    pub bundle: PathBuf,
    /// Create + start + wait + delete cycles.
    pub iterations: usize,
}

/// Runs the cycles; returns the exit code (0, or 1 after printing why on standard error).
pub fn run(options: OciBenchOptions) -> i32 {
    match cycles(&options) {
        Ok(samples) => {
            let micros = |pick: fn(&Sample) -> Duration| -> Vec<u128> {
                samples.iter().map(|s| pick(s).as_micros()).collect()
            };
            let report = serde_json::json!({
                "create_us": micros(|s| s.create),
                "start_us": micros(|s| s.start),
                "wait_us": micros(|s| s.wait),
                "delete_us": micros(|s| s.delete),
            });
            println!("{report}");
            0
        }
        Err(message) => {
            eprintln!("capstan oci-bench: {message}");
            1
        }
    }
}

/// The phases of one cycle.
struct Sample {
    create: Duration,
    start: Duration,
    wait: Duration,
    delete: Duration,
}

fn cycles(options: &OciBenchOptions) -> Result<Vec<Sample>, String> {
    // libcontainer's init is reparented to us when its intermediate process exits, as in the
    // monitor, so we can wait for it.
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("become subreaper: {e}"))?;
    let mut samples = Vec::with_capacity(options.iterations);
    for i in 0..options.iterations {
        let id = format!("oci-bench-{}-{i}", std::process::id());
        let began = Instant::now();
        // As the monitor creates a container without a terminal or attached stdin.
        let request = CreateRequest {
            id: id.clone(),
            bundle: options.bundle.clone(),
            log_path: PathBuf::new(),
            record_dir: options.root.join(&id),
            stdin: false,
            stdin_once: false,
            tty: false,
            propagation: Vec::new(),
        };
        let builder = super::containers::builder(&options.root, &id)?;
        let (mut container, stdio) = super::stdio::create_on_pipes(builder, &request)?;
        let pid = container
            .pid()
            .ok_or_else(|| format!("container {id} has no pid"))?;
        let created = Instant::now();
        container
            .start()
            .map_err(|e| format!("start container {id}: {e}"))?;
        let started = Instant::now();
        wait_for(pid)?;
        let exited = Instant::now();
        container
            .delete(true)
            .map_err(|e| format!("delete container {id}: {e}"))?;
        let deleted = Instant::now();
        drop(stdio);
        samples.push(Sample {
            create: created - began,
            start: started - created,
            wait: exited - started,
            delete: deleted - exited,
        });
    }
    Ok(samples)
}

/// Waits until `pid` (our child by now) has exited, reaping whatever else ends meanwhile.
fn wait_for(pid: Pid) -> Result<(), String> {
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(done, _) | WaitStatus::Signaled(done, _, _)) if done == pid => {
                return Ok(());
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("wait for {pid}: {e}")),
        }
    }
}

//! OCI-level create + start + delete of one bundle (busybox `true`): libcontainer as Capstan's
//! pod monitor drives it (in-process, through `capstan oci-bench`) against Debian's `runc` and
//! `crun` command lines (one `create`, `start` and `delete` each, as containerd's shim runs them).
//! Every container's cgroup lies below a cgroup the harness creates below its own. The three
//! take turns in rounds, so load from elsewhere on the machine does not favour one of them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capstan_testkit::cgroups::TestCgroup;
use capstan_testkit::images::{catalog, unpack_plain};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use oci_spec::runtime::{ProcessBuilder, Spec};
use serde_json::{Value, json};

use crate::measure::percentile_ms;

/// The phases of the cycles one runtime ran, in order.
#[derive(Debug, Default)]
pub struct Cycles {
    /// Create (the container's init waits to be started).
    pub create: Vec<Duration>,
    /// Start.
    pub start: Vec<Duration>,
    /// From start until the process (`true`) has exited.
    pub wait: Vec<Duration>,
    /// Delete.
    pub delete: Vec<Duration>,
}

impl Cycles {
    /// The whole cycle per iteration.
    pub fn totals(&self) -> Vec<Duration> {
        (0..self.create.len())
            .map(|i| self.create[i] + self.start[i] + self.wait[i] + self.delete[i])
            .collect()
    }

    /// Appends `more`'s cycles but its first (a warm-up).
    fn append_after_first(&mut self, more: Cycles) {
        self.create.extend(more.create.into_iter().skip(1));
        self.start.extend(more.start.into_iter().skip(1));
        self.wait.extend(more.wait.into_iter().skip(1));
        self.delete.extend(more.delete.into_iter().skip(1));
    }

    /// Reads the JSON line `capstan oci-bench` and the worker print (microseconds per phase).
    pub fn from_json(text: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(text.trim())
            .map_err(|e| format!("cannot read the cycle times {text:?}: {e}"))?;
        let phase = |key: &str| -> Result<Vec<Duration>, String> {
            value[key]
                .as_array()
                .ok_or_else(|| format!("no {key} in {text:?}"))?
                .iter()
                .map(|v| {
                    v.as_u64()
                        .map(Duration::from_micros)
                        .ok_or_else(|| format!("bad {key} sample in {text:?}"))
                })
                .collect()
        };
        Ok(Cycles {
            create: phase("create_us")?,
            start: phase("start_us")?,
            wait: phase("wait_us")?,
            delete: phase("delete_us")?,
        })
    }

    /// The JSON line of the cycle times (microseconds per phase).
    pub fn to_line(&self) -> String {
        let micros = |samples: &[Duration]| -> Vec<u128> {
            samples.iter().map(Duration::as_micros).collect()
        };
        json!({
            "create_us": micros(&self.create),
            "start_us": micros(&self.start),
            "wait_us": micros(&self.wait),
            "delete_us": micros(&self.delete),
        })
        .to_string()
    }

    /// Percentiles of the whole cycle and of each phase, in ms.
    pub fn to_json(&self) -> Value {
        let spread = |samples: &[Duration]| {
            json!({
                "p50_ms": percentile_ms(samples, 0.50),
                "p90_ms": percentile_ms(samples, 0.90),
                "p99_ms": percentile_ms(samples, 0.99),
                "max_ms": percentile_ms(samples, 1.0),
                "samples": samples.len(),
            })
        };
        json!({
            "total": spread(&self.totals()),
            "create": spread(&self.create),
            "start": spread(&self.start),
            "wait": spread(&self.wait),
            "delete": spread(&self.delete),
        })
    }
}

/// The three runtimes' cycles: (libcontainer through Capstan, runc, crun).
pub fn run(
    capstan: &Path,
    work: &Path,
    iterations: usize,
) -> Result<(Cycles, Cycles, Cycles), String> {
    let bundle = work.join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| format!("create {}: {e}", rootfs.display()))?;
    let images = catalog().map_err(|e| e.to_string())?;
    unpack_plain(&images.shell.layers, &rootfs).map_err(|e| e.to_string())?;
    let cgroup = TestCgroup::new().map_err(|e| format!("OCI cgroup: {e}"))?;
    cgroup.delegate_to_children();
    write_spec(&bundle, &format!("{}/oci-bench", cgroup.path()))?;

    // The runtimes take turns in rounds, so a change of load on the machine during the run
    // weighs on all three alike; each turn's first cycle (page faults of a fresh process,
    // cold caches) is discarded for every runtime.
    let rounds = ROUNDS.min(iterations.max(1));
    let worker = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut sides: [Cycles; 3] = Default::default();
    tracing::info!(
        iterations,
        rounds,
        "OCI create + start + delete: libcontainer, runc, crun"
    );
    for round in 0..rounds {
        let cycles = iterations / rounds + usize::from(round < iterations % rounds);
        if cycles == 0 {
            continue;
        }
        let turn = (cycles + 1).to_string();
        for (side, runtime) in sides.iter_mut().zip(["capstan", "runc", "crun"]) {
            let mut command = if runtime == "capstan" {
                let mut command = Command::new(capstan);
                command.args(["--log-level", "error", "oci-bench"]);
                command
            } else {
                let mut command = Command::new(&worker);
                command.args(["oci-worker", "--runtime", runtime]);
                command
            };
            let out = command
                .arg("--root")
                .arg(work.join(format!("state-{runtime}")))
                .arg("--bundle")
                .arg(&bundle)
                .arg("--iterations")
                .arg(&turn)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("run the {runtime} cycles: {e}"))?;
            side.append_after_first(parse_output(runtime, &out)?);
        }
    }
    let [ours, runc, crun] = sides;
    Ok((ours, runc, crun))
}

/// Turns each runtime gets (see [`run`]).
const ROUNDS: usize = 10;

fn parse_output(what: &str, out: &std::process::Output) -> Result<Cycles, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Cycles::from_json(&stdout)
}

/// The bundle's config.json: the OCI default (as `runc spec` writes it: new pid, network, IPC,
/// UTS, mount and cgroup namespaces, read-only rootfs) running `true` in `cgroups_path`.
fn write_spec(bundle: &Path, cgroups_path: &str) -> Result<(), String> {
    let mut spec = Spec::default();
    let process = ProcessBuilder::default()
        .args(vec!["true".to_string()])
        .env(vec!["PATH=/bin".to_string()])
        .cwd("/")
        .terminal(false)
        .build()
        .map_err(|e| e.to_string())?;
    spec.set_process(Some(process));
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(PathBuf::from(cgroups_path)));
    spec.set_linux(Some(linux));
    spec.save(bundle.join("config.json"))
        .map_err(|e| format!("write the OCI spec: {e}"))
}

/// The worker (`capstan-bench oci-worker`): runs `runtime`'s create, start and delete
/// `iterations` times and prints the cycle times. A process of its own because it becomes a
/// subreaper (to wait for each container's init) and, for crun, enters a private mount
/// namespace, neither of which the harness itself should do.
pub fn worker(runtime: &str, root: &Path, bundle: &Path, iterations: usize) -> Result<(), String> {
    if runtime == "crun" {
        hide_hybrid_cgroups()?;
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("become subreaper: {e}"))?;
    std::fs::create_dir_all(root).map_err(|e| format!("create {}: {e}", root.display()))?;
    let log = root.join("stderr.log");
    let pid_file = root.join("pid");
    let mut cycles = Cycles::default();
    let cli = |args: &[&str]| -> Result<(), String> {
        let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        // Files or /dev/null only: a detached container inherits these descriptors, and a pipe
        // would make us wait for it.
        let status = Command::new(runtime)
            .arg("--root")
            .arg(root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .status()
            .map_err(|e| format!("run {runtime}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "{runtime} {} failed ({status}): {}",
                args.join(" "),
                std::fs::read_to_string(&log).unwrap_or_default()
            ))
        }
    };
    for i in 0..iterations {
        let id = format!("oci-bench-{}-{i}", std::process::id());
        let began = Instant::now();
        cli(&[
            "create",
            "--bundle",
            &bundle.display().to_string(),
            "--pid-file",
            &pid_file.display().to_string(),
            &id,
        ])?;
        let created = Instant::now();
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("read {}: {e}", pid_file.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        cli(&["start", &id])?;
        let started = Instant::now();
        wait_for(Pid::from_raw(pid))?;
        let exited = Instant::now();
        cli(&["delete", &id])?;
        let deleted = Instant::now();
        cycles.create.push(created - began);
        cycles.start.push(started - created);
        cycles.wait.push(exited - started);
        cycles.delete.push(deleted - exited);
    }
    println!("{}", cycles.to_line());
    Ok(())
}

/// crun refuses hybrid hierarchies when the unified mount lists controllers: in a private mount
/// namespace of this (still single-threaded) process, an empty file hides that list from it.
fn hide_hybrid_cgroups() -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    let controllers = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    if !controllers.exists() {
        return Ok(());
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare the mount namespace: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / private: {e}"))?;
    let empty = std::env::temp_dir().join(format!("capstan-bench-empty-{}", std::process::id()));
    std::fs::write(&empty, "").map_err(|e| format!("write {}: {e}", empty.display()))?;
    let bound = mount(
        Some(&empty),
        controllers,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind an empty file over {}: {e}", controllers.display()));
    // The bind mount holds the file; the name is not needed any more.
    let _ = std::fs::remove_file(&empty);
    bound
}

/// Waits until `pid` (our child, as subreaper) has exited, reaping what else ends meanwhile.
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

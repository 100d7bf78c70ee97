//! The pod monitor with real containers: namespaces held and pinned, containers created and
//! started through libcontainer, logs in CRI format, exits recorded, everything released on
//! shutdown.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capstan_runtime::monitor::containers::{EXIT_RECORD, ExitRecord};
use capstan_runtime::monitor::protocol::{CreateRequest, Reply, Request, call};
use capstan_testkit::cgroups::TestCgroup;
use capstan_testkit::images::{catalog, unpack_plain};
use capstan_testkit::mounts::mounted_under;
use capstan_testkit::require_root;
use oci_spec::runtime::{
    LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, ProcessBuilder, RootBuilder, Spec,
};

const TIMEOUT: Duration = Duration::from_secs(10);

struct Monitor {
    child: Child,
    run_dir: PathBuf,
}

impl Monitor {
    fn start(run_dir: &Path, hostname: &str) -> Self {
        std::fs::create_dir_all(run_dir).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(["monitor", "--run-dir"])
            .arg(run_dir)
            .args([
                "--hostname",
                hostname,
                "--log-max-size",
                "4096",
                "--log-max-files",
                "2",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start monitor");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "monitor did not announce itself");
        Monitor {
            child,
            run_dir: run_dir.to_path_buf(),
        }
    }

    fn call(&self, request: Request) -> Reply {
        call(&self.run_dir.join("monitor.sock"), &request, TIMEOUT)
            .unwrap_or_else(|e| panic!("{request:?}: {e}"))
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = capstan_runtime::monitor::namespaces::release(&self.run_dir.join("ns"));
    }
}

fn bundle(dir: &Path, rootfs: &Path, run_dir: &Path, cgroup: &str, args: &[&str]) -> PathBuf {
    let ns = |kind, path: Option<PathBuf>| {
        let builder = LinuxNamespaceBuilder::default().typ(kind);
        match path {
            Some(path) => builder.path(path).build().unwrap(),
            None => builder.build().unwrap(),
        }
    };
    let mut spec = Spec::default();
    spec.set_root(Some(
        RootBuilder::default()
            .path(rootfs)
            .readonly(false)
            .build()
            .unwrap(),
    ));
    spec.set_hostname(None);
    spec.set_process(Some(
        ProcessBuilder::default()
            .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
            .env(vec!["PATH=/bin".to_string()])
            .cwd("/")
            .terminal(false)
            .build()
            .unwrap(),
    ));
    let mut linux = spec
        .linux()
        .clone()
        .unwrap_or_else(|| LinuxBuilder::default().build().unwrap());
    linux.set_namespaces(Some(vec![
        ns(LinuxNamespaceType::Pid, None),
        ns(LinuxNamespaceType::Mount, None),
        ns(LinuxNamespaceType::Network, Some(run_dir.join("ns/net"))),
        ns(LinuxNamespaceType::Ipc, Some(run_dir.join("ns/ipc"))),
        ns(LinuxNamespaceType::Uts, Some(run_dir.join("ns/uts"))),
    ]));
    linux.set_cgroups_path(Some(PathBuf::from(cgroup)));
    spec.set_linux(Some(linux));
    std::fs::create_dir_all(dir).unwrap();
    spec.save(dir.join("config.json")).unwrap();
    dir.to_path_buf()
}

fn wait_exit(record_dir: &Path) -> ExitRecord {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(data) = std::fs::read(record_dir.join(EXIT_RECORD)) {
            return serde_json::from_slice(&data).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no exit record in {}",
            record_dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn monitor_runs_containers_in_pod_namespaces_and_cgroups_and_records_exits() {
    require_root();
    let work = tempfile::tempdir().unwrap();
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    unpack_plain(&catalog().unwrap().shell.layers, &rootfs).unwrap();
    let cgroup = TestCgroup::new().unwrap();
    let run_dir = work.path().join("run");
    let monitor = Monitor::start(&run_dir, "pod-host");
    assert_eq!(
        mounted_under(&run_dir.join("ns")).len(),
        3,
        "net, ipc and uts are pinned"
    );

    let script = "hostname; ip -o link | cut -d: -f2,3; echo oops >&2; exit 3";
    let first = bundle(
        &work.path().join("b1"),
        &rootfs,
        &run_dir,
        &format!("{}/c1", cgroup.path()),
        &["sh", "-c", script],
    );
    let records = work.path().join("records");
    let log = work.path().join("logs/c1.log");
    let reply = monitor.call(Request::Create(CreateRequest {
        id: "c1".into(),
        bundle: first,
        log_path: log.clone(),
        record_dir: records.join("c1"),
        stdin: false,
        stdin_once: false,
        tty: false,
        propagation: Vec::new(),
    }));
    assert!(
        matches!(reply, Reply::Created { pid } if pid > 0),
        "{reply:?}"
    );
    monitor.call(Request::Start { id: "c1".into() });
    let exit = wait_exit(&records.join("c1"));
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (3, None, false)
    );

    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F pod-host")),
        "hostname not from the pod:\n{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" stdout F ") && l.contains("lo: <LOOPBACK,UP")),
        "lo not up:\n{text}"
    );
    assert!(
        !text.contains("eth0"),
        "the container sees the host's network:\n{text}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with(" stderr F oops")),
        "{text}"
    );

    let second = bundle(
        &work.path().join("b2"),
        &rootfs,
        &run_dir,
        &format!("{}/c2", cgroup.path()),
        &["sleep", "1000"],
    );
    monitor.call(Request::Create(CreateRequest {
        id: "c2".into(),
        bundle: second,
        log_path: PathBuf::new(),
        record_dir: records.join("c2"),
        stdin: false,
        stdin_once: false,
        tty: false,
        propagation: Vec::new(),
    }));
    monitor.call(Request::Start { id: "c2".into() });
    let Reply::Status { containers } = monitor.call(Request::Status) else {
        panic!("status")
    };
    let states: Vec<(&str, &str, Option<i32>)> = containers
        .iter()
        .map(|c| (c.id.as_str(), c.state.as_str(), c.exit_code))
        .collect();
    assert_eq!(states, [("c1", "exited", Some(3)), ("c2", "running", None)]);
    let refused = call(
        &run_dir.join("monitor.sock"),
        &Request::Delete { id: "c2".into() },
        TIMEOUT,
    )
    .unwrap_err();
    assert!(refused.to_string().contains("still running"), "{refused}");

    monitor.call(Request::Kill {
        id: "c2".into(),
        signal: 9,
    });
    let exit = wait_exit(&records.join("c2"));
    assert_eq!((exit.exit_code, exit.signal), (137, Some(9)));
    monitor.call(Request::Delete { id: "c1".into() });
    monitor.call(Request::Delete { id: "c2".into() });
    let memory = cgroup.dir("memory").unwrap().to_path_buf();
    assert!(
        !memory.join("c1").exists() && !memory.join("c2").exists(),
        "container cgroups left behind"
    );

    let mut monitor = monitor;
    monitor.call(Request::Shutdown);
    let status = monitor.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        mounted_under(&run_dir.join("ns")).is_empty(),
        "namespace pins left behind"
    );
    assert!(!run_dir.join("monitor.sock").exists());
}

//! The namespace, mount and cgroup guards create real kernel objects and remove them, also when
//! the test using them panics.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::{Command, Stdio};

use capstan_testkit::cgroups::{self, Driver, TestCgroup};
use capstan_testkit::mounts::{TempMount, mounted_under};
use capstan_testkit::netns::{self, NetNs};
use capstan_testkit::require_root;

#[test]
fn netns_is_usable_and_removed_on_drop() {
    require_root();
    let ns = NetNs::new("tk").expect("create netns");
    let name = ns.name().to_string();
    assert!(
        netns::list().contains(&name),
        "{name} is not under /run/netns"
    );

    ns.loopback_up().expect("lo up");
    let links = ns
        .command("ip")
        .args(["-o", "link"])
        .output()
        .expect("run ip");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(links.contains("lo:"), "no lo in the new netns: {links}");
    assert!(
        !links.contains("eth0"),
        "the host's eth0 is visible, not a new netns: {links}"
    );

    let host_ino = std::fs::metadata("/proc/self/ns/net").unwrap();
    let inside_ino = ns
        .run(|| std::fs::metadata("/proc/thread-self/ns/net").map(|m| (m.dev(), m.ino())))
        .expect("enter netns")
        .expect("stat ns inside");
    use std::os::unix::fs::MetadataExt;
    assert_ne!(
        (host_ino.dev(), host_ino.ino()),
        inside_ino,
        "run() did not enter the netns"
    );

    drop(ns);
    assert!(!netns::list().contains(&name), "{name} survived its guard");
    assert!(
        mounted_under(Path::new(netns::NETNS_DIR))
            .iter()
            .all(|m| !m.ends_with(&name))
    );
}

#[test]
fn netns_is_removed_when_the_test_panics() {
    require_root();
    let mut name = String::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let ns = NetNs::new("tkp").expect("create netns");
        name = ns.name().to_string();
        panic!("a failing test");
    }));
    assert!(outcome.is_err());
    assert!(!name.is_empty());
    assert!(
        !netns::list().contains(&name),
        "{name} leaked after a panic"
    );
}

#[test]
fn tmpfs_and_bind_mounts_are_removed_also_on_panic() {
    require_root();
    let mut paths = Vec::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let tmpfs = TempMount::tmpfs(1 << 20).expect("mount tmpfs");
        std::fs::write(tmpfs.path().join("f"), b"x").expect("write into tmpfs");
        let bind = TempMount::bind(tmpfs.path(), true).expect("bind read-only");
        assert_eq!(std::fs::read(bind.path().join("f")).unwrap(), b"x");
        let err = std::fs::write(bind.path().join("g"), b"y").expect_err("read-only bind");
        assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS));
        paths = vec![tmpfs.path().to_path_buf(), bind.path().to_path_buf()];
        for p in &paths {
            assert_eq!(
                mounted_under(p),
                vec![p.clone()],
                "{} is not a mount",
                p.display()
            );
        }
        panic!("a failing test");
    }));
    assert!(outcome.is_err());
    for p in &paths {
        assert!(mounted_under(p).is_empty(), "{} still mounted", p.display());
        assert!(!p.exists(), "{} not removed", p.display());
    }
}

#[test]
fn cgroup_is_below_our_own_and_removed_with_its_processes() {
    require_root();
    let own = cgroups::own_path().expect("own cgroup");
    let cgroup = TestCgroup::new().expect("create cgroup");
    assert!(
        cgroup
            .path()
            .starts_with(&format!("{}/", own.trim_end_matches('/'))),
        "{} is not below {own}",
        cgroup.path()
    );
    let memory_dir = cgroup
        .dir("memory")
        .expect("memory controller")
        .to_path_buf();
    assert!(memory_dir.is_dir());

    // Killed however the test ends: a leftover would hold the test runner's output open.
    let mut sleeper = KillOnDrop(
        Command::new("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep"),
    );
    cgroup.add_process(sleeper.0.id()).expect("join cgroup");
    let procs = std::fs::read_to_string(memory_dir.join("cgroup.procs")).unwrap();
    assert!(
        procs
            .lines()
            .any(|l| l.trim() == sleeper.0.id().to_string())
    );

    // A limit written in the driver's own file format reads back.
    let (file, value) = match cgroup.driver() {
        Driver::V1 => ("memory.limit_in_bytes", "67108864"),
        Driver::V2 => ("memory.max", "67108864"),
    };
    std::fs::write(memory_dir.join(file), value).expect("set memory limit");
    assert_eq!(
        std::fs::read_to_string(memory_dir.join(file))
            .unwrap()
            .trim(),
        value
    );

    let dirs: Vec<_> = ["memory", "cpu", "pids"]
        .iter()
        .filter_map(|c| cgroup.dir(c).map(Path::to_path_buf))
        .collect();
    drop(cgroup);
    let status = sleeper.0.wait().expect("reap sleep");
    assert!(
        !status.success(),
        "the process in the cgroup was not killed"
    );
    for dir in dirs {
        assert!(!dir.exists(), "{} survived its guard", dir.display());
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

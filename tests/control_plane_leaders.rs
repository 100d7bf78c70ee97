//! Two `capstan control-plane` processes over one etcd: each runs a scheduler and a controller
//! manager, but only the holder of each Lease acts; when the holder dies (SIGKILL, so it cannot
//! release), the other takes the Lease over once it expires.

mod common;
#[path = "durability/plane.rs"]
mod plane;

use std::time::{Duration, Instant};

use capstan_testkit::etcd::EtcdCluster;
use common::free_port;
use plane::{Plane, share_credentials};

const LEASES: [&str; 2] = ["kube-scheduler", "kube-controller-manager"];

/// How many times `plane` logged that it became leader of `lease`.
fn terms(plane: &Plane, lease: &str) -> usize {
    plane
        .log()
        .lines()
        // Field names may be wrapped in colour codes: match the value alone.
        .filter(|line| line.contains("became leader") && line.contains(lease))
        .count()
}

/// The Lease's holderIdentity, read through `plane`.
fn holder(plane: &Plane, lease: &str) -> Option<String> {
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease}");
    let (code, body) = plane.client().json("GET", &path, None).ok()?;
    (code == 200).then(|| {
        body["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or("")
            .to_string()
    })
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn one_leader_per_lease_and_the_survivor_takes_over() {
    let etcd = EtcdCluster::start().unwrap();
    let endpoints = etcd.endpoints().join(",");
    let dir = tempfile::tempdir().unwrap();
    let first_dir = dir.path().join("first");
    let mut first = Plane::start(&first_dir, free_port(), &["--etcd-servers", &endpoints]);
    let second_dir = dir.path().join("second");
    share_credentials(&first_dir, &second_dir);
    let mut second = Plane::start(&second_dir, free_port(), &["--etcd-servers", &endpoints]);

    for lease in LEASES {
        wait_for(
            &format!("a holder of {lease}"),
            Duration::from_secs(20),
            || holder(&second, lease).is_some_and(|h| !h.is_empty()),
        );
    }
    // Both candidates have tried a few times by now: still exactly one leader each.
    std::thread::sleep(Duration::from_secs(3));
    for lease in LEASES {
        let (a, b) = (terms(&first, lease), terms(&second, lease));
        assert_eq!(
            a + b,
            1,
            "{lease}: leaders {a} + {b}\nfirst:\n{}\nsecond:\n{}",
            first.log(),
            second.log()
        );
    }
    let first_leads = terms(&first, "kube-controller-manager") == 1;
    let (leader, follower) = if first_leads {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };
    // Only the leader runs the controllers.
    assert!(
        leader.log().contains("starting controller"),
        "{}",
        leader.log()
    );
    assert!(
        !follower.log().contains("starting controller"),
        "{}",
        follower.log()
    );
    let held = holder(follower, "kube-controller-manager").unwrap_or_default();
    leader.kill();
    // Lease duration 15 s, retry 2 s: the follower takes over within about 17 s.
    wait_for(
        "the follower to take the lease",
        Duration::from_secs(30),
        || terms(follower, "kube-controller-manager") == 1,
    );
    assert!(
        follower.log().contains("starting controller"),
        "{}",
        follower.log()
    );
    let now_held = holder(follower, "kube-controller-manager").unwrap_or_default();
    assert_ne!(now_held, held, "the holder changed");
    assert!(!now_held.is_empty());
}

//! Real test fixtures for Capstan's tests, no mocks: a local OCI registry (Debian's
//! `docker-registry`), etcd clusters (Debian's `etcd-server`), test images assembled from
//! Debian's `busybox-static`, and guards for the
//! network namespaces, mounts and cgroups that root tests create, removed even when a test
//! panics.

pub mod apiserver;
pub mod cgroups;
pub mod containerd;
pub mod cri;
pub mod digest;
pub mod distribution;
pub mod error;
pub mod etcd;
pub mod images;
pub mod kubectl;
pub mod mounts;
pub mod names;
pub mod netns;
pub mod process;
pub mod registry;
pub mod subnets;
pub mod token;

pub use error::{Error, Result};

/// Fails the calling test with a clear message unless it runs as root: these fixtures create
/// namespaces, mounts and cgroups, which only root can.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates namespaces, mounts or cgroups and must run as root (the README's test \
         command runs it as root)"
    );
}

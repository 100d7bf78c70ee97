#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, then formatting, lints, and every
# unit and integration test. Run as root on Debian 12: the integration tests create network
# namespaces, mounts and cgroups (always below the test process's own cgroup) and a local
# registry on loopback, and remove them again. Tests with "cgroup" in their name also run in a
# QEMU guest whose cgroups are pure v2 (hack/vm-test), since build hosts here are hybrid v1.
set -euo pipefail
cd "$(dirname "$0")/.."

hack/deps.sh test

# A one-off build gains nothing from incremental state, which would double the target directory.
export CARGO_INCREMENTAL=0

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== doc tests"
cargo test --workspace --doc --locked --quiet
echo "== cgroup v2 lane: the cgroup tests again, in a QEMU guest with pure cgroup v2"
hack/cgroup-check
# Installs QEMU and fills the kernel cache first, so that a host that cannot be prepared says so
# once instead of failing every self-test.
hack/vm-test --prepare
hack/vm-test-selftest
hack/vm-test -t 1800 --cargo-test --workspace --locked -- cgroup
echo "== tests"
cargo nextest run --workspace --locked
